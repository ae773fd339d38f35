"""The hot routes' dispatch: a few (method, path) pairs served without FastAPI's router and dependency solving.

Users send one job per request, and probes and pollers ask for one thing at a time: for those requests
FastAPI's own work (its exception and exit-stack middlewares, the router's match over several hundred
routes one after another, solving the dependencies, validating and serializing the answer) cost more than
the route itself (docs/benchmarks.md, "One job per request"). ``HotPath`` is the innermost of the app's
middlewares: the edge (Host, Origin, the caller and its rule, the body's limit), the audit log and the rate
limiter have run before it, exactly as for any route. For a hot pair it calls the route's own endpoint
with what it needs, renders its result as FastAPI would (status, ``response_model`` serialization, the
headers the endpoint set) and an exception through the app's own handlers; every other request, and a hot
one it cannot answer the same way (a query string, a ``root_path``), goes on to FastAPI untouched.

Which routes may take it is decided once, from the routes FastAPI built: an endpoint whose parameters are
only path parameters, query parameters with defaults, the ``Request``, the ``Response`` and the ``services``
dependency; a path template is served only when no route before it could match the same path (FastAPI tries
routes in order). ``CORRAL_HOT_PATH=off`` turns it off (every request through FastAPI).
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, routing
from fastapi.datastructures import DefaultPlaceholder
from fastapi.dependencies.models import Dependant
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, serialize_response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from corral.api.deps import services

log = logging.getLogger("corral.api")
# The routes users send one thing at a time to: probes, one job, one job's state; the dialects' submits.
HOT_ROUTES: tuple[tuple[str, str], ...] = (
    ("GET", "/healthz"),
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs/{job_id}"),
    ("POST", "/jobs"),  # Tork
    ("POST", "/api/jobs"),  # nomad-lite
    ("POST", "/api/tasks"),  # CloudAI
)
PROBE_SEGMENT = "0123456789abcdef0123456789abcdef"  # a path segment no literal route has


def enabled(env: dict[str, str] | None = None) -> bool:
    value = (os.environ if env is None else env).get("CORRAL_HOT_PATH", "on")
    return value.strip().lower() not in ("off", "0", "false", "no")


@dataclass
class Endpoint:
    """One hot route: how to call its endpoint and render what it returns."""

    route: Any  # FastAPI's route context: the route as included (prefix, dependencies)
    call: Callable[..., Any]
    is_coroutine: bool
    path_params: tuple[str, ...]
    request_param: str | None
    response_param: str | None
    services_params: tuple[str, ...]
    status_code: int | None
    # A route class that answers every error in its own shape (a dialect's): that answer.
    render: Callable[[Request, Any], Response] | None = None
    # A template's static part ("/v1/jobs/") and the literal segments earlier routes own there.
    prefix: str = ""
    taken: frozenset[str] = field(default_factory=frozenset)


def endpoint_of(route: Any) -> Endpoint | None:
    """The ``Endpoint`` that calls ``route`` the way FastAPI would, or None when its parameters need
    FastAPI (a body model, headers, cookies, a required query parameter, a dependency other than
    ``services``, a response class of its own)."""
    dep: Dependant = route.dependant
    if getattr(route, "max_body_size", None) is not None:
        return None  # FastAPI's own limit of the route
    if dep.body_params or dep.header_params or dep.cookie_params or dep.background_tasks_param_name \
            or dep.security_scopes_param_name or dep.http_connection_param_name or dep.websocket_param_name \
            or not isinstance(route.response_class, DefaultPlaceholder):
        return None
    svc_params = []
    for sub in dep.dependencies:
        if sub.call is not services or sub.dependencies or sub.name is None:
            return None
        svc_params.append(sub.name)
    signature = inspect.signature(route.endpoint)
    for q in dep.query_params:
        default = signature.parameters[q.name].default if q.name in signature.parameters else inspect.Parameter.empty
        if default is inspect.Parameter.empty or type(default).__module__.startswith(("fastapi", "pydantic")):
            return None  # required, or its default is a Query(...): FastAPI resolves it
    original = getattr(route, "original_route", route)
    render = getattr(original, "dialect_render", None)
    if type(original).get_route_handler is not APIRoute.get_route_handler and render is None:
        return None  # a route class of its own, which the hot path does not know
    path_params = tuple(p.name for p in dep.path_params)
    if path_params and (route.path.count("{") != 1 or not route.path.endswith("}")
                        or not route.path_format.endswith("{" + path_params[0] + "}")
                        or route.param_convertors[path_params[0]].regex != "[^/]+"):
        return None  # one str parameter, as the last segment
    return Endpoint(route=route, call=route.dependant.call or route.endpoint,
                    is_coroutine=inspect.iscoroutinefunction(route.dependant.call or route.endpoint),
                    path_params=path_params, request_param=dep.request_param_name,
                    response_param=dep.response_param_name, services_params=tuple(svc_params),
                    status_code=route.status_code, render=render,
                    prefix=route.path.split("{", 1)[0] if path_params else "")


def table(routes: Iterable[Any], wanted: Iterable[tuple[str, str]] = HOT_ROUTES
          ) -> dict[tuple[str, str], Endpoint]:
    """(method, path or template prefix) -> the endpoint, for each wanted route the hot path can serve
    with FastAPI's answer. ``routes``: the app's, included routers' routes as FastAPI sees them."""
    flat = list(routing.iter_route_contexts(list(routes)))
    out: dict[tuple[str, str], Endpoint] = {}
    for method, path in wanted:
        index = next((i for i, r in enumerate(flat) if getattr(r, "path", None) == path
                      and method in (getattr(r, "methods", None) or ())
                      and isinstance(getattr(r, "dependant", None), Dependant)), None)
        if index is None:
            continue
        ep = endpoint_of(flat[index])
        if ep is None:
            log.debug("%s %s is not served by the hot path: its parameters need FastAPI", method, path)
            continue
        earlier = flat[:index]
        probe = ep.prefix + PROBE_SEGMENT if ep.path_params else path
        if any(_full(r, method, probe) for r in earlier):
            continue  # an earlier route takes these paths
        if ep.path_params:
            taken = set()
            for r in earlier:
                p = str(getattr(r, "path", "") or "")
                rest = p[len(ep.prefix):] if p.startswith(ep.prefix) else ""
                if rest and "/" not in rest and "{" not in rest:
                    taken.add(rest)  # an earlier literal route (of another method: FastAPI would answer 405)
            ep.taken = frozenset(taken)
        out[(method, ep.prefix or path)] = ep
    return out


