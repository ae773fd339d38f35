"""How an agent speaks to its coordinator: over HTTP (a remote worker) or in-process (standalone)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

import httpx

from corral.coordinator.errors import NotFound
from corral.coordinator.service import Coordinator, LogLine, NodeInfo, Update
from corral.coordinator.wakeups import NodeWakeups


class UnknownNode(Exception):
    """The coordinator does not know this node (its state was lost): register again."""


class Transport(Protocol):
    async def register(self, info: dict[str, Any], running: list[str]) -> dict[str, Any]: ...
    async def heartbeat(self, node_id: str, running: list[str], usage: dict[str, Any]) -> list[str]: ...
    async def poll(self, node_id: str, known: list[str], wait: float) -> tuple[list[dict[str, Any]], list[str]]: ...
    async def report(self, node_id: str, updates: list[dict[str, Any]], logs: list[dict[str, Any]]) -> list[str]:
        """Send a batch; returns the executions whose stored log is full (their later output is not
        wanted)."""
        ...
    async def close(self) -> None: ...


class HttpTransport:
    def __init__(self, server: str, token: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.AsyncClient(base_url=server.rstrip("/"), headers=headers,
                                        timeout=httpx.Timeout(10.0, read=75.0))

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        r = await self.client.post(path, json=body)
        if r.status_code == 404 and "/nodes/" in path:
            raise UnknownNode(r.text)
        r.raise_for_status()
        return r.json() if r.content else None

    async def register(self, info: dict[str, Any], running: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = await self._post("/v1/agent/register", {**info, "running": running})
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

    async def close(self) -> None:
        await self.client.aclose()


class LocalTransport:
    """The standalone wiring: the same calls, straight into the coordinator's services."""

    def __init__(self, coord: Coordinator, wakeups: NodeWakeups) -> None:
        self.coord = coord
        self.wakeups = wakeups

    async def register(self, info: dict[str, Any], running: list[str]) -> dict[str, Any]:
        row = await asyncio.to_thread(self.coord.register, NodeInfo(**info), running)
        s = self.coord.settings
        return {"node_id": row["id"], "heartbeat_interval": s.heartbeat_interval, "node_ttl": s.node_ttl}

    async def heartbeat(self, node_id: str, running: list[str], usage: dict[str, Any]) -> list[str]:
        try:
            return await asyncio.to_thread(self.coord.heartbeat, node_id, running, usage)
        except NotFound as e:
            raise UnknownNode(str(e)) from e

    async def poll(self, node_id: str, known: list[str], wait: float) -> tuple[list[dict[str, Any]], list[str]]:
        deadline = time.monotonic() + wait
        while True:
            ev = self.wakeups.arm(node_id)
            try:
                work, stop = await asyncio.to_thread(self.coord.poll, node_id, known)
            except NotFound as e:
                raise UnknownNode(str(e)) from e
            left = deadline - time.monotonic()
            if work or stop or left <= 0:
                return work, stop
            await self.wakeups.wait(ev, left)

    async def report(self, node_id: str, updates: list[dict[str, Any]], logs: list[dict[str, Any]]) -> list[str]:
        return await asyncio.to_thread(self.coord.report, node_id, [Update(**u) for u in updates],
                                       [LogLine(**ln) for ln in logs])

    async def close(self) -> None:
        return None
