"""Rate limits for any route, per client address, on the `limits` library.

A rule names a method and a path (exact, or a prefix ending in ``*``) and a bucket. A bucket is either a
rate (``10/minute``: a sliding window counter per client address) or a number of concurrent connections
(for WebSockets). Requests over a rate get 429 with ``Retry-After``; every limited response carries
``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (UNIX seconds).

Memory stays bounded however many addresses call: at most ``max_clients`` addresses are tracked, the least
recently seen one is forgotten first, and IPv6 clients count per /64 network (one host owns a /64).

Configured from the environment (see docs/api/cloudai.md):
``CORRAL_RATE_LIMIT`` (``on``/``off``), ``CORRAL_RATE_LIMIT_SUBMIT``, ``CORRAL_RATE_LIMIT_READ``,
``CORRAL_RATE_LIMIT_WEBSOCKETS``, ``CORRAL_RATE_LIMIT_CLIENTS`` and ``CORRAL_RATE_LIMIT_ROUTES``, a list of
``METHOD PATH=BUCKET-OR-RATE`` separated by ``;`` that limits any other route.
"""

from __future__ import annotations

import ipaddress
import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.api.asgi import refuse

# (status, message, headers) -> the response in the shape of the API the route belongs to.
Render = Callable[[int, str, dict[str, str]], Response]
METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "WS", "*"}


def problem(status: int, message: str, headers: dict[str, str]) -> Response:
    return JSONResponse({"type": "about:blank", "title": "Too many requests", "status": status,
                         "detail": message}, status_code=status, headers=headers,
                        media_type="application/problem+json")


@dataclass(frozen=True)
class Rule:
    method: str  # GET, POST, ..., WS for a WebSocket, * for any
    path: str  # exact, or a prefix when it ends with '*'
    bucket: str

    def matches(self, method: str, path: str) -> bool:
        if self.method != "*" and self.method != method:
            return False
        if self.path.endswith("*"):
            return path.startswith(self.path[:-1])
        return path == self.path


@dataclass
class Bucket:
    name: str
    rate: RateLimitItem | None = None  # requests per window
    concurrent: int | None = None  # open connections at once

    def describe(self) -> str:
        if self.rate is not None:
            return f"{self.rate.amount} per {self.rate.multiples} {self.rate.GRANULARITY.name}"
        return f"{self.concurrent} at once"


def make_bucket(name: str, spec: str) -> Bucket:
    spec = spec.strip()
    if spec.isdigit():
        return Bucket(name, concurrent=int(spec))
    try:
        return Bucket(name, rate=parse(spec))
    except ValueError as e:
        raise ValueError(f"rate limit '{name}': '{spec}' is not a rate such as 10/minute or a count") from e


@dataclass
class Config:
    enabled: bool = True
    buckets: dict[str, Bucket] = field(default_factory=dict)
    rules: list[Rule] = field(default_factory=list)
    max_clients: int = 4096

    @classmethod
    def from_env(cls, defaults: Mapping[str, str], rules: Sequence[Rule],
                 env: Mapping[str, str] | None = None) -> Config:
        """``defaults``: bucket name -> rate or count; ``CORRAL_RATE_LIMIT_<NAME>`` overrides each."""
        env = os.environ if env is None else env
        enabled = env.get("CORRAL_RATE_LIMIT", "on").strip().lower() not in ("off", "0", "false", "no")
        buckets = {n: make_bucket(n, env.get(f"CORRAL_RATE_LIMIT_{n.upper()}", v)) for n, v in defaults.items()}
        out = list(rules)
        for i, item in enumerate(x.strip() for x in env.get("CORRAL_RATE_LIMIT_ROUTES", "").split(";")):
            if not item:
                continue
            route, _, limit = item.partition("=")
            method, _, path = route.strip().partition(" ")
            method, path, limit = method.upper(), path.strip(), limit.strip()
            if method not in METHODS or not path.startswith("/") or not limit:
                raise ValueError(f"CORRAL_RATE_LIMIT_ROUTES: '{item}' is not 'METHOD /path=bucket-or-rate'")
            if limit not in buckets:
                buckets[f"route{i}"] = make_bucket(f"route{i}", limit)
                limit = f"route{i}"
            out.insert(0, Rule(method, path, limit))  # configured rules come first
        max_clients = int(env.get("CORRAL_RATE_LIMIT_CLIENTS", "4096"))
        return cls(enabled, buckets, out, max(max_clients, 1))


