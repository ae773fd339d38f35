"""A small synchronous client for Corral's native HTTP API, used by the `corral` commands.

Every failure a user can cause or meet (a problem response, a server that is not there, a stream that
breaks) becomes a ``CliError`` with a readable message and the exit status the command should use.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from corral import __version__
from corral.domain.addresses import is_loopback

Json = dict[str, Any]
DEFAULT_SERVER = "http://127.0.0.1:8000"
TERMINAL = frozenset({"completed", "failed", "cancelled"})
# HTTP statuses that mean "what you sent is wrong": the command exits 2, like a usage error.
INPUT_ERRORS = frozenset({400, 413, 415, 422})


class CliError(Exception):
    """An expected failure: printed as `error: <message>` without a traceback."""

    def __init__(self, message: str, exit_code: int = 1, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.details = details or []


class ApiError(CliError):
    """The server answered with an error (RFC 9457 problem details)."""

    def __init__(self, status: int, detail: str, errors: list[Json] | None = None) -> None:
        fields = [f"{e.get('field', '?')}: {e.get('message', 'invalid')}" for e in errors or []]
        # The detail of a validation problem repeats its field errors: show those one per line instead.
        message = "invalid input" if fields and detail == "; ".join(fields) else detail
        super().__init__(message, 2 if status in INPUT_ERRORS else 1, fields)
        self.status = status


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url:
        raise CliError("--server is empty: give a URL such as http://127.0.0.1:8000", 2)
    return url if "://" in url else f"http://{url}"


def _problem(r: httpx.Response) -> ApiError:
    try:
        body = r.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and ("detail" in body or "title" in body):
        detail = str(body.get("detail") or body.get("title"))
        errors = body.get("errors") if isinstance(body.get("errors"), list) else None
        return ApiError(r.status_code, detail, errors)
    text = " ".join(r.text.split())[:200] or r.reason_phrase
    return ApiError(r.status_code, f"HTTP {r.status_code} from {r.request.url}: {text}")


def find_token(server: str) -> str | None:
    """The access token to send: ``CORRAL_API_TOKEN`` (``--token``) when set; else, for a server on
    this machine (a loopback address) only, the one ``corral up`` keeps in ``$CORRAL_DATA_DIR/token``,
    or ``.corral/token`` under the current directory. A token read from a file never leaves the machine."""
    given = os.environ.get("CORRAL_API_TOKEN", "").strip()
    if given:
        return given
    if not is_loopback(urlsplit(server).hostname or ""):
        return None
    path = Path(os.environ.get("CORRAL_DATA_DIR") or ".corral") / "token"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


class Client:
    def __init__(self, server: str, timeout: float = 30.0, token: str | None = None) -> None:
        self.server = normalize_url(server)
        token = token or find_token(self.server)
        headers = {"User-Agent": f"corral-cli/{__version__}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            self.http = httpx.Client(base_url=self.server, timeout=timeout, headers=headers)
        except (httpx.InvalidURL, ValueError) as e:
            raise CliError(f"'{server}' is not a server URL: {e}", 2) from e

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def _unreachable(self, e: Exception) -> CliError:
        if isinstance(e, httpx.ConnectError | httpx.ConnectTimeout):
            hint = "start one with `corral up`, or point --server / CORRAL_SERVER at yours"
            return CliError(f"cannot reach the Corral server at {self.server} ({e or type(e).__name__})",
                            details=[hint])
        return CliError(f"the Corral server at {self.server} did not answer properly: "
                        f"{e or type(e).__name__}")

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            r = self.http.request(method, path, **kw)
        except httpx.InvalidURL as e:
            raise CliError(f"'{self.server}' is not a server URL: {e}", 2) from e
        except httpx.TransportError as e:
            raise self._unreachable(e) from e
        if r.status_code >= 400:
            raise _problem(r)
        return r

    def json(self, method: str, path: str, **kw: Any) -> Json:
        """A request whose answer is a JSON object (errors raised as ApiError, as for request)."""
        r = self.request(method, path, **kw)
        try:
            data = r.json()
        except ValueError as e:
            raise CliError(f"{self.server}{path} did not answer with JSON: is this a Corral server?") from e
        if not isinstance(data, dict):
            raise CliError(f"{self.server}{path} answered with unexpected JSON: is this a Corral server?")
        return data

    # -- jobs ---------------------------------------------------------------------------------------

    def submit(self, spec: Json) -> Json:
        return self.json("POST", "/v1/jobs", json=spec)

    def list_jobs(self, **params: Any) -> Json:
        return self.json("GET", "/v1/jobs", params={k: v for k, v in params.items() if v is not None})

    def job_id(self, given: str) -> str:
        """The full id of the job whose id is or starts with ``given`` (the short ids tables show, at least
        4 characters). Anything else is passed on as it is, for the server to say what is wrong with it."""
        if FULL_ID.fullmatch(given) or not SHORT_ID.fullmatch(given):
            return given
        items = self.list_jobs(id_prefix=given, limit=2)["items"]
        if not items:
            raise ApiError(404, f"no job with an id that starts with '{given}'")
        if len(items) > 1:
            raise ApiError(409, f"'{given}' starts more than one job's id: give more of it")
        return str(items[0]["id"])

    def _job_path(self, given: str, suffix: str = "") -> str:
        return f"/v1/jobs/{quote(self.job_id(given), safe='')}{suffix}"

    def job(self, job_id: str) -> Json:
        return self.json("GET", self._job_path(job_id))

    def cancel(self, job_id: str) -> Json:
        return self.json("POST", self._job_path(job_id, "/cancel"))

    def restart(self, job_id: str) -> Json:
        return self.json("POST", self._job_path(job_id, "/restart"))

    def delete(self, job_id: str) -> None:
        self.request("DELETE", self._job_path(job_id))

    def logs(self, job_id: str, tail: int | None = None, follow: bool = False,
             reconnect_for: float = 30.0) -> Iterator[Json]:
        """Log lines as dicts (seq, task, task_id, execution_id, stream, line, ts), all of them: page
        after page.

        With ``follow`` the lines stream until the job ends. A stream that breaks (a server restart, a
        proxy timeout) is opened again after the last line seen, for up to ``reconnect_for`` seconds.
        """
        path = self._job_path(job_id, "/logs")
        params: dict[str, Any] = {"format": "ndjson"}
        if tail is not None:
            params["tail"] = tail
        if not follow:
            # Page after page: a page ends where X-Next-After says the next one starts.
            while True:
                r = self.request("GET", path, params=params)
                yield from _ndjson(r.iter_lines())
                nxt = r.headers.get("X-Next-After")
                if nxt is None or tail is not None:
                    return
                params["after"] = int(nxt)
        params["follow"] = "true"
        timeout = httpx.Timeout(10.0, read=None)
        broken_since: float | None = None
        connected = False
        while True:
            try:
                with self.http.stream("GET", path, params=params, timeout=timeout) as r:
                    if r.status_code >= 400:
                        r.read()
                        raise _problem(r)
                    broken_since, connected = None, True
                    for line in _ndjson(r.iter_lines()):
                        params["after"] = line.get("seq", params.get("after", 0))
                        params.pop("tail", None)
                        yield line
                return
            except httpx.TransportError as e:
                now = time.monotonic()
                broken_since = broken_since or now
                if not connected or now - broken_since > reconnect_for:
                    raise self._unreachable(e) from e
                time.sleep(1.0)

    # -- schedules ----------------------------------------------------------------------------------

    def create_schedule(self, cron: str, job: Json, name: str | None = None) -> Json:
        body: Json = {"cron": cron, "job": job}
        if name is not None:
            body["name"] = name
        return self.json("POST", "/v1/schedules", json=body)

    def schedules(self) -> Json:
        return self.json("GET", "/v1/schedules")

    def schedule(self, schedule_id: str) -> Json:
        return self.json("GET", _schedule_path(schedule_id))

    def pause_schedule(self, schedule_id: str) -> Json:
        return self.json("POST", _schedule_path(schedule_id, "/pause"))

    def resume_schedule(self, schedule_id: str) -> Json:
        return self.json("POST", _schedule_path(schedule_id, "/resume"))

    def delete_schedule(self, schedule_id: str) -> None:
        self.request("DELETE", _schedule_path(schedule_id))

    # -- services -----------------------------------------------------------------------------------

    def create_service(self, spec: Json) -> Json:
        return self.json("POST", "/v1/services", json=spec)

    def services(self, namespace: str | None = None) -> Json:
        return self.json("GET", "/v1/services", params={"namespace": namespace} if namespace else None)

    def service(self, service_id: str) -> Json:
        return self.json("GET", _service_path(service_id))

    def service_endpoints(self, service_id: str) -> Json:
        return self.json("GET", _service_path(service_id, "/endpoints"))

    def delete_service(self, service_id: str) -> None:
        self.request("DELETE", _service_path(service_id))

    # -- cluster ------------------------------------------------------------------------------------

    def nodes(self) -> Json:
        return self.json("GET", "/v1/nodes")

    def node_id(self, given: str) -> str:
        """The id of the node named ``given``, or whose id is or starts with it (at least 4 characters)."""
        items = self.nodes()["items"]
        found = {n["id"] for n in items if n["id"] == given or n["name"] == given}
        if not found and len(given) >= 4:
            found = {n["id"] for n in items if n["id"].startswith(given)}
        if not found:
            raise ApiError(404, f"no node with the id or name '{given}'")
        if len(found) > 1:
            raise ApiError(409, f"'{given}' names more than one node: give its full id")
        return str(found.pop())

    def drain_node(self, node: str, deadline: str | None = None) -> Json:
        body = {} if deadline is None else {"deadline": deadline}
        return self.json("POST", f"/v1/nodes/{quote(self.node_id(node), safe='')}/drain", json=body)

    def undrain_node(self, node: str) -> Json:
        return self.json("POST", f"/v1/nodes/{quote(self.node_id(node), safe='')}/undrain")

    def queues(self) -> Json:
        return self.json("GET", "/v1/queues")


FULL_ID = re.compile(r"[0-9a-f]{32}")
SHORT_ID = re.compile(r"[0-9a-f]{4,31}")


def _schedule_path(schedule_id: str, suffix: str = "") -> str:
    return f"/v1/schedules/{quote(schedule_id, safe='')}{suffix}"


def _service_path(service_id: str, suffix: str = "") -> str:
    return f"/v1/services/{quote(service_id, safe='')}{suffix}"


def _ndjson(lines: Iterator[str]) -> Iterator[Json]:
    for raw in lines:
        if raw.strip():
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if isinstance(obj, dict):
                yield obj
