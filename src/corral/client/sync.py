"""``Client``: the synchronous client of Corral's native HTTP API (httpx)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from corral.client import _core
from corral.client._core import TERMINAL, Items, Json
from corral.client.errors import CorralError, WaitTimeout

if TYPE_CHECKING:
    from pydantic import BaseModel

    from corral.domain.pods import PodSpec
    from corral.domain.services import ServiceSpec
    from corral.domain.spec import JobSpec


class Client:
    """A Corral server's native API: ``Client("http://127.0.0.1:8000")`` (default: ``$CORRAL_SERVER``, else that URL).

    ``token`` defaults to ``$CORRAL_API_TOKEN``, else (for a server on this machine) the token ``corral up``
    wrote. ``timeout`` is each request's, in seconds. A read (GET) that meets a broken connection is sent
    again up to ``retries`` times; so is a submission (it carries an Idempotency-Key, so the server creates
    one job whatever happens). Anything else is sent once. Errors are ``CorralError`` subclasses.
    """

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 30.0,
                 retries: int = 3, user_agent: str | None = None, transport: httpx.BaseTransport | None = None
                 ) -> None:
        self.url = _core.normalize_url(url or os.environ.get("CORRAL_SERVER") or _core.DEFAULT_URL)
        self.retries = retries
        try:
            self.http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport,
                                     headers=_core.headers(token or _core.find_token(self.url), user_agent))
        except httpx.InvalidURL as e:
            raise ValueError(f"'{self.url}' is not a server URL: {e}") from e
        self.pods = Pods(self)
        self.services = Services(self)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # -- HTTP ---------------------------------------------------------------------------------------

    def request(self, method: str, path: str, *, retry: bool | None = None, **kw: Any) -> httpx.Response:
        """Send a request; an error answer raises its CorralError. ``retry`` (default: for GET) sends it
        again after a connection error or a 502, 503 or 504, waiting a little longer each time."""
        retry = method.upper() in _core.IDEMPOTENT if retry is None else retry
        attempt = 0
        while True:
            try:
                r = self.http.request(method, path, **kw)
            except (httpx.InvalidURL, httpx.UnsupportedProtocol) as e:
                raise ValueError(f"'{self.url}' is not a server URL: {e}") from e
            except httpx.TransportError as e:
                attempt += 1
                if not retry or attempt > self.retries:
                    raise _core.unreachable(self.url, e) from e
                time.sleep(_core.retry_delay(attempt))
                continue
            if r.status_code in _core.TRANSIENT and retry and attempt < self.retries:
                attempt += 1  # overloaded, or a proxy in front of a restarting server: ask again
                time.sleep(_core.retry_delay(attempt))
                continue
            if r.status_code >= 400:
                raise _core.problem(r)
            return r

    def json(self, method: str, path: str, **kw: Any) -> Json:
        """A request whose answer is a JSON object."""
        return _core.json_object(self.request(method, path, **kw))

    def _pages(self, path: str, params: dict[str, Any]) -> Iterator[Json]:
        while True:
            page = self.json("GET", path, params=params)
            yield from page.get("items") or []
            if not page.get("next_cursor"):
                return
            params = {**params, "cursor": page["next_cursor"]}

    # -- jobs ---------------------------------------------------------------------------------------

    def submit(self, spec: JobSpec | BaseModel | Mapping[str, Any] | str) -> Json:
        """Submit a job: a ``JobSpec``, a dict or YAML text. Returns the job as created."""
        return self.json("POST", "/v1/jobs", json=_core.spec_body(spec), headers=_core.idempotency_key(),
                         retry=True)

    def job_id(self, given: str) -> str:
        """The full id of the job whose id is or starts with ``given`` (a short id, 4 or more hex digits)."""
        if not _core.needs_lookup(given):
            return given
        page = self.json("GET", "/v1/jobs", params={"id_prefix": given, "limit": 2})
        return _core.pick_prefix(given, page.get("items") or [])

    def get(self, job_id: str) -> Json:
        """A job with its first tasks (``tasks``) and ``task_summary``."""
        return self.json("GET", _core.path("jobs", self.job_id(job_id)))

    def list(self, **filters: Any) -> Iterator[Json]:
        """Every job that matches, newest first, page after page: ``state`` (one or a list), ``queue``,
        ``tag``, ``q`` (text), ``id_prefix``, ``created_after``, ``created_before``, ``page_size``."""
        return self._pages("/v1/jobs", _core.job_filters({"page_size": _core.PAGE_SIZE, **filters}))

    def tasks(self, job_id: str) -> Iterator[Json]:
        """Every task of a job, in the order they were created."""
        return self._pages(_core.path("jobs", self.job_id(job_id), "/tasks"), {"limit": 1000})

    def wait(self, job_id: str, timeout: float | None = None) -> Json:
        """The job once it has ended (completed, failed or cancelled); ``WaitTimeout`` after ``timeout``
        seconds (None: no limit). A failed job is returned, not raised: look at its ``state``."""
        full = self.job_id(job_id)
        start = time.monotonic()
        while True:
            job = self.get(full)
            elapsed = time.monotonic() - start
            if job.get("state") in TERMINAL:
                return job
            if timeout is not None and elapsed >= timeout:
                raise WaitTimeout(full, timeout, job)
            pause = _core.wait_interval(elapsed)
            time.sleep(pause if timeout is None else max(0.0, min(pause, timeout - elapsed)))

    def cancel(self, job_id: str) -> Json:
        return self.json("POST", _core.path("jobs", self.job_id(job_id), "/cancel"))

    def restart(self, job_id: str) -> Json:
        return self.json("POST", _core.path("jobs", self.job_id(job_id), "/restart"))

    def delete(self, job_id: str) -> None:
        self.request("DELETE", _core.path("jobs", self.job_id(job_id)))

    def logs(self, job_id: str, task: str | None = None, *, follow: bool = True, tail: int | None = None,
             reconnect_for: float = 30.0) -> Iterator[Json]:
        """The job's log lines as dicts (``seq``, ``task``, ``task_id``, ``execution_id``, ``stream``,
        ``line``, ``time``); only ``task``'s (a name or task id) when given.

        With ``follow`` (the default) lines stream until the job has ended; a stream that breaks is opened
        again after the last line seen, for up to ``reconnect_for`` seconds. Without it, every stored line
        (or the last ``tail``), page after page."""
        return _logs(self, _core.path("jobs", self.job_id(job_id), "/logs"), task, follow, tail, reconnect_for)

    # -- cluster ------------------------------------------------------------------------------------

    def nodes(self) -> Items:
        return list(self.json("GET", "/v1/nodes").get("items") or [])

    def node(self, node_id: str) -> Json:
        return self.json("GET", _core.path("nodes", node_id))

    def queues(self) -> Items:
        return list(self.json("GET", "/v1/queues").get("items") or [])


class Pods:
    """``client.pods``: long-running groups of containers (docs/api.md, Pods)."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def create(self, spec: PodSpec | BaseModel | Mapping[str, Any] | str) -> Json:
        return self._c.json("POST", "/v1/pods", json=_core.spec_body(spec, "pod"))

    def get(self, pod_id: str) -> Json:
        return self._c.json("GET", _core.path("pods", pod_id))

    def list(self, *, namespace: str | None = None, selector: str | None = None, origin: str | None = None
             ) -> Iterator[Json]:
        params = _core.job_filters({"namespace": namespace, "selector": selector, "origin": origin,
                                    "page_size": _core.PAGE_SIZE})
        return self._c._pages("/v1/pods", params)

    def delete(self, pod_id: str, grace: float | None = None) -> Json:
        """Stop the pod (SIGTERM, SIGKILL after ``grace`` seconds); its record stays until purged."""
        return self._c.json("DELETE", _core.path("pods", pod_id), params=_core.job_filters({"grace": grace}))

    def purge(self, pod_id: str) -> None:
        self._c.request("POST", _core.path("pods", pod_id, "/purge"))

    def logs(self, pod_id: str, container: str | None = None, *, follow: bool = False) -> Iterator[Json]:
        """The pod's log lines as dicts (``seq``, ``container``, ``stream``, ``line``, ``time``)."""
        return _logs(self._c, _core.path("pods", pod_id, "/logs"), None, follow, None, 30.0, container)