def client_key(scope: Scope) -> str:
    client = scope.get("client")
    host = str(client[0]) if client else "unknown"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class Limiter:
    """The counters: rates in `limits`' memory storage, open connections in a dict."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.storage = MemoryStorage()
        self.strategy = SlidingWindowCounterRateLimiter(self.storage)
        self.clients: OrderedDict[str, None] = OrderedDict()  # recently seen addresses, oldest first
        self.open: dict[tuple[str, str], int] = {}

    async def _track(self, key: str) -> None:
        self.clients[key] = None
        self.clients.move_to_end(key)
        while len(self.clients) > self.config.max_clients:
            old, _ = self.clients.popitem(last=False)
            for b in self.config.buckets.values():
                if b.rate is not None:
                    await self.strategy.clear(b.rate, b.name, old)

    async def hit(self, bucket: Bucket, key: str) -> tuple[bool, dict[str, str]]:
        """Counts one request; returns whether it is allowed, and the headers to send."""
        assert bucket.rate is not None
        await self._track(key)
        ok = await self.strategy.hit(bucket.rate, bucket.name, key)
        reset, remaining = await self.strategy.get_window_stats(bucket.rate, bucket.name, key)
        headers = {"X-RateLimit-Limit": str(bucket.rate.amount), "X-RateLimit-Remaining": str(remaining),
                   "X-RateLimit-Reset": str(math.ceil(reset))}
        if not ok:
            headers["Retry-After"] = str(max(1, math.ceil(reset - time.time())))
        return ok, headers

    def enter(self, bucket: Bucket, key: str) -> bool:
        assert bucket.concurrent is not None
        n = self.open.get((bucket.name, key), 0)
        if n >= bucket.concurrent:
            return False
        self.open[(bucket.name, key)] = n + 1
        return True

    def leave(self, bucket: Bucket, key: str) -> None:
        n = self.open.get((bucket.name, key), 1) - 1
        if n > 0:
            self.open[(bucket.name, key)] = n
        else:
            self.open.pop((bucket.name, key), None)


class RateLimitMiddleware:
    """Pure ASGI, so it sees WebSocket handshakes too. ``renderers``: (path prefix, render) pairs that give
    each API its own error shape; other paths get problem+json."""

    def __init__(self, app: ASGIApp, config: Config, renderers: Sequence[tuple[str, Render]] = ()) -> None:
        self.app = app
        self.limiter = Limiter(config)
        self.renderers = list(renderers)

    def _render(self, path: str) -> Render:
        return next((r for prefix, r in self.renderers if path.startswith(prefix)), problem)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cfg = self.limiter.config
        if scope["type"] not in ("http", "websocket") or not cfg.enabled:
            await self.app(scope, receive, send)
            return
        method = "WS" if scope["type"] == "websocket" else str(scope["method"])
        path = str(scope["path"])
        rule = next((r for r in cfg.rules if r.matches(method, path)), None)
        bucket = cfg.buckets.get(rule.bucket) if rule else None
        if bucket is None:
            await self.app(scope, receive, send)
            return
        key = client_key(scope)
        if bucket.concurrent is not None:
            if not self.limiter.enter(bucket, key):
                msg = f"at most {bucket.concurrent} connections at once from one address on {path}"
                await self._deny(scope, receive, send, msg, {"Retry-After": "5",
                                                             "X-RateLimit-Limit": str(bucket.concurrent),
                                                             "X-RateLimit-Remaining": "0"})
                return
            try:
                await self.app(scope, receive, send)
            finally:
                self.limiter.leave(bucket, key)
            return
        ok, headers = await self.limiter.hit(bucket, key)
        if not ok:
            msg = f"rate limit exceeded: {bucket.describe()} per address; retry in {headers['Retry-After']}s"
            await self._deny(scope, receive, send, msg, headers)
            return
        raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *raw]}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _deny(self, scope: Scope, receive: Receive, send: Send, msg: str, headers: dict[str, str]) -> None:
        await refuse(scope, receive, send, self._render(str(scope["path"]))(429, msg, headers), msg)


def install(app: Any, defaults: Mapping[str, str], rules: Sequence[Rule],
            renderers: Sequence[tuple[str, Render]] = ()) -> Config:
    config = Config.from_env(defaults, rules)
    app.add_middleware(RateLimitMiddleware, config=config, renderers=renderers)
    return config
