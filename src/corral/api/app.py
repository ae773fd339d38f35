"""The app factory: one coordinator, its background loops, the routers, and (standalone) a local worker."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from corral import __version__
from corral.api import docs_ui, edge, errors, health
from corral.api.deps import Services
from corral.api.dialects import PORT_APPS, edge_renderers
from corral.api.dialects import install as install_dialects
from corral.api.dialects import stacks as stacks_dialect
from corral.api.native import agent, agent_pods, cluster, jobs, pods, schedules
from corral.api.native import auth as auth_api
from corral.api.native import services as services_api
from corral.auth.service import Auth
from corral.coordinator.loops import BackgroundLoops
from corral.coordinator.service import Coordinator, Settings
from corral.coordinator.stacks import Stacks, StacksConfig
from corral.coordinator.wakeups import NodeWakeups
from corral.store.sql import Store

log = logging.getLogger("corral")


@dataclass
class ServerConfig:
    database_url: str
    agent_token: str | None = None
    settings: Settings = field(default_factory=Settings)
    # Standalone: run a worker inside this process, talking to the coordinator without HTTP.
    local_worker: dict[str, object] | None = None
    # The API's edge: access token, Host and Origin checks, body limits (corral.api.edge).
    edge: edge.EdgeConfig = field(default_factory=edge.EdgeConfig)
    # The Stacks API: TTL, LimitRange, ResourceQuota, API key (corral.coordinator.stacks).
    stacks: StacksConfig = field(default_factory=StacksConfig)
    # Identities (corral.auth): on, every caller needs a credential (a user, a key, a token, the local token)
    # and is held to its role and namespaces; off, a caller without the access token is an anonymous admin.
    auth: bool = False
    # Made at the first start with auth on: the first admin's key, for the command to print once.
    first_admin_key: str | None = None


def create_app(config: ServerConfig) -> FastAPI:
    store = Store(config.database_url)
    coord = Coordinator(store, config.settings)
    wakeups = NodeWakeups()
    coord.on_nodes_changed = wakeups.notify
    loops = BackgroundLoops(coord)
    stacks = Stacks(coord, config.stacks)
    auth = Auth(store, enabled=config.auth or bool(config.edge.api_token), local_token=config.edge.api_token)
    config.first_admin_key = auth.bootstrap(first_admin=config.auth)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        wakeups.bind(asyncio.get_running_loop())
        loops.start()
        stacks.start()
        local = None
        if config.local_worker is not None:
            from corral.agent.worker import Agent, AgentConfig
            from corral.coordinator.local import LocalTransport
            local = Agent(AgentConfig(**config.local_worker),  # type: ignore[arg-type]
                          LocalTransport(coord, wakeups))
            await local.start()
        flush = asyncio.create_task(_flush_key_use(auth))
        try:
            yield
        finally:
            flush.cancel()
            if local is not None:
                await local.stop()
            stacks.stop()
            loops.stop()
            store.close()

    app = FastAPI(title="Corral", version=__version__, lifespan=lifespan,
                  description="Runs jobs of container and host-process tasks across worker machines.",
                  docs_url=None, redoc_url=None)
    docs_ui.install(app)  # /docs and /redoc from local assets, not a CDN
    app.state.services = Services(coord, wakeups, config.agent_token,
                                  auth=bool(config.agent_token or config.edge.api_token or config.auth))
    app.state.stacks = stacks
    app.state.auth = auth
    errors.install(app)
    app.include_router(auth_api.router)
    app.include_router(jobs.router)
    app.include_router(schedules.router)
    app.include_router(cluster.router)
    app.include_router(pods.router)
    app.include_router(agent.router)
    app.include_router(agent_pods.router)
    app.include_router(services_api.router)
    app.include_router(services_api.agent_router)
    app.include_router(health.router)
    install_dialects(app)  # nomad-lite and CloudAI, and the rate limiter
    app.include_router(health.metrics_router(coord))
    config.edge.renderers = edge_renderers()
    config.edge.agent_token_set = bool(config.agent_token)
    if config.stacks.api_key:  # the Stacks routes check their own key (X-API-KEY) instead of the token
        config.edge.own_auth_prefixes = stacks_dialect.ERROR_PREFIXES
    config.edge.auth = auth
    edge.install(app, config.edge)  # last: the outermost, before the rate limiter

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(jobs.job_schemas())
            schema["components"]["schemas"].update(pods.pod_schemas())
            schema["components"]["schemas"].update(services_api.service_schemas())
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


async def _flush_key_use(auth: Auth) -> None:
    """Writes the keys' ``last_used_at`` every few seconds (not on each request: the hot path stays a read)."""
    while True:
        await asyncio.sleep(5)
        try:
            await asyncio.to_thread(auth.flush_last_used)
        except Exception:
            log.exception("could not write the API keys' last use")


def create_dialect_app(main: FastAPI, name: str, config: ServerConfig) -> FastAPI:
    """One dialect alone (see ``PortApp``), over the coordinator of ``main`` (whose lifespan runs it): for a
    port of its own. The edge's Host, Origin and body checks apply as on the main port."""
    port_app = PORT_APPS[name]
    app = FastAPI(title=f"Corral: the {name} API", version=__version__, openapi_url=None, docs_url=None,
                  redoc_url=None)
    app.state.services = main.state.services
    app.state.stacks = main.state.stacks
    app.state.auth = main.state.auth
    port_app.install(app)
    own = ("",) if port_app.own_auth(app) else ()
    edge.install(app, dataclasses.replace(config.edge, renderers=[("/", port_app.render)], own_auth_prefixes=own,
                                          login_code=None))
    return app
