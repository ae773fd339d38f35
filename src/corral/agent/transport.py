"""How an agent speaks to its coordinator: over HTTP (a remote worker) or in-process (standalone)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import httpx

from corral.coordinator.errors import Forbidden, NotFound, ServiceError, Unauthorized
from corral.coordinator.service import NODE_SECRET_HEADER, Coordinator, LogLine, NodeInfo, Update
from corral.coordinator.wakeups import NodeWakeups

T = TypeVar("T")
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
    def __init__(self, server: str, token: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.node_secret: str | None = None
        self.client = httpx.AsyncClient(base_url=server.rstrip("/"), headers=headers,
                                        timeout=httpx.Timeout(10.0, read=75.0))

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        """POST a JSON body, with the node's secret once it has one. A report keeps within half the
        coordinator's limit for its route (``logbuf.REPORT_BYTES``); one it refuses all the same (400,
        413, 422) raises Rejected, which the agent handles by splitting the batch."""
        headers = {NODE_SECRET_HEADER: self.node_secret} if self.node_secret else None
        r = await self.client.post(path, json=body, headers=headers)
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
        r = await self.client.get(f"/v1/agent/nodes/{node_id}/services", headers=headers)
        if r.status_code == 404:
            raise UnknownNode(r.text)
        if r.status_code in (401, 403):
            raise Refused(f"the coordinator refused this node: {_detail(r)}")
        r.raise_for_status()
        return list(r.json()["services"])

    async def close(self) -> None:
        await self.client.aclose()


class LocalTransport:
    """The standalone wiring: the same calls, straight into the coordinator's services, through the same
    checks (the node's secret)."""

    def __init__(self, coord: Coordinator, wakeups: NodeWakeups) -> None:
        self.coord = coord
        self.wakeups = wakeups
        self.node_secret: str | None = None

    async def _call(self, node_id: str, fn: Callable[[], T]) -> T:
        def run() -> T:
            self.coord.authenticate(node_id, self.node_secret)
            return fn()
        try:
            return await asyncio.to_thread(run)
        except NotFound as e:
            raise UnknownNode(str(e)) from e
        except (Forbidden, Unauthorized) as e:
            raise Refused(f"the coordinator refused this node: {e}") from e
        except ServiceError as e:
            if e.status in REJECTED:
                raise Rejected(e.status, str(e)) from e
            raise

    async def register(self, info: dict[str, Any], running: list[str]) -> dict[str, Any]:
        try:
            row = await asyncio.to_thread(self.coord.register, NodeInfo(**info), running, self.node_secret)
        except Forbidden as e:
            raise Refused(f"the coordinator refused this node: {e}") from e
        s = self.coord.settings
        out = {"node_id": row["id"], "heartbeat_interval": s.heartbeat_interval, "node_ttl": s.node_ttl}
        if row.get("node_secret"):
            out["node_secret"] = row["node_secret"]
        return out

    async def heartbeat(self, node_id: str, running: list[str], usage: dict[str, Any]) -> list[str]:
        return await self._call(node_id, lambda: self.coord.heartbeat(node_id, running, usage))

    async def poll(self, node_id: str, known: list[str], wait: float) -> tuple[list[dict[str, Any]], list[str]]:
        deadline = time.monotonic() + wait
        woken = False
        while True:
            ev = self.wakeups.arm(node_id)
            work, stop = await self._call(node_id, lambda: self.coord.poll(node_id, known))
            left = deadline - time.monotonic()
            if work or stop or left <= 0 or woken:  # woken with no work: its pods changed (see the route)
                return work, stop
            await self.wakeups.wait(ev, left)
            woken = ev.is_set()

    async def report(self, node_id: str, updates: list[dict[str, Any]], logs: list[dict[str, Any]]) -> list[str]:
        return await self._call(node_id, lambda: self.coord.report(node_id, [Update(**u) for u in updates],
                                                                   [LogLine(**ln) for ln in logs]))

    async def drain(self, node_id: str, running: list[str]) -> list[str]:
        return await self._call(node_id, lambda: self.coord.drain(node_id, running))

    async def leave(self, node_id: str) -> None:
        await self._call(node_id, lambda: self.coord.leave(node_id))

    async def sync_pods(self, node_id: str, body: dict[str, Any]) -> dict[str, Any]:
        from corral.coordinator.pods import ContainerStatus, PodLogLine, PodStatus
        statuses = [PodStatus(p["instance_id"], p["pod_id"], p["phase"],
                              [ContainerStatus(**c) for c in p.get("containers") or ()], p.get("ts") or 0.0)
                    for p in body.get("pods") or ()]
        lines = [PodLogLine(**ln) for ln in body.get("logs") or ()]
        out: dict[str, Any] = await self._call(node_id, lambda: self.coord.pods.sync(node_id, statuses, lines))
        return out

    async def node_services(self, node_id: str) -> list[dict[str, Any]]:
        from corral.coordinator.services import Services
        return await self._call(node_id, lambda: Services(self.coord).for_node(node_id))

    async def close(self) -> None:
        return None
