"""The seed systems' APIs, each an adapter over the core: nomad-lite, CloudAI and Tork (more to come).

``install(app)`` mounts them and the rate limiter (on by default for the CloudAI routes, configurable
for any route: see corral.api.ratelimit).
"""

from __future__ import annotations

from fastapi import FastAPI

from corral.api import ratelimit
from corral.api.dialects import cloudai, nomadlite, tork, tork_scheduled

CLOUDAI_RULES = [
    ratelimit.Rule("POST", "/api/tasks", "submit"),
    ratelimit.Rule("GET", "/api/tasks", "read"),
    ratelimit.Rule("*", "/api/tasks/*", "read"),  # a task's status, and its cancel
    ratelimit.Rule("GET", "/api/workers*", "read"),
    ratelimit.Rule("GET", "/api/cluster/status", "read"),
    ratelimit.Rule("WS", "/ws/telemetry", "websockets"),
]


def install(app: FastAPI) -> None:
    app.include_router(nomadlite.router)
    app.include_router(tork.router)
    app.include_router(tork_scheduled.router)  # Tork's /scheduled-jobs
    app.include_router(cloudai.router)
    app.include_router(cloudai.ws_router)
    renderers = [*((p, cloudai.render_limit) for p in cloudai.ERROR_PREFIXES),
                 *((p, nomadlite.render_limit) for p in nomadlite.ERROR_PREFIXES)]
    ratelimit.install(app, cloudai.RATE_LIMITS, CLOUDAI_RULES, renderers)
