"""The route rule table: every route of the app (native, every dialect, the WebSocket, /metrics, the docs)
and the permission it needs. A route with no rule is a bug: tests/unit/test_auth_rules.py walks
``app.routes`` and fails on one; at run time such a route needs ``admin``.

Namespaces are not decided here: a rule says what a caller may do at all; the routers then show and act
only on what is in the caller's namespaces (another namespace's object is a 404).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from starlette.routing import BaseRoute, Route, WebSocketRoute, compile_path
from starlette.types import Scope

from corral.auth.identity import Perm

P, R, S, OP, A, AG = Perm.PUBLIC, Perm.READ, Perm.SUBMIT, Perm.OPERATE, Perm.ADMIN, Perm.AGENT

# (path template, {method: permission}); "WS" is a WebSocket. Reads are READ, changes SUBMIT unless said.
RULES: dict[str, dict[str, Perm]] = {
    # -- probes, metrics, docs, identities ---------------------------------------------------------
    "/healthz": {"GET": P}, "/readyz": {"GET": P}, "/health": {"GET": P}, "/health/live": {"GET": P},
    "/health/ready": {"GET": P},
    "/metrics": {"GET": Perm.METRICS},
    "/openapi.json": {"GET": Perm.DOCS}, "/docs": {"GET": Perm.DOCS}, "/redoc": {"GET": Perm.DOCS},
    "/docs-assets": {"*": Perm.DOCS},
    "/v1/auth/token": {"POST": P},  # checks the password or key in its body itself (rate limited)
    "/v1/auth/rotate": {"POST": A},
    "/v1/whoami": {"GET": Perm.SELF},
    "/v1/keys": {"GET": Perm.SELF, "POST": Perm.SELF},
    "/v1/keys/{key_id}": {"DELETE": Perm.SELF},
    "/v1/users": {"GET": A, "POST": A},
    "/v1/users/{name}": {"DELETE": A},
    "/v1/users/{name}/password": {"PUT": Perm.SELF},  # one's own; an admin's for anyone (the route checks)
    # -- native jobs, schedules, pods, services ----------------------------------------------------
    "/v1/jobs": {"GET": R, "POST": S}, "/v1/jobs/batch": {"POST": S},
    "/v1/jobs/{job_id}": {"GET": R, "DELETE": S},
    "/v1/jobs/{job_id}/cancel": {"POST": S}, "/v1/jobs/{job_id}/restart": {"POST": S},
    "/v1/jobs/{job_id}/logs": {"GET": R}, "/v1/jobs/{job_id}/tasks": {"GET": R},
    "/v1/schedules": {"GET": R, "POST": S},
    "/v1/schedules/{schedule_id}": {"GET": R, "DELETE": S},
    "/v1/schedules/{schedule_id}/pause": {"POST": S}, "/v1/schedules/{schedule_id}/resume": {"POST": S},
    "/v1/pods": {"GET": R, "POST": S},
    "/v1/pods/{pod_id}": {"GET": R, "DELETE": S},
    "/v1/pods/{pod_id}/logs": {"GET": R}, "/v1/pods/{pod_id}/purge": {"POST": S},
    "/v1/services": {"GET": R, "POST": S},
    "/v1/services/{service_id}": {"GET": R, "DELETE": S, "PUT": S},
    "/v1/services/{service_id}/endpoints": {"GET": R},
    # -- the cluster: nodes and queues (reading them is reading; changing them is operating) ----------
    "/v1/nodes": {"GET": R}, "/v1/nodes/{node_id}": {"GET": R},
    "/v1/queues": {"GET": R},
    "/v1/nodes/{node_id}/drain": {"POST": OP}, "/v1/nodes/{node_id}/undrain": {"POST": OP},
    # -- the coordinators, the audit log, workers' join tokens: an admin's ------------------------------
    "/v1/cluster": {"GET": R}, "/v1/cluster/transfer": {"POST": A},
    "/v1/cluster/{coord_id}/drain": {"POST": A}, "/v1/cluster/{coord_id}/undrain": {"POST": A},
    "/v1/audit": {"GET": A},
    "/v1/tokens": {"GET": A, "POST": A}, "/v1/tokens/{token_id}": {"DELETE": A},
    # -- namespace quotas: an admin sets them; a caller reads those of its namespaces ----------------------
    "/v1/quotas": {"GET": R},
    "/v1/namespaces/{namespace}/quota": {"GET": R, "PUT": A, "DELETE": A},
    # -- a worker's routes -------------------------------------------------------------------------
    "/v1/agent/register": {"POST": AG},
    "/v1/agent/nodes/{node_id}/heartbeat": {"POST": AG}, "/v1/agent/nodes/{node_id}/poll": {"POST": AG},
    "/v1/agent/nodes/{node_id}/report": {"POST": AG}, "/v1/agent/nodes/{node_id}/drain": {"POST": AG},
    "/v1/agent/nodes/{node_id}/leave": {"POST": AG}, "/v1/agent/nodes/{node_id}/pods": {"POST": AG},
    "/v1/agent/nodes/{node_id}/services": {"GET": AG},
    "/v1/agent/nodes/{node_id}/podling/tasks/{task_id}": {"GET": AG},
    "/v1/agent/nodes/{node_id}/podling/tasks/{task_id}/execute": {"POST": AG},
    "/v1/agent/nodes/{node_id}/podling/tasks/{task_id}/logs": {"GET": AG},
    # -- Tork ----------------------------------------------------------------------------------------
    "/jobs": {"GET": R, "POST": S}, "/jobs/{job_id}": {"GET": R},
    "/jobs/{job_id}/cancel": {"PUT": S}, "/jobs/{job_id}/restart": {"PUT": S},
    "/jobs/{job_id}/log": {"GET": R}, "/tasks/{task_id}": {"GET": R}, "/tasks/{task_id}/log": {"GET": R},
    "/nodes": {"GET": R}, "/queues": {"GET": R}, "/queues/{name}": {"DELETE": OP},
    "/scheduled-jobs": {"GET": R, "POST": S}, "/scheduled-jobs/{schedule_id}": {"GET": R, "DELETE": S},
    "/scheduled-jobs/{schedule_id}/pause": {"PUT": S}, "/scheduled-jobs/{schedule_id}/resume": {"PUT": S},
    "/users": {"POST": A},
    # -- nomad-lite ----------------------------------------------------------------------------------
    "/api/jobs": {"GET": R, "POST": S}, "/api/jobs/{job_id}": {"GET": R, "DELETE": S},
    "/api/cluster": {"GET": R},
    # -- CloudAI -------------------------------------------------------------------------------------
    "/api/tasks": {"GET": R, "POST": S}, "/api/tasks/{task_id}": {"GET": R},
    "/api/tasks/{task_id}/cancel": {"POST": S},
    "/api/workers": {"GET": R}, "/api/workers/{worker_id}": {"GET": R}, "/api/cluster/status": {"GET": R},
    "/ws/telemetry": {"WS": R},
    # -- Podling (master) ----------------------------------------------------------------------------
    "/api/v1/tasks": {"GET": R, "POST": S}, "/api/v1/tasks/{task_id}": {"GET": R},
    "/api/v1/tasks/{task_id}/status": {"PUT": AG},
    "/api/v1/nodes": {"GET": R}, "/api/v1/nodes/register": {"POST": AG},
    "/api/v1/nodes/{node_ref}/heartbeat": {"POST": AG}, "/api/v1/nodes/{node_ref}/deregister": {"POST": AG},
    "/api/v1/pods": {"GET": R, "POST": S}, "/api/v1/pods/{pod_id}": {"GET": R, "DELETE": S},
    "/api/v1/pods/{pod_id}/status": {"PUT": AG},
    "/api/v1/services": {"GET": R, "POST": S},
    "/api/v1/services/{service_id}": {"GET": R, "DELETE": S, "PUT": S},
    "/api/v1/services/{service_id}/endpoints": {"GET": R},
    "/api/v1/prune": {"POST": OP},
    # -- Stacks --------------------------------------------------------------------------------------
    "/stacks": {"GET": R, "POST": S}, "/stacks/{stack_id}": {"GET": R, "DELETE": S},
    "/stacks/{stack_id}/status": {"GET": R},
    "/stacks/batch-delete": {"POST": S}, "/stacks/batch-delete/{job_id}": {"GET": R},
    "/stats": {"GET": R},
    # -- the dashboard (corral.api.dashboard): its pages read; the buttons call the routes above --------
    "/": {"GET": P},  # a redirect to /ui/
    "/ui/static": {"*": P}, "/ui/login": {"GET": P, "POST": P}, "/ui/logout": {"POST": P},
    "/ui/": {"GET": R}, "/ui/overview": {"GET": R}, "/ui/events": {"GET": R},
    "/ui/jobs": {"GET": R}, "/ui/jobs/table": {"GET": R}, "/ui/jobs/{job_id}": {"GET": R},
    "/ui/jobs/{job_id}/body": {"GET": R}, "/ui/nodes": {"GET": R}, "/ui/nodes/table": {"GET": R},
    "/ui/pods": {"GET": R}, "/ui/services": {"GET": R}, "/ui/submit": {"GET": R},
    "/ui/validate": {"POST": R},  # checks a text, changes nothing
}


def route_methods(route: BaseRoute) -> list[str]:
    if isinstance(route, WebSocketRoute):
        return ["WS"]
    if isinstance(route, Route):
        return sorted((route.methods or {"GET"}) - {"HEAD"})
    return ["*"]


def missing(routes: Iterable[BaseRoute], rules: dict[str, dict[str, Perm]] = RULES) -> list[str]:
    """``METHOD path`` of every route with no rule."""
    out = []
    for route in routes:
        path = str(getattr(route, "path", ""))
        for m in route_methods(route):
            if m == "*":
                if path not in rules:
                    out.append(f"* {path}")
            elif m not in rules.get(path, {}):
                out.append(f"{m} {path}")
    return out


def all_routes(app: Any) -> list[BaseRoute]:
    """Every route of ``app``, those of included routers with their whole paths."""
    from fastapi.routing import _iter_included_route_candidates  # FastAPI includes routers lazily

    return list(_iter_included_route_candidates(app.routes))


class RuleTable:
    """The permission a request needs: its path matched against the table's templates (a literal path
    before one with parameters, as the routers are written), then its method."""

    def __init__(self, rules: dict[str, dict[str, Perm]] = RULES) -> None:
        self.rules = rules
        order = sorted(rules, key=lambda p: (p.count("{"), -len(p)))
        self._exact = {p: rules[p] for p in order if "{" not in p}
        self._mounts = [(p.rstrip("/") + "/", rules[p]["*"]) for p in order if "*" in rules[p]]
        self._templates = [(compile_path(p)[0], rules[p]) for p in order if "{" in p]
        self._paths: OrderedDict[str, dict[str, Perm] | None] = OrderedDict()  # recent paths: their rules

    def perm(self, scope: Scope) -> Perm | None:
        """None: no rule has this path (the router answers 404)."""
        method = "WS" if scope["type"] == "websocket" else str(scope["method"])
        rule = self._rule(str(scope["path"]))
        if rule is None:
            return None
        if method in ("HEAD", "OPTIONS"):
            method = "GET"
        if method in rule:
            return rule[method]
        if "*" in rule:
            return rule["*"]
        return min(rule.values(), key=_rank)  # a method the route lacks: the 405 needs what the least does

    def _rule(self, path: str) -> dict[str, Perm] | None:
        if path in self._exact:
            return self._exact[path]
        if path in self._paths:
            self._paths.move_to_end(path)
            return self._paths[path]
        rule = next((r for prefix, p in self._mounts if path.startswith(prefix) for r in [{"*": p}]), None)
        if rule is None:
            rule = next((r for regex, r in self._templates if regex.match(path)), None)
        self._paths[path] = rule
        while len(self._paths) > 4096:
            self._paths.popitem(last=False)
        return rule


def _rank(p: Perm) -> int:
    return list(Perm).index(p)
