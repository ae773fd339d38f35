"""What the synchronous and the asynchronous client share: URLs, the token, request bodies, answers.

Pure functions (no I/O but reading the token file in ``find_token``), so both clients behave alike.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import httpx

from corral import __version__
from corral.client.errors import CorralError, Unreachable, error_for
from corral.domain.addresses import is_loopback

if TYPE_CHECKING:
    from pydantic import BaseModel

Json = dict[str, Any]
Items = list[Json]  # (a class with a `list` method cannot name the builtin in its annotations)
DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = frozenset({"completed", "failed", "cancelled"})
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})
TRANSIENT = frozenset({502, 503, 504})  # answers a retried request is sent again after
FULL_ID = re.compile(r"[0-9a-f]{32}")
SHORT_ID = re.compile(r"[0-9a-f]{4,31}")
PAGE_SIZE = 500  # jobs, pods and services per page when a listing iterates over every page
USER_AGENT = f"corral-client/{__version__}"


def normalize_url(url: str) -> str:
    """``host:port`` or a URL, without a trailing slash; ValueError for an empty one."""
    url = url.strip().rstrip("/")
    if not url:
        raise ValueError("the server URL is empty: give one such as http://127.0.0.1:8000")
    return url if "://" in url else f"http://{url}"


def find_token(server: str) -> str | None:
    """The access token to send: ``CORRAL_API_TOKEN`` when set; else, for a server on this machine (a
    loopback address) only, the one ``corral up`` keeps in ``$CORRAL_DATA_DIR/token``, or
    ``.corral/token`` under the current directory. A token read from a file never leaves the machine."""
    given = os.environ.get("CORRAL_API_TOKEN", "").strip()
    if given:
        return given
    try:
        host = urlsplit(server).hostname or ""
    except ValueError:  # not a URL: the client says so when it is used
        return None
    if not is_loopback(host):
        return None
    path = Path(os.environ.get("CORRAL_DATA_DIR") or ".corral") / "token"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def headers(token: str | None, user_agent: str | None) -> dict[str, str]:
    out = {"User-Agent": user_agent or USER_AGENT}
    if token:
        out["Authorization"] = f"Bearer {token}"
    return out


def path(kind: str, ident: str, suffix: str = "") -> str:
    return f"/v1/{kind}/{quote(ident, safe='')}{suffix}"


def spec_body(spec: BaseModel | Mapping[str, Any] | str, what: str = "job") -> Json:
    """The JSON body for a spec given as a model (JobSpec, PodSpec, ServiceSpec), a dict, or YAML/JSON text."""
    if isinstance(spec, str):
        import yaml  # only for text specs

        try:
            data = yaml.safe_load(spec)
        except yaml.YAMLError as e:
            raise ValueError(f"the {what} is not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise ValueError(f"the {what} must be a YAML mapping, not {type(data).__name__}")
        return data
    if isinstance(spec, Mapping):
        return dict(spec)
    if not hasattr(spec, "model_dump"):
        raise TypeError(f"a {what} is a model, a dict or YAML text, not {type(spec).__name__}")
    from corral.domain.spec import dump_spec

    return dump_spec(spec)


def idempotency_key() -> dict[str, str]:
    """A fresh Idempotency-Key: a submission sent again after a broken connection creates one job."""
    return {"Idempotency-Key": uuid.uuid4().hex}


def job_filters(filters: Mapping[str, Any]) -> dict[str, Any]:
    """Query parameters for GET /v1/jobs: a list of states joined with commas, ``None`` left out."""
    out: dict[str, Any] = {}
    for k, v in filters.items():
        if v is None:
            continue
        if k == "page_size":
            k = "limit"
        if isinstance(v, list | tuple | set | frozenset):
            v = ",".join(str(x) for x in v)
        out[k] = v
    return out


def needs_lookup(given: str) -> bool:
    """Whether ``given`` is a short job id (4-31 hex digits, as tables show) to look up by prefix."""
    return not FULL_ID.fullmatch(given) and SHORT_ID.fullmatch(given) is not None


def pick_prefix(given: str, items: list[Json]) -> str:
    """The one job id among ``items`` (the jobs whose id starts with ``given``, at most 2)."""
    if not items:
        raise error_for(404, "Not Found", f"no job with an id that starts with '{given}'")
    if len(items) > 1:
        raise error_for(409, "Conflict", f"'{given}' starts more than one job's id: give more of it")
    return str(items[0]["id"])


def problem(r: httpx.Response) -> CorralError:
    """The exception for an error answer (problem+json, or whatever a proxy sent)."""
    try:
        url: str | None = str(r.request.url)
    except RuntimeError:  # a response made without a request (tests)
        url = None
    try:
        body = r.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and ("detail" in body or "title" in body):
        title = str(body.get("title") or r.reason_phrase or f"HTTP {r.status_code}")
        detail = str(body.get("detail") or title)
        errors = body.get("errors") if isinstance(body.get("errors"), list) else None
        return error_for(r.status_code, title, detail, errors, url)
    text = " ".join(r.text.split())[:200] or r.reason_phrase
    return error_for(r.status_code, r.reason_phrase or f"HTTP {r.status_code}",
                     f"HTTP {r.status_code} from {url}: {text}", None, url)


def unreachable(server: str, e: Exception) -> Unreachable:
    if isinstance(e, httpx.ConnectError | httpx.ConnectTimeout):
        return Unreachable(f"cannot reach the Corral server at {server} ({e or type(e).__name__})", server)
    return Unreachable(f"the Corral server at {server} did not answer properly: {e or type(e).__name__}", server)


def json_object(r: httpx.Response) -> Json:
    """The answer's JSON object; an Unreachable-like error for anything else (not a Corral server)."""
    try:
        data = r.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise CorralError(r.status_code, "unexpected answer",
                          f"{r.request.url} did not answer with a JSON object: is this a Corral server?")
    return data


def retry_delay(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2, ...): 0.25, 0.5, 1, 2, 2, ..."""
    return float(min(0.25 * 2 ** (attempt - 1), 2.0))


def wait_interval(elapsed: float) -> float:
    """How long ``wait`` sleeps between two reads of a job: 0.1 s at first, up to 1 s for a long one."""
    return min(0.1 + elapsed / 10, 1.0)


def ndjson(lines: Iterable[str]) -> Iterator[Json]:
    for raw in lines:
        if raw.strip():
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if isinstance(obj, dict):
                yield obj


def log_params(tail: int | None, after: int | None, follow: bool, container: str | None = None
               ) -> dict[str, Any]:
    params: dict[str, Any] = {"format": "ndjson"}
    if container is not None:
        params["container"] = container
    if tail is not None:
        params["tail"] = tail
    if after:
        params["after"] = after
    if follow:
        params["follow"] = "true"
    return params


def task_matches(line: Json, task: str | None) -> bool:
    return task is None or line.get("task") == task or line.get("task_id") == task
