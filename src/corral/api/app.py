"""The app factory: one coordinator, its background loops, the routers, and (standalone) a local worker."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from corral import __version__
from corral.api import dashboard, docs_ui, edge, errors, health, hot
from corral.api import openapi as api_doc
from corral.api.deps import Services
from corral.api.dialects import PORT_APPS, edge_prefixes, edge_renderers
from corral.api.dialects import install as install_dialects
from corral.api.dialects import stacks as stacks_dialect
from corral.api.native import admin, agent, agent_fast, agent_pods, cluster, jobs, pods, schedules
from corral.api.native import auth as auth_api
from corral.api.native import quotas as quotas_api
from corral.api.native import services as services_api
from corral.auth.service import Auth, AuthLimits
from corral.coordinator.audit import AuditConfig, AuditLog
from corral.coordinator.loops import BackgroundLoops
from corral.coordinator.service import Coordinator, Settings
from corral.coordinator.stacks import Stacks, StacksConfig
from corral.coordinator.wakeups import NodeWakeups, PgBroadcast
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
    # nomad-lite's gRPC SchedulerService on this port (corral.api.grpcapi); None: not served.
    grpc_port: int | None = None
    grpc_bind: str = "127.0.0.1"
    grpc_optional: bool = False  # the port is only a default (corral up): taken, the server runs without it
    # The audit log's retention (corral.coordinator.audit).
    audit: AuditConfig = field(default_factory=AuditConfig)
    # Identities (corral.auth): on, every caller needs a credential (a user, a key, a token, the local token)
    # and is held to its role and namespaces; off, a caller without the access token is an anonymous admin.
    auth: bool = False
    # How many keys, users and join tokens a caller may make (--max-keys-per-owner, ...).
    auth_limits: AuthLimits = field(default_factory=AuthLimits)
    # A client certificate's common name -> the user it acts as (--tls-cn-map; corral.auth.service).
    cn_map: dict[str, str] = field(default_factory=dict)
    # Made at the first start with auth on: the first admin's key, for the command to print once.
    first_admin_key: str | None = None


def create_app(config: ServerConfig) -> FastAPI:
    store = Store(config.database_url)
    coord = Coordinator(store, config.settings)
    wakeups = NodeWakeups()
    coord.on_nodes_changed = coord.on_nodes_local = wakeups.notify
    broadcast: PgBroadcast | None = None
    if not store.is_sqlite:  # several coordinators may share the database: wake-ups cross them
        broadcast = PgBroadcast(_libpq_url(config.database_url), coord.leadership.me.id, wakeups.notify,
                                coord.kick_local)
        coord.on_nodes_changed = _both(wakeups.notify, broadcast.nodes_changed)
        coord.on_kick = broadcast.kick
        coord.announce = broadcast.announce
    loops = BackgroundLoops(coord)
    stacks = Stacks(coord, config.stacks)
    audit_log = AuditLog(store, config.audit)
    auth = Auth(store, enabled=config.auth or bool(config.edge.api_token), local_token=config.edge.api_token,
                limits=config.auth_limits, cn_map=config.cn_map)
    config.first_admin_key = auth.bootstrap(first_admin=config.auth)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        wakeups.bind(asyncio.get_running_loop())
        if broadcast is not None:
            broadcast.start()
        loops.start()
        stacks.start()
        audit_log.start()
        local = None
        if config.local_worker is not None:
            from corral.agent.worker import Agent, AgentConfig
            from corral.coordinator.local import LocalTransport
            local = Agent(AgentConfig(**config.local_worker),  # type: ignore[arg-type]
                          LocalTransport(coord, wakeups))
            await local.start()
        grpc_server = None
        if config.grpc_port is not None:
            from corral.api.grpcapi.service import SchedulerService, start
            scheduler = SchedulerService(coord, f"{config.grpc_bind}:{config.grpc_port}", config.edge.api_token,
                                         local_node=lambda: local.node_id if local is not None else None)
            try:
                grpc_server = await start(scheduler, config.grpc_bind, config.grpc_port)
            except OSError as e:
                if not config.grpc_optional:
                    raise
                log.warning("%s: nomad-lite's gRPC API is not served (give corral up --grpc-port)", e)
        flush = asyncio.create_task(_flush_key_use(auth))
        try:
            yield
        finally:
            flush.cancel()
            if grpc_server is not None:
                await grpc_server.stop(grace=2)
            if local is not None:
                await local.stop()
            stacks.stop()
            loops.stop()
            audit_log.stop()
            if broadcast is not None:
                broadcast.stop()
            store.close()

    app = FastAPI(title="Corral", version=__version__, lifespan=lifespan,
                  description="Runs jobs of container and host-process tasks across worker machines.",
                  docs_url=None, redoc_url=None)
    docs_ui.install(app)  # /docs and /redoc from local assets, not a CDN
    app.state.services = Services(coord, wakeups, config.agent_token,
                                  auth=bool(config.agent_token or config.edge.api_token or config.auth))
    app.state.stacks = stacks
    app.state.audit = audit_log
    app.state.audit_local = bool(config.edge.api_token)
    app.state.auth = auth
    errors.install(app)
    if hot.enabled():  # the first middleware added is the innermost: after the edge, the audit, the limiter
        coord.stats["hot_path_requests"] = 0
        app.add_middleware(hot.HotPath, owner=app)
    app.include_router(health.router)  # first: FastAPI tries routes in order, and probes come often
    app.include_router(auth_api.router)
    app.include_router(jobs.router)
    app.include_router(schedules.router)
    app.include_router(cluster.router)
    app.include_router(pods.router)
    app.include_router(agent.router)
    app.include_router(agent_pods.router)
    app.include_router(services_api.router)
    app.include_router(services_api.agent_router)
    app.include_router(admin.router)
    app.include_router(quotas_api.router)
    install_dialects(app)  # nomad-lite and CloudAI, and the rate limiter
    app.include_router(health.metrics_router(coord))
    dashboard.install(app, store, config.edge.api_token)  # the web dashboard: / and /ui/
    config.edge.renderers = [*dashboard.edge_renderers(), *edge_renderers()]
    config.edge.agent_token_set = bool(config.agent_token)
    if config.stacks.api_key:  # the Stacks routes check their own key (X-API-KEY) instead of the token
        config.edge.own_auth_prefixes = stacks_dialect.ERROR_PREFIXES
    app.add_middleware(admin.AuditMiddleware, log=audit_log, local=bool(config.edge.api_token))
    app.add_middleware(agent_fast.AgentFastPath, services=app.state.services)  # heartbeats: inside the edge only
    config.edge.auth = auth
    edge.install(app, config.edge)  # last: the outermost, before the rate limiter
    renderers = config.edge.renderers

    def render_for(path: str) -> edge.Render:
        return next((r for prefix, r in renderers if path.startswith(prefix)), edge.problem)

    # A 405's Allow lists the methods of the resource, its body in the shape of the path's API.
    app.add_exception_handler(405, api_doc.method_not_allowed(lambda: app.openapi()["paths"], lambda: app.routes,
                                                              render_for))
    doc_config = api_doc.DocConfig(access_token=bool(config.edge.api_token), agent_token=bool(config.agent_token),
                                   own_auth_prefixes=tuple(config.edge.own_auth_prefixes),
                                   edge_prefixes=edge_prefixes(), auth=auth.enabled,
                                   bind_roots=config.settings.policy.bind_roots,
                                   networks=config.settings.policy.networks,
                                   escalations=config.settings.policy.escalations,
                                   node_ports=config.settings.node_port_range)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = api_doc.model_bodies(get_openapi(title=app.title, version=app.version,
                                                      description=app.description, routes=app.routes), app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(jobs.job_schemas())
            schema["components"]["schemas"].update(pods.pod_schemas())
            schema["components"]["schemas"].update(services_api.service_schemas())
            app.openapi_schema = api_doc.document(schema, doc_config)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _libpq_url(url: str) -> str:
    """The database URL as libpq takes it (without SQLAlchemy's driver name)."""
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest if scheme.startswith("postgres") else url


def _both(a: Callable[[set[str]], None], b: Callable[[set[str]], None]) -> Callable[[set[str]], None]:
    def call(ids: set[str]) -> None:
        a(ids)
        b(ids)
    return call
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
    app.state.audit = main.state.audit
    app.state.audit_local = main.state.audit_local
    app.state.auth = main.state.auth
    port_app.install(app)
    app.add_middleware(admin.AuditMiddleware, log=main.state.audit, local=bool(config.edge.api_token))
    own = ("",) if port_app.own_auth(app) else ()
    edge.install(app, dataclasses.replace(config.edge, renderers=[("/", port_app.render)], own_auth_prefixes=own,
                                          login_code=None))
    return app
