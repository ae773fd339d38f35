"""The API's edge: what every request meets before a router, in one pure ASGI middleware.

In order: the ``Host`` check (a server on a loopback address answers only names of itself, which closes
DNS rebinding), the access token (``Authorization: Bearer``, the login cookie, or for a WebSocket
handshake ``?token=``), the ``Origin`` check (a WebSocket handshake, or a request that can change
something, from a page of another site is refused), the content types a browser may send cross-site
without asking (forms, ``text/plain``: a 415 on any route), and the size of the body, counted while it
streams in (chunked uploads included) and stopped with a 413 as soon as it passes the route's limit.

``GET /login?token=...`` (or the one-time ``?code=...`` printed at start) exchanges the token for an
HttpOnly, SameSite=Strict cookie and redirects to the dashboard (``/ui/``). See docs/api.md, "Access and limits".
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.api.asgi import refuse
from corral.api.body import media_type
from corral.auth.middleware import authorize
from corral.auth.rules import RuleTable
from corral.auth.service import Auth
from corral.coordinator.errors import ServiceError
from corral.domain.addresses import is_loopback

# (status, message, headers) -> the response in the shape of the API the path belongs to.
Render = Callable[[int, str, dict[str, str]], Response]
MiB = 1024 * 1024
# Probes answer without the token: they tell only that the process (or its store) is up.
PROBES = frozenset({"/healthz", "/readyz", "/health", "/health/live", "/health/ready"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# What a page of another site can send without a CORS preflight: no route of Corral reads these.
SIMPLE_TYPES = frozenset({"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})
# Bytes a request body may have, by (method, path prefix); the first match wins.
BODY_LIMITS: tuple[tuple[str, str, int], ...] = (
    ("POST", "/v1/agent/nodes/", 8 * MiB),  # a worker's report batch (the worker splits bigger ones)
    ("POST", "/v1/jobs", 10 * MiB),
    ("POST", "/v1/schedules", 10 * MiB),
)
DEFAULT_BODY_LIMIT = 1 * MiB  # the dialects, the agent's other calls, everything else
# Bytes of a request's path and query string together: every parameter has a bound far below it (the longest,
# nomad-lite's 1,024-character command filter, is at most 12 KiB percent-encoded); past it, a 414.
MAX_TARGET = 32 * 1024


def body_limit(method: str, path: str) -> int:
    return next((n for m, prefix, n in BODY_LIMITS if m == method and path.startswith(prefix)), DEFAULT_BODY_LIMIT)


class BodyTooLarge(ServiceError):
    status = 413
    title = "Payload too large"


def problem(status: int, message: str, headers: dict[str, str]) -> Response:
    titles = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 413: "Payload too large",
              414: "URI too long", 415: "Unsupported media type"}
    return JSONResponse({"type": "about:blank", "title": titles.get(status, "Error"), "status": status,
                         "detail": message}, status_code=status, headers=headers,
                        media_type="application/problem+json")


def host_name(value: str) -> str:
    """``Host`` or an origin's authority -> the lowercase name without the port or brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


