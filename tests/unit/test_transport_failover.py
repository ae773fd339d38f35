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


def test_a_coordinator_that_answers_but_cannot_serve_sends_the_worker_to_the_next() -> None:
    """A coordinator cut off from its database still accepts connections but answers 5xx: with several
    coordinators the worker asks the next at once (and stays there); alone, it gets the answer."""
    async def run() -> None:
        seen: list[str] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request.url.host)
            if request.url.host in ("a", "c"):
                return httpx.Response(500 if request.url.host == "a" else 503, json={"error": "database"})
            return httpx.Response(200, json={"stop": ["x"], "log_full": []})

        t = HttpTransport(["http://a", "http://b"])
        await t.client.aclose()
        t.client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        assert await t.heartbeat("n1", [], {}) == ["x"]
        assert seen == ["a", "b"] and t.server == "http://b"
        assert await t.heartbeat("n1", [], {}) == ["x"] and seen[-1] == "b"
        await t.close()

        both = HttpTransport(["http://a", "http://c"])  # none can serve: the last answer is the caller's
        await both.client.aclose()
        both.client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        with pytest.raises(httpx.HTTPStatusError):
            await both.heartbeat("n1", [], {})
        await both.close()
        alone = HttpTransport("http://a")
        await alone.client.aclose()
        alone.client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        with pytest.raises(httpx.HTTPStatusError):
            await alone.heartbeat("n1", [], {})
        assert alone.server == "http://a"
        await alone.close()

    asyncio.run(run())


def test_a_request_in_flight_to_a_coordinator_found_gone_is_given_up_at_once() -> None:
    """A cut cable sends no reset: a long poll in flight to the lost coordinator would wait out its read
    timeout. Once another request finds that coordinator gone, the waiting one is given up and the next call
    goes to the coordinator moved to."""
    async def run() -> None:
        hang = asyncio.Event()

        async def handler(request: httpx.Request) -> httpx.Response:
            if request.url.host == "a" and request.url.path.endswith("/poll"):
                await hang.wait()  # never answered
            if request.url.host == "a":
                raise httpx.ConnectError("network is unreachable", request=request)
            return httpx.Response(200, json={"work": [], "stop": [], "log_full": []})

        t = HttpTransport(["http://a", "http://b"])
        await t.client.aclose()
        t.client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        poll = asyncio.ensure_future(t.poll("n1", [], 30))
        await asyncio.sleep(0.05)
        assert not poll.done()
        assert await t.heartbeat("n1", [], {}) == []  # a cannot be reached: sent to b, the worker moves
        with pytest.raises(httpx.ReadError, match="moved to http://b"):
            await asyncio.wait_for(poll, 2)
        assert await t.poll("n1", [], 30) == ([], [])  # the next poll goes to b
        await t.close()

    asyncio.run(run())
