"""The seed systems' APIs, each an adapter over the core: nomad-lite, CloudAI, Tork and Podling (more to come).

``install(app)`` mounts them and the rate limiter (on by default for the CloudAI routes, configurable
for any route: see corral.api.ratelimit).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from corral.api import ratelimit
from corral.api.dialects import cloudai, nomadlite, podling, stacks, tork, tork_scheduled
from corral.api.dialects.base import CODES, DialectError

CLOUDAI_RULES = [
    ratelimit.Rule("POST", "/api/tasks", "submit"),
    ratelimit.Rule("GET", "/api/tasks", "read"),
    ratelimit.Rule("*", "/api/tasks/*", "read"),  # a task's status, and its cancel
    ratelimit.Rule("GET", "/api/workers*", "read"),
    ratelimit.Rule("GET", "/api/cluster/status", "read"),
    ratelimit.Rule("WS", "/ws/telemetry", "websockets"),
]


TORK_PREFIXES = ("/jobs", "/tasks", "/nodes", "/queues", "/scheduled-jobs")


def _cloudai(status: int, message: str, headers: dict[str, str]) -> Response:
    body = cloudai.error_body(DialectError(status, message, CODES.get(status, "ERROR")))
    return JSONResponse(body, status_code=status, headers=headers)


def _tork(status: int, message: str, headers: dict[str, str]) -> Response:
    return JSONResponse({"message": message}, status_code=status, headers=headers)


EDGE_RENDER: dict[str, ratelimit.Render] = {"cloudai": _cloudai, "nomad-lite": nomadlite.render_limit, "tork": _tork,
                                             "podling": podling.render_limit, "stacks": stacks.render_edge}


def edge_prefixes() -> list[tuple[str, str]]:
    """(path prefix, API) whose shape the refusals of the API's edge take there; the first match wins (the
    OpenAPI document reads it too: corral.api.openapi)."""
    return [*((p, "cloudai") for p in cloudai.ERROR_PREFIXES),
            *((p, "nomad-lite") for p in nomadlite.ERROR_PREFIXES),
            *((p, "tork") for p in TORK_PREFIXES),
            *((p, "podling") for p in podling.ERROR_PREFIXES),
            *((p, "stacks") for p in stacks.ERROR_PREFIXES)]


def edge_renderers() -> list[tuple[str, ratelimit.Render]]:
    """(path prefix, render) for the refusals of the API's edge (corral.api.edge), in each API's shape."""
    return [(p, EDGE_RENDER[api]) for p, api in edge_prefixes()]


@dataclass(frozen=True)
class PortApp:
    """A dialect served alone on a port of its own (``--dialect-port NAME=PORT``), answering exactly as its
    seed: ``install`` adds its routes (and the paths it shares with others on the main port, such as a
    health check), ``render`` answers the edge's refusals in its shape, and ``own_auth(app)`` says whether
    its routes check a credential of their own, so that the access token is not asked for there."""

    install: Callable[[FastAPI], None]
    render: ratelimit.Render
    own_auth: Callable[[FastAPI], bool]


def _stacks_port(app: FastAPI) -> None:
    app.include_router(stacks.health_router)  # /healthz as the seed has it: behind the key
    app.include_router(stacks.router)


def _podling_port(app: FastAPI) -> None:
    app.include_router(podling.health_router)  # GET /health as Podling's master: on the main port it is Tork's
    app.include_router(podling.router)


PORT_APPS: dict[str, PortApp] = {
    "stacks": PortApp(_stacks_port, stacks.render_edge, lambda app: bool(app.state.stacks.config.api_key)),
    # Podling's bearer token is the access token: the edge checks it there as on the main port.
    "podling": PortApp(_podling_port, podling.render_limit, lambda app: False),
}


def install(app: FastAPI) -> None:
    app.include_router(nomadlite.router)
    app.include_router(tork.router)
    app.include_router(tork_scheduled.router)  # Tork's /scheduled-jobs
    app.include_router(cloudai.router)
    app.include_router(cloudai.ws_router)
    app.include_router(podling.router)  # /api/v1/*; its GET /health only on a port of its own (PORT_APPS)
    app.include_router(podling.node_router)  # the worker's Podling port asks through these
    app.include_router(stacks.router)  # /stacks and /stats; /healthz stays Corral's probe on the main port
    # A 429 in the shape of the API that owns the path (CloudAI's with its retry_after), as the edge's refusals.
    renderers = [*((p, cloudai.render_limit) for p in cloudai.ERROR_PREFIXES), *edge_renderers()]
    ratelimit.install(app, cloudai.RATE_LIMITS, CLOUDAI_RULES, renderers)

