"""A worker given several coordinator URLs moves to the next when its own cannot be reached."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from corral.agent.transport import HttpTransport


def test_a_refused_connection_moves_the_worker_to_the_next_coordinator() -> None:
    async def run() -> None:
        seen: list[str] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request.url.host)
            if request.url.host == "a":
                raise httpx.ConnectError("refused", request=request)
            if request.url.host == "b" and request.url.path.endswith("/report"):
                raise httpx.ReadError("connection reset", request=request)
            return httpx.Response(200, json={"stop": [], "log_full": []})

        t = HttpTransport(["http://a", "http://b", "http://c"])
        await t.client.aclose()
        t.client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        assert await t.heartbeat("n1", [], {}) == []  # a refuses: sent to b at once
        assert seen == ["a", "b"] and t.server == "http://b"
        # The connection breaks during a report: it may have been applied, so it is not resent here (the
        # agent sends it again, as after any error), but the next call goes to the next coordinator.
        with pytest.raises(httpx.ReadError):
            await t.report("n1", [], [])
        assert t.server == "http://c"
        assert await t.report("n1", [], []) == []
        assert seen[-1] == "c"
        await t.close()

    asyncio.run(run())


def test_when_no_coordinator_answers_the_error_says_so() -> None:
    async def run() -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("refused", request=request)

        t = HttpTransport(["http://a", "http://b"])
        await t.client.aclose()
        t.client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        with pytest.raises(httpx.ConnectError, match="none of the coordinators"):
            await t.heartbeat("n1", [], {})
        await t.close()
        with pytest.raises(ValueError):
            HttpTransport([])

    asyncio.run(run())