class Services:
    """``client.services``: stable names and ports in front of pods (docs/api.md, Services)."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def create(self, spec: ServiceSpec | BaseModel | Mapping[str, Any] | str) -> Json:
        return self._c.json("POST", "/v1/services", json=_core.spec_body(spec, "service"))

    def get(self, service_id: str) -> Json:
        return self._c.json("GET", _core.path("services", service_id))

    def list(self, *, namespace: str | None = None) -> Iterator[Json]:
        return self._c._pages("/v1/services", _core.job_filters({"namespace": namespace,
                                                                 "page_size": _core.PAGE_SIZE}))

    def update(self, service_id: str, spec: ServiceSpec | BaseModel | Mapping[str, Any] | str,
               version: int | None = None) -> Json:
        return self._c.json("PUT", _core.path("services", service_id), json=_core.spec_body(spec, "service"),
                            params=_core.job_filters({"version": version}))

    def delete(self, service_id: str) -> None:
        self._c.request("DELETE", _core.path("services", service_id))

    def endpoints(self, service_id: str) -> Json:
        return self._c.json("GET", _core.path("services", service_id, "/endpoints"))


def _logs(c: Client, path: str, task: str | None, follow: bool, tail: int | None,
          reconnect_for: float, container: str | None = None) -> Iterator[Json]:
    params = _core.log_params(tail, None, False, container)
    if not follow:
        while True:  # a page ends where X-Next-After says the next one starts
            r = c.request("GET", path, params=params)
            yield from (x for x in _core.ndjson(r.iter_lines()) if _core.task_matches(x, task))
            nxt = r.headers.get("X-Next-After")
            if nxt is None or tail is not None:
                return
            params["after"] = int(nxt)
    params["follow"] = "true"
    broken_since: float | None = None
    connected = False
    while True:
        try:
            with c.http.stream("GET", path, params=params, timeout=httpx.Timeout(10.0, read=None)) as r:
                if r.status_code >= 400:
                    r.read()
                    raise _core.problem(r)
                broken_since, connected = None, True
                for line in _core.ndjson(r.iter_lines()):
                    params["after"] = line.get("seq", params.get("after", 0))
                    params.pop("tail", None)
                    if _core.task_matches(line, task):
                        yield line
            return
        except httpx.TransportError as e:
            now = time.monotonic()
            broken_since = broken_since or now
            if not connected or now - broken_since > reconnect_for:
                raise _core.unreachable(c.url, e) from e
            time.sleep(1.0)


__all__ = ["Client", "CorralError", "Pods", "Services"]
