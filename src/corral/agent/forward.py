"""NodePort forwarding on a worker: each NodePort service's node port, opened here, forwarded over TCP to
the service's ready endpoints.

An asyncio stream proxy: no well-kept Python library embeds an L4 forwarder with a backend set that changes
under it (the choices are whole programs: HAProxy, socat, pproxy), and the event loop the worker already
runs does it in a page. Per node port:

- a new connection goes to the next endpoint in turn (round robin over the endpoints the coordinator gave
  last); if that endpoint refuses or does not answer within ``connect_timeout``, the next one is tried, so a
  pod that died a moment ago costs a retry, not a failed request;
- an endpoint that is no longer listed (not ready, or gone) gets no new connection; connections already
  made to it are left to end by themselves, as kube-proxy does;
- bounds: at most ``max_connections`` at once on the node (more are accepted and closed at once), and a
  connection idle both ways for ``idle_timeout`` seconds is closed; data moves in chunks of 64 KiB, each
  written and drained before the next is read, so a slow side slows the other instead of filling memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("corral.agent")
CHUNK = 64 * 1024
Backend = tuple[str, int]


@dataclass
class _Port:
    port: int
    server: asyncio.Server | None = None
    backends: list[Backend] = field(default_factory=list)
    turn: int = 0
    service: str = ""

    def order(self) -> list[Backend]:
        """The backends to try for a new connection: the next in turn first, then the others."""
        if not self.backends:
            return []
        i = self.turn % len(self.backends)
        self.turn = i + 1
        return self.backends[i:] + self.backends[:i]


class Forwarder:
    def __init__(self, host: str = "0.0.0.0", *, max_connections: int = 1024, idle_timeout: float = 300.0,
                 connect_timeout: float = 2.0) -> None:
        self.host = host
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.ports: dict[int, _Port] = {}
        self.conns: set[asyncio.Task[None]] = set()
        self.refused = 0  # connections closed at once: over max_connections, or no endpoint answered

    # -- what to forward ----------------------------------------------------------------------------
    async def apply(self, services: Iterable[dict[str, Any]]) -> None:
        """Make the open ports and their backends what ``services`` says (the coordinator's answer to
        GET /v1/agent/nodes/{id}/services): open new node ports, close those no longer listed, and
        replace each port's endpoints."""
        want: dict[int, tuple[str, list[Backend]]] = {}
        for svc in services:
            for p in svc.get("ports") or ():
                backends = [(str(e["address"]), int(e["port"])) for e in p.get("endpoints") or ()]
                want[int(p["nodePort"])] = (str(svc.get("id", "")), backends)
        for port in [p for p in self.ports if p not in want]:
            await self._close_port(self.ports.pop(port))
        for port, (service, backends) in want.items():
            entry = self.ports.setdefault(port, _Port(port))
            entry.service = service
            if entry.backends != backends:
                entry.backends = backends
            if entry.server is None:
                await self._open(entry)

    async def _open(self, entry: _Port) -> None:
        try:
            entry.server = await asyncio.start_server(lambda r, w: self._accept(entry, r, w), self.host,
                                                      entry.port, reuse_address=True)
            log.info("service %s: forwarding node port %d", entry.service, entry.port)
        except OSError as e:  # tried again at the next apply
            log.warning("service %s: cannot open node port %d (%s)", entry.service, entry.port, e)

    async def _close_port(self, entry: _Port) -> None:
        if entry.server is not None:
            entry.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(entry.server.wait_closed(), 1.0)
            log.info("service %s: node port %d closed", entry.service, entry.port)

    async def close(self) -> None:
        for entry in list(self.ports.values()):
            await self._close_port(entry)
        self.ports.clear()
        for t in list(self.conns):
            t.cancel()
        await asyncio.gather(*self.conns, return_exceptions=True)

    # -- connections --------------------------------------------------------------------------------
    def _accept(self, entry: _Port, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.conns) >= self.max_connections:
            self.refused += 1
            writer.transport.abort()
            return
        task = asyncio.create_task(self._serve(entry, reader, writer))
        self.conns.add(task)
        task.add_done_callback(self.conns.discard)

    async def _serve(self, entry: _Port, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            for host, port in entry.order():
                try:
                    up = await asyncio.wait_for(asyncio.open_connection(host, port), self.connect_timeout)
                    break
                except (OSError, TimeoutError):
                    continue
            if up is None:
                self.refused += 1
                return
            last = [time.monotonic()]
            await asyncio.gather(self._pump(reader, up[1], last), self._pump(up[0], writer, last))
        except Exception:  # a reset on either side ends the connection, and only it
            pass
        finally:
            for w in (writer, up[1] if up else None):
                if w is not None:
                    w.transport.abort()

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, last: list[float]) -> None:
        """Copy one direction until its end of stream (then half-close the other side), or until the
        connection has been idle both ways for idle_timeout."""
        while True:
            try:
                data = await asyncio.wait_for(src.read(CHUNK), self.idle_timeout)
            except TimeoutError:
                if time.monotonic() - last[0] >= self.idle_timeout:
                    raise
                continue
            if not data:
                if dst.can_write_eof():
                    with contextlib.suppress(OSError):
                        dst.write_eof()
                return
            last[0] = time.monotonic()
            dst.write(data)
            await dst.drain()
