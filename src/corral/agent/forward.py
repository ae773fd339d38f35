"""NodePort forwarding on a worker: each NodePort service's node port, opened here, forwarded over TCP to
the service's ready endpoints.

An asyncio stream proxy: no well-kept Python library embeds an L4 forwarder with a backend set that changes
under it (the choices are whole programs: HAProxy, socat, pproxy), and the event loop the worker already
runs does it in a page. Per node port:

- a new connection goes to the next endpoint in turn (round robin over the endpoints the coordinator gave
  last); if that endpoint refuses, does not answer within ``connect_timeout``, or closes the connection
  before answering a byte, the next one is tried (with what the client sent so far, up to 64 KiB), so a
  pod that died a moment ago costs a retry, not a failed request;
- an endpoint that is no longer listed (not ready, or gone) gets no new connection; a connection made to
  it that has had no answer yet moves to the next endpoint the same way (a killed pod's published port
  can accept and then stay silent for seconds); connections it has answered are left to end by
  themselves, as kube-proxy does;
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
REPLAY_MAX = 64 * 1024  # what a client sent that is kept to send again to another endpoint
Backend = tuple[str, int]


@dataclass
class _Sent:
    """What the client sent on a connection before any endpoint answered it."""

    buf: bytearray | None = field(default_factory=bytearray)  # None: too much, or answered
    eof: bool = False  # the client has finished sending


@dataclass
class _Port:
    port: int
    server: asyncio.Server | None = None
    backends: list[Backend] = field(default_factory=list)
    turn: int = 0
    service: str = ""
    failing: bool = False  # the last try to open the port failed (logged once, tried at every apply)
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # set (and replaced) when backends change

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
                entry.changed.set()
                entry.changed = asyncio.Event()
            if entry.server is None:
                await self._open(entry)

    async def _open(self, entry: _Port) -> None:
        try:
            entry.server = await asyncio.start_server(lambda r, w: self._accept(entry, r, w), self.host,
                                                      entry.port, reuse_address=True)
            entry.failing = False
            log.info("service %s: forwarding node port %d", entry.service, entry.port)
        except OSError as e:  # tried again at the next apply
            if not entry.failing:
                log.warning("service %s: cannot open node port %d (%s); trying again every second",
                            entry.service, entry.port, e)
            entry.failing = True

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
        """Connect to an endpoint and copy both ways. An endpoint that refuses, does not answer the connect,
        or closes the connection before sending a byte (a pod killed a moment ago: Docker's proxy may still
        accept for it) is left for the next one, to which what the client sent so far is sent again (up
        to REPLAY_MAX bytes; past that, or once the endpoint has answered, the connection is its own)."""
        sent = _Sent()
        up: asyncio.StreamWriter | None = None
        try:
            for host, port in entry.order():
                if (host, port) not in entry.backends:  # withdrawn while an earlier one was tried
                    continue
                try:
                    up_r, w = await asyncio.wait_for(asyncio.open_connection(host, port), self.connect_timeout)
                except (OSError, TimeoutError):
                    continue
                up = w
                last = [time.monotonic()]
                to_up: asyncio.Task[None] | None = None
                try:
                    if sent.buf:
                        w.write(bytes(sent.buf))
                        await w.drain()
                    if sent.eof:
                        w.write_eof()
                    else:
                        to_up = asyncio.create_task(self._pump(reader, w, last, sent))
                    first = await self._first(entry, (host, port), up_r, last)
                except (ConnectionError, OSError):
                    first = b""
                if first or sent.buf is None:  # answered (or too far along to replay): this one it is
                    sent.buf = None
                    if first:
                        writer.write(first)
                        await writer.drain()
                        await asyncio.gather(*([to_up] if to_up else []), self._pump(up_r, writer, last))
                    return
                if to_up is not None:
                    to_up.cancel()
                    await asyncio.gather(to_up, return_exceptions=True)
                w.transport.abort()
                up = None
            self.refused += 1
        except Exception:  # a reset on either side ends the connection, and only it
            pass
        finally:
            writer.transport.abort()
            if up is not None:
                up.transport.abort()

    async def _first(self, entry: _Port, backend: Backend, src: asyncio.StreamReader, last: list[float]) -> bytes:
        """The endpoint's first chunk, or b"" (as if it had closed) once it is withdrawn from the port
        before sending one."""
        read = asyncio.ensure_future(self._read(src, last))
        waiter: asyncio.Future[Any] | None = None
        try:
            while True:
                waiter = asyncio.ensure_future(entry.changed.wait())
                await asyncio.wait((read, waiter), return_when=asyncio.FIRST_COMPLETED)
                if read.done():
                    return read.result()
                if backend not in entry.backends:
                    return b""
        finally:
            for f in (read, waiter):
                if f is not None and not f.done():
                    f.cancel()
            await asyncio.gather(read, *([waiter] if waiter else []), return_exceptions=True)

    async def _read(self, src: asyncio.StreamReader, last: list[float]) -> bytes:
        """The next chunk from ``src`` (b"" at its end); TimeoutError once the connection has been idle
        both ways for idle_timeout."""
        while True:
            try:
                return await asyncio.wait_for(src.read(CHUNK), self.idle_timeout)
            except TimeoutError:
                if time.monotonic() - last[0] >= self.idle_timeout:
                    raise

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, last: list[float],
                    sent: _Sent | None = None) -> None:
        """Copy one direction until its end of stream (then half-close the other side). ``sent``: keep a
        copy of what passes, for a retry on another endpoint, while it may still be needed."""
        while True:
            data = await self._read(src, last)
            if not data:
                if sent is not None:
                    sent.eof = True
                if dst.can_write_eof():
                    with contextlib.suppress(OSError):
                        dst.write_eof()
                return
            last[0] = time.monotonic()
            if sent is not None and sent.buf is not None:
                sent.buf += data
                if len(sent.buf) > REPLAY_MAX:
                    sent.buf = None
            dst.write(data)
            await dst.drain()
