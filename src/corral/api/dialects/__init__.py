"""The seed systems' APIs, each an adapter over the core: nomad-lite, CloudAI, Tork and Podling (more to come).

``install(app)`` mounts them and the rate limiter (on by default for the CloudAI routes, configurable
for any route: see corral.api.ratelimit).
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from corral.api import ratelimit
from corral.api.dialects import cloudai, nomadlite, podling, tork, tork_scheduled
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


def edge_renderers() -> list[tuple[str, ratelimit.Render]]:
    """(path prefix, render) for the refusals of the API's edge (corral.api.edge), in each API's shape."""
    return [*((p, _cloudai) for p in cloudai.ERROR_PREFIXES),
            *((p, nomadlite.render_limit) for p in nomadlite.ERROR_PREFIXES),
            *((p, _tork) for p in TORK_PREFIXES),
            *((p, podling.render_limit) for p in podling.ERROR_PREFIXES)]


def install(app: FastAPI) -> None:
    app.include_router(nomadlite.router)
    app.include_router(tork.router)
    app.include_router(tork_scheduled.router)  # Tork's /scheduled-jobs
    app.include_router(cloudai.router)
    app.include_router(cloudai.ws_router)
    app.include_router(podling.router)  # /api/v1/*; its GET /health only on a port of its own (below)
    app.include_router(podling.node_router)  # the worker's Podling port asks through these
    renderers = [*((p, cloudai.render_limit) for p in cloudai.ERROR_PREFIXES),
                 *((p, nomadlite.render_limit) for p in nomadlite.ERROR_PREFIXES)]
    ratelimit.install(app, cloudai.RATE_LIMITS, CLOUDAI_RULES, renderers)


def _podling_port(app: FastAPI) -> None:
    app.include_router(podling.health_router)
    app.include_router(podling.router)


# The dialects that can be given a port of their own (corral up/server --dialect-port NAME=PORT), where
# each answers exactly as its seed: name -> what to mount on that port's app (corral.api.app).
# GET /health is Tork's on the main port, Podling's on Podling's own port.
PORTS: dict[str, Callable[[FastAPI], None]] = {"podling": _podling_port}
