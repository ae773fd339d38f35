"""How an agent speaks to its coordinator: the Transport protocol and its HTTP wiring (a remote worker).

The in-process wiring (standalone: ``corral up``) is ``coordinator/local.py``; nothing here imports the
coordinator."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Sequence
from typing import Any, Protocol

import httpx

from corral.domain.agentwire import NODE_SECRET_HEADER

log = logging.getLogger("corral.agent")
TOKEN_REFUSED = "the coordinator refused the token"


class UnknownNode(Exception):
    """The coordinator does not know this node (its state was lost): register again."""


class Refused(Exception):
    """The coordinator refuses this worker (its token, or its node secret): trying again cannot help."""


class Rejected(Exception):
    """The coordinator refuses this request as it is (400, 413, 422): sending it again cannot help."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status, self.detail = status, detail


REJECTED = (400, 413, 422)
UNAVAILABLE = (500, 502, 503, 504)  # a coordinator that answers so cannot serve: with several, the next is asked


class Transport(Protocol):
    # The node's secret, presented on every call once known (set by the agent).
    node_secret: str | None

    async def register(self, info: dict[str, Any], running: list[str]) -> dict[str, Any]: ...
    async def heartbeat(self, node_id: str, running: list[str], usage: dict[str, Any]) -> list[str]: ...
    async def poll(self, node_id: str, known: list[str], wait: float) -> tuple[list[dict[str, Any]], list[str]]: ...
    async def report(self, node_id: str, updates: list[dict[str, Any]], logs: list[dict[str, Any]]) -> list[str]:
        """Send a batch; returns the executions whose stored log is full (their later output is not
        wanted). Rejected if the coordinator refuses the batch as it is."""
        ...
    async def drain(self, node_id: str, running: list[str]) -> list[str]: ...
    async def sync_pods(self, node_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Send the status of this node's pods and their output lines (``{"pods", "logs"}``); returns the
        whole desired set for the node (``{"pods": [assignment], "log_full": [instance id]}``)."""
        ...
    async def leave(self, node_id: str) -> None: ...
    async def node_services(self, node_id: str) -> list[dict[str, Any]]:
        """The NodePort services this node forwards, with their ready endpoints."""
        ...
    async def close(self) -> None: ...


def _detail(r: httpx.Response) -> str:
    try:
        return str(r.json().get("detail") or r.text)
    except ValueError:
        return r.text


class HttpTransport:
    """The agent protocol over HTTP, to one coordinator or to any of several sharing a database: the worker
    talks to one at a time and moves to the next when its own cannot be reached. A request that never
    reached a coordinator (connection refused) is sent to the next at once; one that may have reached it
    (the connection broke during the request) fails, and the agent sends it again as after any error (a
    report's changes are compare-and-sets, so one applied twice changes nothing the second time)."""

    def __init__(self, servers: str | Sequence[str], token: str | None = None, ca: str | None = None,
                 cert: tuple[str, str] | None = None) -> None:
        """``ca``: verify an HTTPS coordinator against this CA file (else the system's); ``cert``: a client
        certificate and its key to present."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.node_secret: str | None = None
        self.servers = [s.rstrip("/") for s in ([servers] if isinstance(servers, str) else servers)]
        if not self.servers:
            raise ValueError("no coordinator URL")
        self.current = 0
        self._moved: asyncio.Event | None = None  # set when the worker moves away from the current coordinator
        verify: ssl.SSLContext | bool = True
        if ca or cert:
            verify = ssl.create_default_context(cafile=ca)
            if cert:
                verify.load_cert_chain(*cert)
        self.client = httpx.AsyncClient(headers=headers, verify=verify, timeout=httpx.Timeout(10.0, read=75.0))

    @property
    def server(self) -> str:
        return self.servers[self.current]

    def _next(self, failed: int, why: str = "cannot be reached") -> None:
        if len(self.servers) > 1 and self.current == failed:
            self.current = (failed + 1) % len(self.servers)
            log.warning("coordinator %s %s: moving to %s", self.servers[failed], why, self.server)
            if self._moved is not None:  # the requests still waiting on the one left are given up
                self._moved.set()
                self._moved = None

    async def _request(self, at: int, method: str, path: str, **kw: Any) -> httpx.Response:
        """The request to coordinator ``at``, given up (``httpx.ReadError``) as soon as another request finds
        that coordinator gone and the worker moves on. A coordinator cut off by the network sends no reset:
        without this, a heartbeat in flight to it waits out its read timeout (20 s, longer than a node's TTL)
        and a long poll 75 s, while the coordinator moved to could have had them at once."""
        if self._moved is None:
            self._moved = asyncio.Event()
        req = asyncio.ensure_future(self.client.request(method, self.servers[at] + path, **kw))
        gone = asyncio.ensure_future(self._moved.wait())
        try:
            await asyncio.wait({req, gone}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            req.cancel()
            raise
        finally:
            gone.cancel()
        if req.done():
            return req.result()
        req.cancel()
        with contextlib.suppress(BaseException):
            await req
        raise httpx.ReadError(f"gave up on {self.servers[at]}: the worker moved to {self.server}")

    async def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        unavailable: httpx.Response | None = None
        for _ in range(len(self.servers)):
            at = self.current
            try:
                r = await self._request(at, method, path, **kw)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                self._next(at)
                if len(self.servers) == 1:
                    raise
                continue
            except httpx.TransportError:
                self._next(at)
                raise
            if r.status_code in UNAVAILABLE and len(self.servers) > 1:
                # It answers but cannot do the work (its database is out of its reach, say): to the next at
                # once. A request it half did is harmless again: every change is a compare-and-set.
                self._next(at, f"answered {r.status_code}")
                unavailable = r
                continue
            return r
        if unavailable is not None:  # every one answered so: the caller sees the last answer
            return unavailable
        raise httpx.ConnectError(f"none of the coordinators can be reached: {', '.join(self.servers)}")

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        """POST a JSON body, with the node's secret once it has one. A report keeps within half the
        coordinator's limit for its route (``logbuf.REPORT_BYTES``); one it refuses all the same (400,
        413, 422) raises Rejected, which the agent handles by splitting the batch."""
        headers = {NODE_SECRET_HEADER: self.node_secret} if self.node_secret else None
        timeout = None if path.endswith("/poll") else httpx.Timeout(10.0, read=20.0)
        r = await self._send("POST", path, json=body, headers=headers,
                             **({"timeout": timeout} if timeout else {}))
        if r.status_code == 404 and "/nodes/" in path:
            raise UnknownNode(r.text)
        if r.status_code == 401:
            raise Refused(TOKEN_REFUSED)
        if r.status_code == 403:
            raise Refused(f"the coordinator refused this node: {_detail(r)}")
        if r.status_code in REJECTED:
            raise Rejected(r.status_code, _detail(r))
        r.raise_for_status()
        return r.json() if r.content else None

    async def register(self, info: dict[str, Any], running: list[str]) -> dict[str, Any]:
        try:
            out: dict[str, Any] = await self._post("/v1/agent/register", {**info, "running": running})
        except Rejected as e:  # what this worker says of itself: it stays wrong
            raise Refused(f"the coordinator refused this worker's registration: {e.detail}") from e
        return out

    async def heartbeat(self, node_id: str, running: list[str], usage: dict[str, Any]) -> list[str]:
        out = await self._post(f"/v1/agent/nodes/{node_id}/heartbeat", {"running": running, "usage": usage})
        return list(out["stop"])

    async def poll(self, node_id: str, known: list[str], wait: float) -> tuple[list[dict[str, Any]], list[str]]:
        out = await self._post(f"/v1/agent/nodes/{node_id}/poll", {"known": known, "wait": wait})
        return list(out["work"]), list(out["stop"])

    async def report(self, node_id: str, updates: list[dict[str, Any]], logs: list[dict[str, Any]]) -> list[str]:
        out = await self._post(f"/v1/agent/nodes/{node_id}/report", {"updates": updates, "logs": logs})
        full = out.get("log_full") if isinstance(out, dict) else None  # an older coordinator: nothing
        return [str(i) for i in full] if isinstance(full, list) else []

    async def drain(self, node_id: str, running: list[str]) -> list[str]:
        out = await self._post(f"/v1/agent/nodes/{node_id}/drain", {"running": running})
        return list(out["handed_back"])

    async def leave(self, node_id: str) -> None:
        await self._post(f"/v1/agent/nodes/{node_id}/leave", {})

    async def sync_pods(self, node_id: str, body: dict[str, Any]) -> dict[str, Any]:
        out = await self._post(f"/v1/agent/nodes/{node_id}/pods", body)
        return out if isinstance(out, dict) else {}

    async def node_services(self, node_id: str) -> list[dict[str, Any]]:
        headers = {NODE_SECRET_HEADER: self.node_secret} if self.node_secret else None
        r = await self._send("GET", f"/v1/agent/nodes/{node_id}/services", headers=headers)
        if r.status_code == 404:
            raise UnknownNode(r.text)
        if r.status_code in (401, 403):
            raise Refused(f"the coordinator refused this node: {_detail(r)}")
        r.raise_for_status()
        return list(r.json()["services"])

    async def close(self) -> None:
        await self.client.aclose()
