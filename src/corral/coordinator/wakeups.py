"""Wakes agents' long-polls when their node has new work or cancels, from any thread; with several
coordinators on PostgreSQL, across them (``PgBroadcast``: LISTEN/NOTIFY)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from corral.store.sql import Tx

log = logging.getLogger("corral.coordinator")


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


CHANNEL = "corral_wake"
_PAYLOAD_MAX = 7000  # bytes of node ids per NOTIFY (PostgreSQL's limit is 8000)


def payloads(origin: str, nodes: set[str], kick: bool) -> list[str]:
    """The NOTIFY payloads that tell the other coordinators which nodes have news, and whether the leader
    should run a scheduling pass: ``origin|k|id,id,...``, split to stay under PostgreSQL's limit."""
    out: list[str] = []
    head = f"{origin}|{'k' if kick else ''}|"
    part: list[str] = []
    size = 0
    for nid in sorted(nodes):
        if part and size + len(nid) + 1 > _PAYLOAD_MAX:
            out.append(head + ",".join(part))
            part, size = [], 0
        part.append(nid)
        size += len(nid) + 1
    if part or kick:
        out.append(head + ",".join(part))
    return out


def parse(payload: str) -> tuple[str, bool, set[str]]:
    origin, kick, ids = (payload.split("|", 2) + ["", ""])[:3]
    return origin, kick == "k", {i for i in ids.split(",") if i}


class PgBroadcast:
    """Wake-ups across the coordinators sharing a PostgreSQL database: what one coordinator learns (a node
    has new work, a submission wants a scheduling pass) reaches the others through ``LISTEN/NOTIFY`` within
    milliseconds. Sending happens in a thread of its own, so a burst of submissions costs one NOTIFY and no
    request waits on it; a listener thread hands what others send to ``on_nodes`` and ``on_kick``."""

    def __init__(self, url: str, origin: str, on_nodes: Callable[[set[str]], None],
                 on_kick: Callable[[], None]) -> None:
        self.url = url
        self.origin = origin
        self.on_nodes = on_nodes
        self.on_kick = on_kick
        self._lock = threading.Lock()
        self._nodes: set[str] = set()
        self._kick = False
        self._send = threading.Event()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._sender, name="corral-notify", daemon=True),
                         threading.Thread(target=self._listener, name="corral-listen", daemon=True)]
        self.listening = threading.Event()

    def nodes_changed(self, ids: set[str]) -> None:
        with self._lock:
            self._nodes |= ids
        self._send.set()

    def kick(self) -> None:
        with self._lock:
            self._kick = True
        self._send.set()

    def announce(self, tx: Tx, ids: set[str]) -> bool:
        """Inside a write transaction: the NOTIFY that ``nodes_changed`` would send, sent by the database
        when the transaction commits (and not at all if it rolls back)."""
        for p in payloads(self.origin, ids, False):
            tx.notify(CHANNEL, p)
        return True

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        self._send.set()
        for t in self._threads:
            t.join(timeout=3)

    def _connect(self) -> Any:
        import psycopg  # PostgreSQL only

        return psycopg.connect(self.url, autocommit=True, connect_timeout=5)

    def _sender(self) -> None:
        conn = None
        while not self._stop.is_set():
            self._send.wait(1.0)
            self._send.clear()
            with self._lock:
                nodes, kick = self._nodes, self._kick
                self._nodes, self._kick = set(), False
            if not nodes and not kick:
                continue
            try:
                if conn is None or conn.closed:
                    conn = self._connect()
                for p in payloads(self.origin, nodes, kick):
                    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, p))
            except Exception as e:  # the database is away: the long-polls' own checks cover the gap
                log.warning("could not notify the other coordinators: %s", type(e).__name__)
                conn = None
                self._stop.wait(0.5)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _listener(self) -> None:
        while not self._stop.is_set():
            try:
                with self._connect() as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    while not self._stop.is_set():
                        for n in conn.notifies(timeout=0.5, stop_after=64):
                            origin, kick, ids = parse(n.payload)
                            if origin == self.origin:
                                continue
                            if ids:
                                self.on_nodes(ids)
                            if kick:
                                self.on_kick()
            except Exception as e:
                self.listening.clear()
                log.warning("listening for the other coordinators failed (%s); trying again", type(e).__name__)
                self._stop.wait(0.5)
