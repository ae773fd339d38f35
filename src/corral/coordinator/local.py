"""The standalone wiring of the agent protocol (``corral up``): an agent's Transport whose calls go
straight into the coordinator's services, through the same checks as over HTTP (the node's secret)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

from corral.agent.transport import REJECTED, Refused, Rejected, UnknownNode
from corral.coordinator.errors import Forbidden, NotFound, ServiceError, Unauthorized
from corral.coordinator.service import Coordinator
from corral.coordinator.services import Services
from corral.coordinator.wakeups import NodeWakeups
from corral.domain.agentwire import ContainerStatus, LogLine, NodeInfo, PodLogLine, PodStatus, Update

T = TypeVar("T")


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
        out = {"node_id": row["id"], "heartbeat_interval": s.heartbeat_interval, "node_ttl": s.node_ttl,
               "kept": row.get("kept") or {}}
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
        statuses = [PodStatus(p["instance_id"], p["pod_id"], p["phase"],
                              [ContainerStatus(**c) for c in p.get("containers") or ()], p.get("ts") or 0.0)
                    for p in body.get("pods") or ()]
        lines = [PodLogLine(**ln) for ln in body.get("logs") or ()]
        out: dict[str, Any] = await self._call(node_id, lambda: self.coord.pods.sync(node_id, statuses, lines))
        return out

    async def node_services(self, node_id: str) -> list[dict[str, Any]]:
        return await self._call(node_id, lambda: Services(self.coord).for_node(node_id))

    async def close(self) -> None:
        return None
