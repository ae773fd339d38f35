"""The HTTP server's protocol: uvicorn's httptools protocol, with a response's writes sent together.

uvicorn writes a response's status line and headers, then its body, as two writes: two ``send`` system
calls and, with ``TCP_NODELAY``, two packets, the client woken twice. On a small answer (a probe, a
submitted job) those calls were the biggest single cost of a request (docs/benchmarks.md). Here the writes
made in one turn of the event loop are joined and leave in one call at the end of that turn: a response's
head and body together. More than ``FLUSH_AT`` bytes leave at once, so a big or streamed body meets the
socket's flow control as before. A connection upgraded to a WebSocket is handed the socket's own transport.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

FLUSH_AT = 64 * 1024


class _JoinedWrites:
    """A transport whose writes wait for the end of the event loop's turn, then leave as one."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._parts: list[bytes] = []
        self._size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._parts:
            self._loop.call_soon(self.flush)
        self._parts.append(bytes(data))
        self._size += len(data)
        if self._size >= FLUSH_AT:
            self.flush()

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if not self._parts:
            return
        data = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        self._parts.clear()
        self._size = 0
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._parts.clear()
        self._size = 0
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._size

    def __getattr__(self, name: str) -> Any:  # everything else is the transport's
        return getattr(self._transport, name)


class JoinedWritesProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over ``_JoinedWrites`` (``uvicorn.Config(http=...)``)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_JoinedWrites(transport, self.loop))  # type: ignore[arg-type]

    def handle_websocket_upgrade(self) -> None:
        # A WebSocket's protocol gets the socket's own transport (the websockets library drives it through
        # a stream writer of its own): what was written before goes first.
        joined = self.transport
        if isinstance(joined, _JoinedWrites):
            joined.flush()
            self.transport = joined._transport
        super().handle_websocket_upgrade()