def _full(route: Any, method: str, path: str) -> bool:
    """Whether ``route`` (a route context) would take ``method path`` before the hot route: conservatively
    yes when it cannot say."""
    regex = getattr(route, "path_regex", None)
    if regex is None:
        return True
    if not regex.match(path):
        return False
    methods = getattr(route, "methods", None)
    return methods is None or method in methods


class HotPath:
    """ASGI middleware (the app's innermost): serves the hot routes' endpoints directly."""

    def __init__(self, app: ASGIApp, owner: FastAPI, routes: tuple[tuple[str, str], ...] = HOT_ROUTES) -> None:
        self.app = app
        self.owner = owner
        self.wanted = routes
        self._table: dict[tuple[str, str], Endpoint] | None = None
        self._handlers: dict[Any, Callable[..., Any]] = {}
        # Requests answered here, for /metrics (corral_hot_path_requests_total)
        self._stats: dict[str, int] = owner.state.services.coord.stats

    def _build(self) -> dict[tuple[str, str], Endpoint]:
        built = table(self.owner.routes, self.wanted)
        self._handlers = {k: v for k, v in self.owner.exception_handlers.items() if k not in (500, Exception)}
        self._table = built
        return built

    def _find(self, method: str, path: str) -> tuple[Endpoint, dict[str, str]] | None:
        hot = self._table if self._table is not None else self._build()
        ep = hot.get((method, path))
        if ep is not None:
            return (ep, {}) if not ep.path_params else None
        cut = path.rfind("/") + 1
        if cut <= 1:
            return None
        ep = hot.get((method, path[:cut]))
        if ep is None or not ep.path_params:
            return None
        segment = path[cut:]
        if not segment or segment in ep.taken:
            return None
        return ep, {ep.path_params[0]: segment}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("query_string") and not scope.get("root_path"):
            found = self._find(str(scope["method"]), str(scope["path"]))
            if found is not None:
                self._stats["hot_path_requests"] += 1
                await self._serve(found[0], found[1], scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _serve(self, ep: Endpoint, path_params: dict[str, str], scope: Scope, receive: Receive,
                     send: Send) -> None:
        scope["path_params"] = path_params
        scope["route"] = ep.route
        scope["endpoint"] = ep.route.endpoint
        request = Request(scope, receive, send)
        try:
            response = await self._answer(ep, path_params, request)
        except Exception as exc:
            if ep.render is not None:  # as the dialect's route class answers it
                from corral.api.dialects.base import as_dialect_error
                await ep.render(request, as_dialect_error(exc))(scope, receive, send)
                return
            handler = self._handler(exc)
            if handler is None:
                raise  # as from FastAPI's router: the server-error middleware answers it
            if inspect.iscoroutinefunction(handler):
                response = await handler(request, exc)
            else:
                response = await run_in_threadpool(handler, request, exc)  # type: ignore[arg-type]
        await response(scope, receive, send)

    async def _answer(self, ep: Endpoint, path_params: dict[str, str], request: Request) -> Response:
        kwargs: dict[str, Any] = dict(path_params)
        if ep.request_param:
            kwargs[ep.request_param] = request
        sub: Response | None = None
        if ep.response_param:
            sub = Response()
            del sub.headers["content-length"]
            sub.status_code = None  # type: ignore[assignment]
            kwargs[ep.response_param] = sub
        if ep.services_params:
            svc = await services(request)
            for name in ep.services_params:
                kwargs[name] = svc
        if ep.is_coroutine:
            result = await ep.call(**kwargs)
        else:
            result = await run_in_threadpool(ep.call, **kwargs)
        if isinstance(result, Response):
            return result
        status = sub.status_code if sub is not None and sub.status_code else ep.status_code
        route = ep.route
        content = await serialize_response(field=route.response_field, response_content=result,
                                           include=route.response_model_include,
                                           exclude=route.response_model_exclude,
                                           by_alias=route.response_model_by_alias,
                                           exclude_unset=route.response_model_exclude_unset,
                                           exclude_defaults=route.response_model_exclude_defaults,
                                           exclude_none=route.response_model_exclude_none,
                                           dump_json=route.response_field is not None)
        if route.response_field is not None:
            response = Response(content, status_code=status or 200, media_type="application/json")
        else:
            response = JSONResponse(content, status_code=status or 200)
        if sub is not None:
            response.headers.raw.extend(sub.headers.raw)
        return response

    def _handler(self, exc: Exception) -> Callable[[Request, Exception], Awaitable[Response] | Response] | None:
        if isinstance(exc, HTTPException) and exc.status_code in self._handlers:
            return self._handlers[exc.status_code]
        for cls in type(exc).__mro__:
            if cls in self._handlers:
                return self._handlers[cls]
        return None
