"""NodePort forwarding (corral.agent.forward) with real HTTP traffic: two backend processes, one killed
while requests flow; round robin; endpoints replaced; the connection cap and the idle timeout."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterator

import httpx
import pytest

from corral.agent.forward import Forwarder
from tests.harness import free_port
from tests.support import Backends, http_backends


@pytest.fixture
def backends() -> Iterator[Backends]:
    with http_backends("a", "b", host="127.0.0.1") as procs:
        yield procs


def _services(node_port: int, *ports: int) -> list[dict[str, object]]:
    return [{"id": "svc1", "ports": [{"nodePort": node_port, "endpoints": [
        {"address": "127.0.0.1", "port": p} for p in ports]}]}]


async def _get(client: httpx.AsyncClient, port: int) -> str:
    r = await client.get(f"http://127.0.0.1:{port}/", headers={"Connection": "close"})
    r.raise_for_status()
    return r.text


def test_round_robin_and_a_backend_killed_while_requests_flow(
        backends: Backends) -> None:
    async def main() -> None:
        fwd = Forwarder("127.0.0.1", connect_timeout=1.0)
        node_port = free_port()
        a, (pb, b) = backends["a"][1], backends["b"]
        await fwd.apply(_services(node_port, a, b))
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                seen = collections.Counter([await _get(client, node_port) for _ in range(10)])
                assert seen == {"a": 5, "b": 5}, seen  # one connection each, in turn
                # b dies; the coordinator has not said so yet: every request still gets an answer.
                os.kill(pb.pid, signal.SIGKILL)
                pb.wait()
                answers = await asyncio.gather(*(_get(client, node_port) for _ in range(20)))
                assert set(answers) == {"a"}
                # The endpoints now leave b out; a comes back as b: only the listed one is used.
                await fwd.apply(_services(node_port, a))
                assert {await _get(client, node_port) for _ in range(4)} == {"a"}
                # No endpoint at all: the connection is closed, not hung.
                await fwd.apply(_services(node_port))
                with pytest.raises(httpx.HTTPError):
                    await _get(client, node_port)
            # The service goes away: its node port is closed.
            await fwd.apply([])
            with pytest.raises(OSError):
                await asyncio.open_connection("127.0.0.1", node_port)
        finally:
            await fwd.close()

    asyncio.run(main())


def test_connection_cap_and_idle_timeout(backends: Backends) -> None:
    async def main() -> None:
        fwd = Forwarder("127.0.0.1", max_connections=2, idle_timeout=0.5)
        node_port = free_port()
        await fwd.apply(_services(node_port, backends["a"][1]))
        try:
            held = [await asyncio.open_connection("127.0.0.1", node_port) for _ in range(2)]
            deadline = time.monotonic() + 5
            while len(fwd.conns) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert len(fwd.conns) == 2
            r3, _ = await asyncio.open_connection("127.0.0.1", node_port)
            assert await asyncio.wait_for(r3.read(), 5) == b""  # over the cap: closed at once
            assert fwd.refused == 1
            # Idle both ways: closed by the forwarder after about idle_timeout.
            start = time.monotonic()
            for r, _ in held:
                assert await asyncio.wait_for(r.read(), 5) == b""
            assert 0.4 <= time.monotonic() - start < 3
            deadline = time.monotonic() + 5
            while fwd.conns and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert not fwd.conns
        finally:
            await fwd.close()

    asyncio.run(main())


async def _odd_endpoint_first(handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
                              then: int) -> tuple[asyncio.Server, Forwarder, int]:
    """An endpoint served by ``handler``, listed before the backend on port ``then``, behind a new
    forwarder: (that endpoint's server, the forwarder, its node port)."""
    odd = await asyncio.start_server(handler, "127.0.0.1", 0)
    fwd = Forwarder("127.0.0.1")
    node_port = free_port()
    await fwd.apply(_services(node_port, odd.sockets[0].getsockname()[1], then))
    return odd, fwd, node_port


def test_an_endpoint_that_closes_before_answering_is_retried_on_the_next(
        backends: Backends) -> None:
    """As Docker's proxy does for a container that just died: it accepts, reads, and closes."""
    async def main() -> None:
        async def accept_and_close(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await r.read(1024)
            w.close()

        closer, fwd, node_port = await _odd_endpoint_first(accept_and_close, backends["a"][1])
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                assert [await _get(client, node_port) for _ in range(6)] == ["a"] * 6
        finally:
            await fwd.close()
            closer.close()

    asyncio.run(main())


def test_a_silent_endpoint_withdrawn_mid_request_hands_the_request_to_the_next(
        backends: Backends) -> None:
    """A killed pod's published port can accept, read, and then say nothing for seconds. Once the
    coordinator withdraws that endpoint, a request waiting on it is sent to the next one at once."""
    async def main() -> None:
        async def accept_and_hang(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await r.read(1024)
            await asyncio.sleep(30)

        silent, fwd, node_port = await _odd_endpoint_first(accept_and_hang, backends["a"][1])
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                waiting = asyncio.ensure_future(_get(client, node_port))  # the silent one's turn
                await asyncio.sleep(0.5)
                assert not waiting.done()
                started = time.monotonic()
                await fwd.apply(_services(node_port, backends["a"][1]))
                assert await waiting == "a"
                assert time.monotonic() - started < 2
                # A request that endpoint had answered is its own: a withdrawal does not move it.
                assert [await _get(client, node_port) for _ in range(3)] == ["a"] * 3
        finally:
            await fwd.close()
            silent.close()

    asyncio.run(main())


def test_a_port_held_by_something_else_is_opened_once_it_is_free(
        backends: Backends) -> None:
    async def main() -> None:
        squatter = socket.socket()
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        node_port = squatter.getsockname()[1]
        fwd = Forwarder("127.0.0.1")
        try:
            await fwd.apply(_services(node_port, backends["a"][1]))
            assert fwd.ports[node_port].server is None and fwd.ports[node_port].failing
            squatter.close()
            await fwd.apply(_services(node_port, backends["a"][1]))  # the next read of the services
            async with httpx.AsyncClient(timeout=5) as client:
                assert await _get(client, node_port) == "a"
        finally:
            squatter.close()
            await fwd.close()

    asyncio.run(main())
