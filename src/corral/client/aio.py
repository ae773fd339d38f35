"""``AsyncClient``: the asyncio twin of ``Client`` (httpx.AsyncClient); the same methods, awaited."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from corral.client import _core
from corral.client._core import TERMINAL, Items, Json
from corral.client.errors import WaitTimeout

if TYPE_CHECKING:
    from pydantic import BaseModel

    from corral.domain.pods import PodSpec
    from corral.domain.services import ServiceSpec
    from corral.domain.spec import JobSpec


class AsyncClient:
    """``async with AsyncClient(url) as c: job = await c.submit(spec)``. See ``Client`` for the options;
    ``list`` and ``logs`` are async iterators (``async for``)."""

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 30.0,
                 retries: int = 3, user_agent: str | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = _core.normalize_url(url or os.environ.get("CORRAL_SERVER") or _core.DEFAULT_URL)
        self.retries = retries
        try:
            self.http = httpx.AsyncClient(base_url=self.url, timeout=timeout, transport=transport,
                                          headers=_core.headers(token or _core.find_token(self.url), user_agent))
        except httpx.InvalidURL as e:
            raise ValueError(f"'{self.url}' is not a server URL: {e}") from e
        self.pods = AsyncPods(self)
        self.services = AsyncServices(self)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- HTTP ---------------------------------------------------------------------------------------

    async def request(self, method: str, path: str, *, retry: bool | None = None, **kw: Any) -> httpx.Response:
        retry = method.upper() in _core.IDEMPOTENT if retry is None else retry
        attempt = 0
        while True:
            try:
                r = await self.http.request(method, path, **kw)
            except (httpx.InvalidURL, httpx.UnsupportedProtocol) as e:
                raise ValueError(f"'{self.url}' is not a server URL: {e}") from e
            except httpx.TransportError as e:
                attempt += 1
                if not retry or attempt > self.retries:
                    raise _core.unreachable(self.url, e) from e
                await asyncio.sleep(_core.retry_delay(attempt))
                continue
            if r.status_code in _core.TRANSIENT and retry and attempt < self.retries:
                attempt += 1  # overloaded, or a proxy in front of a restarting server: ask again
                await asyncio.sleep(_core.retry_delay(attempt))
                continue
            if r.status_code >= 400:
                raise _core.problem(r)
            return r

    async def json(self, method: str, path: str, **kw: Any) -> Json:
        return _core.json_object(await self.request(method, path, **kw))

    async def _pages(self, path: str, params: dict[str, Any]) -> AsyncIterator[Json]:
        while True:
            page = await self.json("GET", path, params=params)
            for item in page.get("items") or []:
                yield item
            if not page.get("next_cursor"):
                return
            params = {**params, "cursor": page["next_cursor"]}

    # -- jobs ---------------------------------------------------------------------------------------

    async def submit(self, spec: JobSpec | BaseModel | Mapping[str, Any] | str) -> Json:
        return await self.json("POST", "/v1/jobs", json=_core.spec_body(spec), headers=_core.idempotency_key(),
                               retry=True)

    async def job_id(self, given: str) -> str:
        if not _core.needs_lookup(given):
            return given
        page = await self.json("GET", "/v1/jobs", params={"id_prefix": given, "limit": 2})
        return _core.pick_prefix(given, page.get("items") or [])

    async def get(self, job_id: str) -> Json:
        return await self.json("GET", _core.path("jobs", await self.job_id(job_id)))

    def list(self, **filters: Any) -> AsyncIterator[Json]:
        return self._pages("/v1/jobs", _core.job_filters({"page_size": _core.PAGE_SIZE, **filters}))

    async def tasks(self, job_id: str) -> AsyncIterator[Json]:
        async for t in self._pages(_core.path("jobs", await self.job_id(job_id), "/tasks"), {"limit": 1000}):
            yield t

    async def wait(self, job_id: str, timeout: float | None = None) -> Json:
        full = await self.job_id(job_id)
        start = time.monotonic()
        while True:
            job = await self.get(full)
            elapsed = time.monotonic() - start
            if job.get("state") in TERMINAL:
                return job
            if timeout is not None and elapsed >= timeout:
                raise WaitTimeout(full, timeout, job)
            pause = _core.wait_interval(elapsed)
            await asyncio.sleep(pause if timeout is None else max(0.0, min(pause, timeout - elapsed)))

    async def cancel(self, job_id: str) -> Json:
        return await self.json("POST", _core.path("jobs", await self.job_id(job_id), "/cancel"))

    async def restart(self, job_id: str) -> Json:
        return await self.json("POST", _core.path("jobs", await self.job_id(job_id), "/restart"))

    async def delete(self, job_id: str) -> None:
        await self.request("DELETE", _core.path("jobs", await self.job_id(job_id)))

    async def logs(self, job_id: str, task: str | None = None, *, follow: bool = True, tail: int | None = None,
                   reconnect_for: float = 30.0) -> AsyncIterator[Json]:
        path = _core.path("jobs", await self.job_id(job_id), "/logs")
        async for line in _logs(self, path, task, follow, tail, reconnect_for):
            yield line

    # -- cluster ------------------------------------------------------------------------------------

    async def nodes(self) -> Items:
        return list((await self.json("GET", "/v1/nodes")).get("items") or [])

    async def node(self, node_id: str) -> Json:
        return await self.json("GET", _core.path("nodes", node_id))

    async def queues(self) -> Items:
        return list((await self.json("GET", "/v1/queues")).get("items") or [])


class AsyncPods:
    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def create(self, spec: PodSpec | BaseModel | Mapping[str, Any] | str) -> Json:
        return await self._c.json("POST", "/v1/pods", json=_core.spec_body(spec, "pod"))

    async def get(self, pod_id: str) -> Json:
        return await self._c.json("GET", _core.path("pods", pod_id))

    def list(self, *, namespace: str | None = None, selector: str | None = None, origin: str | None = None
             ) -> AsyncIterator[Json]:
        params = _core.job_filters({"namespace": namespace, "selector": selector, "origin": origin,
                                    "page_size": _core.PAGE_SIZE})
        return self._c._pages("/v1/pods", params)

    async def delete(self, pod_id: str, grace: float | None = None) -> Json:
        return await self._c.json("DELETE", _core.path("pods", pod_id), params=_core.job_filters({"grace": grace}))

    async def purge(self, pod_id: str) -> None:
        await self._c.request("POST", _core.path("pods", pod_id, "/purge"))

    def logs(self, pod_id: str, container: str | None = None, *, follow: bool = False) -> AsyncIterator[Json]:
        return _logs(self._c, _core.path("pods", pod_id, "/logs"), None, follow, None, 30.0, container)


class AsyncServices:
    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def create(self, spec: ServiceSpec | BaseModel | Mapping[str, Any] | str) -> Json:
        return await self._c.json("POST", "/v1/services", json=_core.spec_body(spec, "service"))

    async def get(self, service_id: str) -> Json:
        return await self._c.json("GET", _core.path("services", service_id))

    def list(self, *, namespace: str | None = None) -> AsyncIterator[Json]:
        return self._c._pages("/v1/services", _core.job_filters({"namespace": namespace,
                                                                 "page_size": _core.PAGE_SIZE}))

    async def update(self, service_id: str, spec: ServiceSpec | BaseModel | Mapping[str, Any] | str,
                     version: int | None = None) -> Json:
        return await self._c.json("PUT", _core.path("services", service_id),
                                  json=_core.spec_body(spec, "service"),
                                  params=_core.job_filters({"version": version}))

    async def delete(self, service_id: str) -> None:
        await self._c.request("DELETE", _core.path("services", service_id))

    async def endpoints(self, service_id: str) -> Json:
        return await self._c.json("GET", _core.path("services", service_id, "/endpoints"))


async def _logs(c: AsyncClient, path: str, task: str | None, follow: bool, tail: int | None,
                reconnect_for: float, container: str | None = None) -> AsyncIterator[Json]:
    params = _core.log_params(tail, None, False, container)
    if not follow:
        while True:
            r = await c.request("GET", path, params=params)
            for x in _core.ndjson(r.text.splitlines()):
                if _core.task_matches(x, task):
                    yield x
            nxt = r.headers.get("X-Next-After")
            if nxt is None or tail is not None:
                return
            params["after"] = int(nxt)
    params["follow"] = "true"
    broken_since: float | None = None
    connected = False
    while True:
        try:
            async with c.http.stream("GET", path, params=params, timeout=httpx.Timeout(10.0, read=None)) as r:
                if r.status_code >= 400:
                    await r.aread()
                    raise _core.problem(r)
                broken_since, connected = None, True
                async for raw in r.aiter_lines():
                    for line in _core.ndjson([raw]):
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
            await asyncio.sleep(1.0)
