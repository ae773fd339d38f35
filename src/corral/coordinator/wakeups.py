"""Wakes agents' long-polls when their node has new work or cancels, from any thread."""

from __future__ import annotations

import asyncio
import contextlib


class NodeWakeups:
    """One asyncio event per node, set from any thread, awaited on the server's event loop."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: dict[str, asyncio.Event] = {}

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def notify(self, node_ids: set[str]) -> None:
        if self._loop is None or not node_ids:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self._loop.call_soon_threadsafe(self._set, node_ids)

    def _set(self, node_ids: set[str]) -> None:
        for nid in node_ids:
            ev = self._events.get(nid)
            if ev is not None:
                ev.set()

    def arm(self, node_id: str) -> asyncio.Event:
        """Clear the node's event before looking for work, so that a notify after the look is kept."""
        ev = self._events.setdefault(node_id, asyncio.Event())
        ev.clear()
        return ev

    @staticmethod
    async def wait(ev: asyncio.Event, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ev.wait(), timeout)
