"""The rate limiter: its configuration, client keys, and memory that stays bounded."""

from __future__ import annotations

import asyncio

import pytest

from corral.api.ratelimit import Config, Limiter, Rule, client_key

DEFAULTS = {"submit": "10/minute", "read": "60/minute", "websockets": "5"}


def test_config_from_environment() -> None:
    cfg = Config.from_env(DEFAULTS, [Rule("POST", "/api/tasks", "submit")],
                          {"CORRAL_RATE_LIMIT_SUBMIT": "3/second",
                           "CORRAL_RATE_LIMIT_ROUTES": "post /v1/jobs=submit; GET /v1/*=100/minute"})
    assert cfg.enabled and cfg.buckets["submit"].rate is not None and cfg.buckets["submit"].rate.amount == 3
    assert cfg.buckets["websockets"].concurrent == 5
    assert [r.path for r in cfg.rules] == ["/v1/*", "/v1/jobs", "/api/tasks"]
    assert cfg.rules[1].matches("POST", "/v1/jobs") and not cfg.rules[1].matches("GET", "/v1/jobs")
    assert cfg.rules[0].matches("GET", "/v1/nodes/x")
    assert not Config.from_env(DEFAULTS, [], {"CORRAL_RATE_LIMIT": "off"}).enabled
    with pytest.raises(ValueError, match="not a rate"):
        Config.from_env(DEFAULTS, [], {"CORRAL_RATE_LIMIT_READ": "often"})
    with pytest.raises(ValueError, match="METHOD /path"):
        Config.from_env(DEFAULTS, [], {"CORRAL_RATE_LIMIT_ROUTES": "/v1/jobs"})


def test_client_keys() -> None:
    assert client_key({"client": ("10.1.2.3", 5)}) == "10.1.2.3"
    # One IPv6 host owns a /64: it counts as one client, whatever address it picks in it.
    assert client_key({"client": ("2001:db8::1", 5)}) == client_key({"client": ("2001:db8::ffff:1", 6)})
    assert client_key({"client": ("::ffff:10.0.0.1", 5)}) == "10.0.0.1"
    assert client_key({}) == "unknown"


def test_limits_and_memory_stay_bounded_over_many_addresses() -> None:
    async def run() -> None:
        cfg = Config.from_env(DEFAULTS, [], {"CORRAL_RATE_LIMIT_CLIENTS": "100"})
        limiter = Limiter(cfg)
        submit = cfg.buckets["submit"]
        results = [(await limiter.hit(submit, "1.1.1.1"))[0] for _ in range(11)]
        assert results == [True] * 10 + [False]
        ok, headers = await limiter.hit(submit, "1.1.1.1")
        assert not ok and int(headers["Retry-After"]) >= 1 and headers["X-RateLimit-Remaining"] == "0"
        for i in range(20_000):
            await limiter.hit(submit, f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
        assert len(limiter.clients) == 100
        # a sliding window keeps two counters per address and limit
        assert len(limiter.storage.storage) <= 2 * 100
        ws = cfg.buckets["websockets"]
        assert all(limiter.enter(ws, "2.2.2.2") for _ in range(5)) and not limiter.enter(ws, "2.2.2.2")
        for _ in range(5):
            limiter.leave(ws, "2.2.2.2")
        assert limiter.open == {}

    asyncio.run(run())