@dataclass
class EdgeConfig:
    api_token: str | None = None
    # None: any Host. Otherwise the names (no port) a request's Host may give.
    allowed_hosts: frozenset[str] | None = None
    # Where the token is, for the 401's message.
    token_hint: str = "the server's access token"
    # Workers present the cluster token on /v1/agent/*, checked by that router: skip the API token there.
    agent_token_set: bool = False
    # Path prefixes whose routes check a credential of their own (the Stacks API's key): no token there.
    own_auth_prefixes: Sequence[str] = ()
    # Printed once at start: exchanged for the cookie by its first use.
    login_code: str | None = None
    renderers: Sequence[tuple[str, Render]] = field(default_factory=list)
    # The server's identities (corral.auth): who each caller is, and whether the route's rule lets it in.
    auth: Auth | None = None

    @classmethod
    def for_bind(cls, bind: str, extra_hosts: Sequence[str] = (), **kw: object) -> EdgeConfig:
        """The Host check is on when ``bind`` is a loopback address: its own names, plus ``extra_hosts``."""
        hosts = None
        if is_loopback(bind):
            hosts = frozenset({*LOOPBACK_NAMES, bind.strip("[]").lower(), *(h.strip().lower() for h in extra_hosts)})
        return cls(allowed_hosts=hosts, **kw)  # type: ignore[arg-type]


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, config: EdgeConfig) -> None:
        self.app = app
        self.config = config
        self.rules = RuleTable()

    def _render(self, path: str) -> Render:
        return next((r for prefix, r in self.config.renderers if path.startswith(prefix)), problem)

    async def _deny(self, scope: Scope, receive: Receive, send: Send, status: int, message: str,
                    headers: dict[str, str] | None = None) -> None:
        await refuse(scope, receive, send, self._render(str(scope["path"]))(status, message, headers or {}), message)

    def _cookie_name(self, scope: Scope) -> str:
        server = scope.get("server")
        return f"corral-token-{server[1]}" if server and server[1] else "corral-token"

    def _token_ok(self, scope: Scope, headers: Headers) -> bool:
        token = self.config.api_token
        assert token is not None
        given: list[str] = []
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            given.append(auth[7:].strip())
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed cookie header carries no token
            cookie = SimpleCookie()
        morsel = cookie.get(self._cookie_name(scope))
        if morsel is not None:
            given.append(morsel.value)
        if scope["type"] == "websocket":  # a browser's WebSocket cannot set a header
            given += parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [])
        return any(hmac.compare_digest(g.encode(), token.encode()) for g in given)

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        cfg = self.config
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        token, code = (query.get("token") or [""])[0], (query.get("code") or [""])[0]
        ok = bool(cfg.api_token) and (
            (token and hmac.compare_digest(token.encode(), str(cfg.api_token).encode()))
            or (code and cfg.login_code and hmac.compare_digest(code.encode(), cfg.login_code.encode())))
        if not ok:
            await self._deny(scope, receive, send, 401, "this login link is not valid (a one-time link works "
                             f"once): open /login?token=TOKEN with {cfg.token_hint}")
            return
        if code:
            cfg.login_code = None  # one time
        response = RedirectResponse("/ui/", status_code=303)
        response.set_cookie(self._cookie_name(scope), str(cfg.api_token), httponly=True, samesite="strict",
                            path="/")
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        target = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        if target > MAX_TARGET:  # before anything reads the query string or looks up the path
            await self._deny(scope, receive, send, 414, f"the request's path and query string are {target:,} bytes; "
                             f"at most {MAX_TARGET:,} are accepted")
            return
        cfg = self.config
        headers = Headers(scope=scope)
        path = str(scope["path"])
        method = "WS" if scope["type"] == "websocket" else str(scope["method"])
        host = headers.get("host")
        if cfg.allowed_hosts is not None and host is not None and host_name(host) not in cfg.allowed_hosts:
            await self._deny(scope, receive, send, 400, f"the Host '{host[:100]}' does not name this server, which "
                             "answers only to its loopback names (DNS rebinding is refused); to reach it by "
                             "another name, start it with --allow-host NAME")
            return
        if cfg.api_token and method == "GET" and path == "/login":
            await self._login(scope, receive, send)
            return
        if cfg.auth is not None:
            passthrough = [*cfg.own_auth_prefixes, *(("/v1/agent/",) if cfg.agent_token_set else ())]
            refusal = await authorize(cfg.auth, self.rules, scope, headers, self._cookie_name(scope), passthrough,
                                      cfg.token_hint)
            if refusal is not None:
                await self._deny(scope, receive, send, *refusal)
                return
        needs_token = cfg.auth is None and cfg.api_token and path not in PROBES and not (
            cfg.agent_token_set and path.startswith("/v1/agent/")) and not any(
            path == p or path.startswith(p + "/") for p in cfg.own_auth_prefixes)
        if needs_token and not self._token_ok(scope, headers):
            await self._deny(scope, receive, send, 401, "this server needs its access token: send 'Authorization: "
                             f"Bearer TOKEN' with {cfg.token_hint} (the corral commands read it by themselves), "
                             "or open the login link printed at start", {"WWW-Authenticate": "Bearer"})
            return
        origin = headers.get("origin")
        if origin is not None and (method == "WS" or method in UNSAFE) and not self._same_origin(
                origin, host, str(scope.get("scheme", "http"))):
            await self._deny(scope, receive, send, 403, f"the Origin '{origin[:100]}' is not this server: requests "
                             "from pages of other sites are refused")
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        ctype = media_type(headers.get("content-type"))
        if ctype in SIMPLE_TYPES:
            await self._deny(scope, receive, send, 415, f"content type '{ctype}' is not accepted: send "
                             "application/json (or YAML where a route documents it)")
            return
        await self._limited(scope, receive, send, body_limit(method, path), headers)

    @staticmethod
    def _same_origin(origin: str, host: str | None, scheme: str) -> bool:
        """Whether ``origin`` is the server the request was sent to: the same name and port."""
        if host is None:
            return False
        try:
            o = urlsplit(origin)
            h = urlsplit(f"{scheme}://{host.strip()}")
            defaults = {"http": 80, "ws": 80, "https": 443, "wss": 443}
            o_port, h_port = o.port or defaults.get(o.scheme), h.port or defaults.get(scheme)
        except ValueError:  # "null" (a sandboxed page, a file) or garbage
            return False
        return bool(o.hostname) and (o.hostname, o_port) == (h.hostname, h_port)

    async def _limited(self, scope: Scope, receive: Receive, send: Send, limit: int, headers: Headers) -> None:
        method, path = str(scope["method"]), str(scope["path"])
        message = f"the body is over {limit} bytes, the limit of {method} {path}"
        length = headers.get("content-length", "")
        if length.strip().isdigit() and int(length) > limit:
            await self._deny(scope, receive, send, 413, message, {"Connection": "close"})
            return
        if "transfer-encoding" not in headers and (not length or length.strip().isdigit()):
            # The body is framed by its Content-Length (none: empty): the HTTP server reads that many bytes
            # and no more, so nothing can pass the limit checked above and nothing needs counting.
            await self.app(scope, receive, send)
            return
        received = 0
        exceeded = False
        started = False
        replaced = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise BodyTooLarge(message)
            return msg

        async def checked_send(msg: Message) -> None:
            nonlocal started, replaced
            if msg["type"] == "http.response.start":
                if exceeded and msg["status"] != 413:
                    replaced = True  # the route turned the 413 into something else: answer it ourselves
                    return
                started = True
                if exceeded:  # the rest of the body is never read: the connection cannot be reused
                    msg = {**msg, "headers": [*msg.get("headers", []), (b"connection", b"close")]}
            elif replaced:
                return
            await send(msg)

        try:
            await self.app(scope, limited_receive, checked_send)
        except BodyTooLarge:
            if started:
                raise
        if exceeded and not started:
            await self._deny(scope, receive, send, 413, message, {"Connection": "close"})


def install(app: ASGIApp, config: EdgeConfig) -> None:
    """Adds the edge as the outermost of the app's middlewares (add it last)."""
    app.add_middleware(EdgeMiddleware, config=config)  # type: ignore[attr-defined]
