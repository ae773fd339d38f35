"""The Podling master's API (/api/v1) over Corral's core. See docs/api/podling.md.

Tasks are native jobs of one task (coordinator/podling.py), pods are Corral pods with origin "podling",
services are Corral services; nodes are Corral's nodes. Ids are Podling's (20250119123456-abc12345), field
names its camelCase, times Go's RFC 3339, errors ``{"error": "..."}``. ``GET /health`` answers as
Podling's master on a Podling port of its own (``--dialect-port podling=8070``); on the main port
``/health`` stays Tork's.

The worker's side of Podling (``POST /api/v1/tasks/{id}/execute``, status, logs) is served by
``corral worker --podling-port`` (agent/podling.py), which asks the coordinator through the node routes
at the end of this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from corral.api.deps import Services, services
from corral.api.dialects.base import DialectError, json_object, route_class
from corral.api.native.agent import NodeAgent, NodeId
from corral.api.openapi import IMAGE_PATTERN, NAME_PATTERN, WS, json_body, nullable
from corral.coordinator.errors import Conflict, Forbidden, NotFound
from corral.coordinator.podling import PORT_LABEL, PodlingTask, PodlingTasks, is_podling_node
from corral.coordinator.service import NODE_SECRET_HEADER
from corral.coordinator.services import Services as CoreServices
from corral.domain import podling as pd
from corral.domain.agentwire import ContainerStatus, PodStatus
from corral.domain.nodes import number
from corral.domain.pods import DNS_LABEL_RE, DNS_NAME_RE, PodSpec, parse_cpu
from corral.domain.resources import parse_size
from corral.domain.services import DNS_LABEL, MAX_LABEL_KEY, MAX_LABEL_VALUE, MAX_LABELS, PORT_NAME, ServiceSpec
from corral.domain.spec import JobSpec, ResourcesSpec, TaskSpec, did_you_mean
from corral.scheduler.placement import NODE_ID_LABEL
from corral.store.sql import Row

LIST_LIMIT = 1000  # the newest this many of a kind are listed (Podling lists everything)
MAX_TAIL = 10_000
NODE_ID_HEADER = "X-Corral-Node-Id"
TASK_FIELDS = {"name", "image", "env", "livenessProbe", "readinessProbe", "restartPolicy", "ports", "resources"}
RESTART_POLICIES = ("Always", "OnFailure", "Never")
PROBE_TYPES = ("http", "tcp", "exec")
# The paths whose errors are Podling's shape (the edge's refusals too: see dialects.edge_renderers).
ERROR_PREFIXES = ("/api/v1/",)


def _render(request: Request, e: DialectError) -> Response:
    return JSONResponse({"error": e.message}, status_code=e.status, headers=e.headers)


def render_limit(status: int, message: str, headers: dict[str, str]) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


router = APIRouter(tags=["podling"], route_class=route_class(_render))
health_router = APIRouter(tags=["podling"], route_class=route_class(_render))  # its own port only
node_router = APIRouter(prefix="/v1/agent/nodes/{node_id}/podling", tags=["agent"],
                        route_class=route_class(_render))
Svc = Annotated[Services, Depends(services)]


def tasks_of(svc: Services) -> PodlingTasks:
    return PodlingTasks(svc.coord)


# -- reading bodies -----------------------------------------------------------------------------
def _str(data: dict[str, Any], key: str, required: bool = False, most: int = 200) -> str | None:
    v = data.get(key)
    if v is None or v == "":
        if required:
            raise DialectError(400, f"{key} is required")
        return None
    if not isinstance(v, str):
        raise DialectError(400, f"{key} must be a string")
    if len(v) > most:
        raise DialectError(400, f"{key} is longer than {most} characters")
    return v


def _string_map(data: dict[str, Any], key: str) -> dict[str, str]:
    v = data.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict) or not all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()):
        raise DialectError(400, f"{key} must be a map of strings")
    return v


def _int(v: Any, what: str, lo: int, hi: int) -> int:
    # A whole number, as JSON Schema's "integer" counts one: 655.0 is 655 (the document says integer).
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise DialectError(400, f"{what} must be a whole number from {lo} to {hi}")
    return v


def _probe(v: Any, what: str) -> dict[str, Any] | None:
    """A Podling health check, checked as Podling's worker checks it (validateHealthCheck)."""
    if v is None:
        return None
    if not isinstance(v, dict):
        raise DialectError(400, f"{what} must be an object")
    known = {"type", "httpPath", "port", "command", "initialDelaySeconds", "periodSeconds", "timeoutSeconds",
             "successThreshold", "failureThreshold"}
    if unknown := sorted(set(v) - known):
        raise DialectError(400, f"{what}: unknown field {unknown[0]}")
    kind = v.get("type")
    if kind not in PROBE_TYPES:
        raise DialectError(400, f"{what}.type must be one of {', '.join(PROBE_TYPES)}")
    probe: dict[str, Any] = dict(v)
    port = _int(probe.get("port", 0), f"{what}.port", 0, 65535)
    if "port" in probe:
        probe["port"] = port
    if kind == "http":
        path = v.get("httpPath")
        if not isinstance(path, str) or not path.startswith("/") or len(path) > 1000:
            raise DialectError(400, f"{what}.httpPath must start with / (at most 1000 characters)")
        if any(ord(c) < 32 or ord(c) == 127 for c in path) or "/.." in path:
            raise DialectError(400, f"{what}.httpPath holds control characters or a path traversal")
    if kind == "tcp" and port <= 0:
        raise DialectError(400, f"{what}.port is required for tcp probes")
    if kind == "exec":
        cmd = v.get("command")
        if (not isinstance(cmd, list) or not cmd or len(cmd) > 100
                or not all(isinstance(c, str) and "\x00" not in c and len(c) <= 4096 for c in cmd)):
            raise DialectError(400, f"{what}.command must be a list of 1-100 strings without null bytes")
    for key in ("initialDelaySeconds", "periodSeconds", "timeoutSeconds"):
        if key in v:
            probe[key] = _int(v[key], f"{what}.{key}", 0, 86400)
    for key in ("successThreshold", "failureThreshold"):
        if key in v:
            probe[key] = _int(v[key], f"{what}.{key}", 1, 1000)
    return probe


def _ports(v: Any, what: str = "ports") -> list[dict[str, Any]]:
    if v is None:
        return []
    if not isinstance(v, list) or len(v) > 100:
        raise DialectError(400, f"{what} must be a list of at most 100 ports")
    out = []
    for i, p in enumerate(v):
        w = f"{what}[{i}]"
        if not isinstance(p, dict):
            raise DialectError(400, f"{w} must be an object")
        if unknown := sorted(set(p) - {"name", "containerPort", "protocol", "hostPort"}):
            raise DialectError(400, f"{w}: unknown field {unknown[0]}")
        p = {**p, "containerPort": _int(p.get("containerPort"), f"{w}.containerPort", 1, 65535)}
        if p.get("hostPort") not in (None, 0):
            p["hostPort"] = _int(p["hostPort"], f"{w}.hostPort", 1, 65535)
        if p.get("protocol") not in (None, "", "TCP", "UDP"):
            raise DialectError(400, f"{w}.protocol must be TCP or UDP")
        _str(p, "name", most=63)
        out.append(dict(p))
    return out


def _resources(v: Any, what: str = "resources") -> dict[str, Any]:
    """Podling's ResourceRequirements: requests and limits of cpu (millicores) and memory (bytes)."""
    if v is None:
        return {}
    if not isinstance(v, dict) or set(v) - {"requests", "limits"}:
        raise DialectError(400, f"{what} holds requests and limits")
    out: dict[str, Any] = dict(v)
    for part in ("requests", "limits"):
        lst = v.get(part) or {}
        if not isinstance(lst, dict) or set(lst) - {"cpu", "memory"}:
            raise DialectError(400, f"{what}.{part} holds cpu (millicores) and memory (bytes)")
        lst = dict(lst)
        if "cpu" in lst:
            lst["cpu"] = _int(lst["cpu"], f"{what}.{part}.cpu (millicores)", 0, 1024 * 1000)
        if "memory" in lst:
            lst["memory"] = _int(lst["memory"], f"{what}.{part}.memory (bytes)", 0, 1 << 50)
        if part in v:
            out[part] = lst
    return out


def _corral_resources(res: dict[str, Any]) -> ResourcesSpec:
    """What a container asks for: its limits, else its requests (the server's defaults when neither)."""
    lim, req = res.get("limits") or {}, res.get("requests") or {}
    cpu = lim.get("cpu") or req.get("cpu")
    mem = lim.get("memory") or req.get("memory")
    return ResourcesSpec(cpu=cpu / 1000.0 if cpu else None, memory=mem or None)


def _meant(key: str, known: set[str]) -> str:
    """'did you mean image? ' for a key close to a known one (``imgae``), else ''."""
    close = did_you_mean(key, tuple(sorted(known)))
    return f"did you mean {close}? " if close else ""


def task_spec(data: dict[str, Any], check_fields: bool = True) -> tuple[JobSpec, dict[str, Any]]:
    """Podling's CreateTaskRequest as a job of one task, and what Podling shows of it that a job does
    not hold (probes, restartPolicy, ports, resources)."""
    if check_fields and (unknown := sorted(set(data) - TASK_FIELDS)):
        raise DialectError(400, f"unknown field {unknown[0]}: {_meant(unknown[0], TASK_FIELDS)}a task holds "
                           f"{', '.join(sorted(TASK_FIELDS))}")
    name, image = data.get("name"), data.get("image")
    if not name or not image:
        raise DialectError(400, "name and image are required")
    name, image = _str(data, "name", True), _str(data, "image", True, 1000)
    env = _string_map(data, "env")
    policy = data.get("restartPolicy")
    policy = None if policy in (None, "") else policy
    if policy is not None and policy not in RESTART_POLICIES:
        raise DialectError(400, f"restartPolicy must be one of {', '.join(RESTART_POLICIES)}")
    resources = _resources(data.get("resources"))
    extra: dict[str, Any] = {k: v for k, v in (
        ("livenessProbe", _probe(data.get("livenessProbe"), "livenessProbe")),
        ("readinessProbe", _probe(data.get("readinessProbe"), "readinessProbe")),
        ("restartPolicy", policy), ("ports", _ports(data.get("ports"))),
        ("resources", resources)) if v}
    try:
        spec = JobSpec(name=name or "task", tags=["podling"], tasks=[TaskSpec(
            name="task", image=image, env=env, resources=_corral_resources(resources))])
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"] if x not in ("tasks", 0)) or "task"
        raise DialectError(400, f"{where}: {err['msg']}") from e
    return spec, extra


# -- views ----------------------------------------------------------------------------------------
def _omit(d: dict[str, Any]) -> dict[str, Any]:
    """Go's omitempty: empty strings, maps, lists and nulls left out."""
    return {k: v for k, v in d.items() if v not in (None, "", {}, [])}


def task_view(t: PodlingTask) -> dict[str, Any]:
    spec = t.task["spec"] or {}
    ex = t.execution or {}
    error = t.task["error"] or (t.job["error"] if t.job["state"] in ("failed", "cancelled") else None)
    extra = t.row["extra"] or {}
    out = {"taskId": t.row["id"], "name": t.job["name"], "image": spec.get("image") or "",
           "env": spec.get("env") or None, "status": t.status, "nodeId": t.task["node_id"],
           "containerId": ex.get("container_id"), "createdAt": pd.go_time(t.row["created_at"]),
           "startedAt": pd.go_time(t.task["started_at"]), "finishedAt": pd.go_time(t.task["finished_at"]),
           "error": error, **extra}
    if t.status in ("pending",) and t.task["reason"]:
        out["schedulingError"] = t.task["reason"]
    keep = {"taskId", "name", "image", "status", "createdAt"}
    return {k: v for k, v in out.items() if k in keep or v not in (None, "", {}, [])}


def node_view(n: Row, alloc: Row | None, now: float) -> dict[str, Any]:
    labels = n.get("labels") or {}
    try:
        port = int(labels.get(PORT_LABEL, 0))
    except ValueError:
        port = 0
    if is_podling_node(n):
        online = n["state"] != "down" and now - number(n["last_heartbeat"]) <= pd.HEARTBEAT_TIMEOUT
    else:
        online = n["state"] in ("ready", "draining")
    cap = {"cpu": int(number(n["cpu"]) * 1000), "memory": int(number(n["memory"]))}
    used = {"cpu": int(number((alloc or {}).get("cpu")) * 1000), "memory": int(number((alloc or {}).get("memory")))}
    return {"nodeId": n["id"], "hostname": n["hostname"], "port": port,
            "status": "online" if online else "offline", "runningTasks": int(number((alloc or {}).get("n"))),
            "lastHeartbeat": pd.go_time(number(n["last_heartbeat"])),
            "resources": {"capacity": cap, "allocatable": cap, "used": used}}


def _node_views(svc: Services, only: str | None = None) -> list[dict[str, Any]]:
    now = time.time()
    with svc.coord.store.read() as tx:
        nodes = tx.nodes()
        allocs = {a["node_id"]: a for a in tx.allocations()}
    nodes.sort(key=lambda n: -number(n["last_heartbeat"]))  # as Podling's store lists them
    return [node_view(n, allocs.get(n["id"]), now) for n in nodes if only is None or n["id"] == only]


# -- health ---------------------------------------------------------------------------------------
@health_router.get("/health", summary="Podling: the master is up, and whether authentication is on")
def health(svc: Svc) -> dict[str, Any]:
    return {"status": "ok", "service": "podling-master", "authEnabled": svc.auth}


# -- tasks ----------------------------------------------------------------------------------------
# What task_spec accepts, as a schema: the nearest stricter (a task's probes and ports are left out): a name a
# job may have, an image without spaces or expressions.
_IMAGE = {"type": "string", "minLength": 1, "maxLength": 1000, "pattern": IMAGE_PATTERN}
TASK_BODY = json_body({"type": "object", "required": ["name", "image"], "additionalProperties": False,
                       "properties": {"name": {"type": "string", "pattern": NAME_PATTERN}, "image": _IMAGE,
                                      "restartPolicy": nullable({"enum": ["", *RESTART_POLICIES]})}})


@router.post("/api/v1/tasks", status_code=201, summary="Podling: create a task (a job of one task)",
             openapi_extra=TASK_BODY)
async def create_task(request: Request, svc: Svc) -> dict[str, Any]:
    spec, extra = task_spec(await json_object(request))
    tasks = tasks_of(svc)
    pid = await asyncio.to_thread(tasks.create, spec, extra)
    return task_view(await asyncio.to_thread(tasks.get, pid))


@router.get("/api/v1/tasks", summary="Podling: the tasks, newest first (the newest 1,000)")
def list_tasks(svc: Svc) -> list[dict[str, Any]]:
    return [task_view(t) for t in tasks_of(svc).recent(LIST_LIMIT)]


def _get(svc: Services, task_id: str) -> PodlingTask:
    try:
        return tasks_of(svc).get(task_id)
    except NotFound as e:
        raise DialectError(404, "task not found") from e


@router.get("/api/v1/tasks/{task_id}", summary="Podling: one task")
def get_task(task_id: str, svc: Svc) -> dict[str, Any]:
    return task_view(_get(svc, task_id))


def _caller(svc: Services, node_id: str | None, secret: str | None) -> str | None:
    """The node making a worker's call: with auth on, it must prove it is one (its id and secret)."""
    if not node_id and not secret:
        if svc.auth:
            raise DialectError(403, f"only a worker node may report a task's status: present {NODE_ID_HEADER} "
                               f"and {NODE_SECRET_HEADER}")
        return None
    try:
        svc.coord.authenticate(node_id or "", secret)
    except (NotFound, Forbidden) as e:
        raise DialectError(403, f"only a worker node may report a task's status: {e}") from e
    return node_id


@router.put("/api/v1/tasks/{task_id}/status", summary="Podling: a worker reports a task's status")
async def update_task_status(
    task_id: str, request: Request, svc: Svc,
    x_corral_node_id: Annotated[str | None, Header(max_length=64)] = None,
    x_corral_node_secret: Annotated[str | None, Header(max_length=200)] = None,
) -> dict[str, Any]:
    caller = await asyncio.to_thread(_caller, svc, x_corral_node_id, x_corral_node_secret)
    data = await json_object(request)
    if unknown := sorted(set(data) - {"status", "containerId", "error", "healthStatus", "nodeId"}):
        raise DialectError(400, f"unknown field {unknown[0]}")
    status = _str(data, "status", True, 20)
    assert status is not None
    if data.get("healthStatus") not in (None, "", "healthy", "unhealthy", "unknown"):
        raise DialectError(400, "healthStatus must be healthy, unhealthy or unknown")
    container = _str(data, "containerId", most=128)
    error = _str(data, "error", most=65536)
    hint = _str(data, "nodeId", most=32)
    _get(svc, task_id)
    t = await asyncio.to_thread(tasks_of(svc).set_status, task_id, status, caller=caller,
                                container_id=container, error=error, node_hint=hint)
    return task_view(t)


# -- nodes ----------------------------------------------------------------------------------------
# What register_node accepts, as a schema: the nearest stricter (a capacity in task slots, not cpu and memory).
REGISTER_BODY = json_body({"type": "object", "required": ["hostname", "port", "capacity"],
                           "additionalProperties": False, "properties": {
                               "hostname": {"type": "string", "minLength": 1, "maxLength": 200},
                               "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                               "capacity": {"type": "integer", "minimum": 1, "maximum": 1024}}})


@router.post("/api/v1/nodes/register", status_code=201, summary="Podling: register a worker node",
             openapi_extra=REGISTER_BODY)
async def register_node(request: Request, svc: Svc) -> dict[str, Any]:
    data = await json_object(request)
    if unknown := sorted(set(data) - {"hostname", "port", "cpu", "memory", "capacity"}):
        raise DialectError(400, f"unknown field {unknown[0]}")
    hostname = _str(data, "hostname", most=200)
    port = data.get("port")
    if not hostname or not port:
        raise DialectError(400, "hostname and port are required")
    port = _int(port, "port", 1, 65535)
    capacity = data.get("capacity")
    if capacity is not None:
        capacity = _int(capacity, "capacity", 1, 1024)
    cpu_s, mem_s = _str(data, "cpu", most=32), _str(data, "memory", most=32)
    if (cpu_s is None or mem_s is None) and capacity is None:
        raise DialectError(400, "hostname, port, cpu, and memory are required (or capacity, in task slots)")
    try:
        # Podling's task slot is about 1 CPU core and 1 GiB: a capacity of N slots offers that much.
        cpu = pd.parse_cpu(cpu_s) if cpu_s else int(capacity or 0) * 1000
        mem = pd.parse_memory(mem_s) if mem_s else int(capacity or 0) << 30
    except ValueError as e:
        which = "cpu" if cpu_s and "CPU" in str(e) else "memory"
        raise DialectError(400, f"invalid {which} format: {e}") from e
    row = await asyncio.to_thread(tasks_of(svc).register_node, hostname, int(port), cpu, mem)
    return _node_views(svc, row["id"])[0]


@router.post("/api/v1/nodes/{node_ref}/heartbeat", summary="Podling: a node registered here is alive")
def node_heartbeat(node_ref: str, svc: Svc) -> dict[str, Any]:
    try:
        node = tasks_of(svc).heartbeat(node_ref)
    except NotFound as e:
        raise DialectError(404, "node not found") from e
    return _node_views(svc, node["id"])[0]


@router.post("/api/v1/nodes/{node_ref}/deregister", summary="Podling: a node registered here goes offline")
def node_deregister(node_ref: str, svc: Svc) -> dict[str, str]:
    try:
        tasks_of(svc).deregister(node_ref)
    except NotFound as e:
        raise DialectError(404, "node not found") from e
    return {"message": "node deregistered successfully"}


@router.get("/api/v1/nodes", summary="Podling: every node, Corral's workers and those registered here")
def list_nodes(svc: Svc) -> list[dict[str, Any]]:
    return _node_views(svc)


# -- maintenance ----------------------------------------------------------------------------------
@router.post("/api/v1/prune", summary="Podling: remove finished tasks and pods and offline nodes (?all=true: all)")
def prune(svc: Svc, all: Annotated[str, Query(max_length=16)] = "") -> dict[str, int]:
    everything = all == "true"
    removed = tasks_of(svc).prune(everything)
    return {"podsRemoved": removed["pods"], "nodesRemoved": removed["nodes"],
            "servicesRemoved": removed["services"], "tasksRemoved": removed["tasks"]}


# -- the worker port's calls (agent/podling.py): node-authenticated --------------------------------
@node_router.post("/tasks/{task_id}/execute", status_code=202,
                  summary="A worker's Podling port: run this task on the calling node",
                  openapi_extra=json_body({"type": "object", "required": ["task"],
                                           "properties": {"task": TASK_BODY["requestBody"]["content"][
                                               "application/json"]["schema"]}}))
async def node_execute(node_id: NodeId, task_id: str, request: Request, svc: NodeAgent) -> dict[str, str]:
    if not 1 <= len(task_id) <= 32 or not all(c.isalnum() or c in "-_." for c in task_id):
        raise DialectError(400, "a task id is 1-32 letters, digits, '-', '_' or '.'")
    data = await json_object(request)
    task = data.get("task")
    if not isinstance(task, dict):
        raise DialectError(400, "invalid request: the body is {\"task\": {...}}")
    if task.get("taskId") != task_id:
        raise DialectError(400, "task ID mismatch")
    tasks = tasks_of(svc)
    try:
        await asyncio.to_thread(tasks.pin, task_id, node_id)
    except NotFound:
        spec, extra = task_spec(task, check_fields=False)
        await asyncio.to_thread(tasks.create, spec, extra, task_id=task_id, node_id=node_id)
    return {"message": "task execution started", "taskId": task_id}


def _on_node(svc: Services, task_id: str, node_id: str) -> PodlingTask:
    t = _get(svc, task_id)
    pinned = (t.task["node_selector"] or {}).get(NODE_ID_LABEL)
    if t.task["node_id"] != node_id and not (t.status == "pending" and pinned == node_id):
        raise DialectError(404, "task not found")
    return t


@node_router.get("/tasks/{task_id}", summary="A worker's Podling port: a task this node runs")
def node_task(node_id: NodeId, task_id: str, svc: NodeAgent) -> dict[str, Any]:
    return task_view(_on_node(svc, task_id, node_id))


@node_router.get("/tasks/{task_id}/logs", summary="A worker's Podling port: the last lines of a task it runs")
def node_task_logs(node_id: NodeId, task_id: str, svc: NodeAgent, tail: int = 100) -> dict[str, Any]:
    if not 0 <= tail <= MAX_TAIL:
        raise DialectError(400, f"invalid tail parameter: 0 to {MAX_TAIL}")
    _on_node(svc, task_id, node_id)
    lines = tasks_of(svc).logs(task_id, tail) if tail else []
    return {"taskId": task_id, "logs": "".join(r["line"] + "\n" for r in lines), "tail": tail}


# -- pods -----------------------------------------------------------------------------------------
# The escalations (hostNetwork, hostPID, hostIPC; a container's securityContext) in Kubernetes' names, as the
# core's pods take them: a 400 but for an admin on a server that allows them (--allow-admin-escalation).
POD_ESCALATIONS = ("hostNetwork", "hostPID", "hostIPC")
POD_FIELDS = {"name", "namespace", "labels", "annotations", "containers", "restartPolicy", *POD_ESCALATIONS}
CONTAINER_FIELDS = {"name", "image", "command", "args", "env", "ports", "livenessProbe", "readinessProbe",
                    "workingDir", "resources", "securityContext"}
# What a worker fills in on a Podling container: accepted in a request (Go's decoder would) and ignored.
CONTAINER_RUNTIME_FIELDS = {"containerId", "status", "healthStatus", "startedAt", "finishedAt", "exitCode",
                            "error", "restartCount"}
HIDDEN_POD_STATES = ("terminating", "terminated")  # deleted: gone, as Podling's delete removes the pod
POD_STATUSES = ("pending", "scheduled", "running", "succeeded", "failed", "unknown")


def _core_probe(p: dict[str, Any], ports: list[dict[str, Any]]) -> dict[str, Any]:
    """Podling's health check ({type, httpPath, port, command, ...}) as the core's probe (Kubernetes')."""
    port = p.get("port") or (ports[0]["containerPort"] if ports else 0)
    out: dict[str, Any] = {k: p[k] for k in ("initialDelaySeconds", "periodSeconds", "timeoutSeconds",
                                             "successThreshold", "failureThreshold") if p.get(k)}
    if p["type"] == "exec":
        out["exec"] = {"command": p["command"]}
    elif not port:
        raise DialectError(400, f"a {p['type']} probe needs a port (or a container port)")
    elif p["type"] == "http":
        out["httpGet"] = {"path": p["httpPath"], "port": port}
    else:
        out["tcpSocket"] = {"port": port}
    return out


def _podling_probe(p: dict[str, Any] | None) -> dict[str, Any] | None:
    """The core's probe back in Podling's shape."""
    if not p:
        return None
    out: dict[str, Any] = {k: p[k] for k in ("initialDelaySeconds", "periodSeconds", "timeoutSeconds",
                                             "successThreshold", "failureThreshold") if k in p}
    if p.get("exec"):
        out.update(type="exec", command=p["exec"]["command"])
    elif p.get("httpGet"):
        out.update(type="http", httpPath=p["httpGet"].get("path", "/"), port=p["httpGet"]["port"])
    elif p.get("tcpSocket"):
        out.update(type="tcp", port=p["tcpSocket"]["port"])
    return out


def _core_quantities(q: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if q.get("cpu"):
        out["cpu"] = f"{q['cpu']}m"
    if q.get("memory"):
        out["memory"] = q["memory"]
    return out


def _podling_quantities(q: dict[str, Any] | None) -> dict[str, Any]:
    q = q or {}
    out: dict[str, Any] = {}
    if q.get("cpu") is not None:
        out["cpu"] = round(parse_cpu(q["cpu"]) * 1000)
    if q.get("memory") is not None:
        out["memory"] = parse_size(q["memory"])
    return out


def _container(c: Any, i: int) -> dict[str, Any]:
    w = f"containers[{i}]"
    if not isinstance(c, dict):
        raise DialectError(400, f"{w} must be an object")
    if unknown := sorted(set(c) - CONTAINER_FIELDS - CONTAINER_RUNTIME_FIELDS):
        raise DialectError(400, f"{w}: unknown field {unknown[0]}")
    if not c.get("name"):
        raise DialectError(400, "all containers must have a name")
    if not c.get("image"):
        raise DialectError(400, "all containers must have an image")
    for key in ("name", "image"):
        if not isinstance(c[key], str):
            raise DialectError(400, f"{w}.{key} must be a string")
    ports = _ports(c.get("ports"), f"{w}.ports")
    out: dict[str, Any] = {k: c[k] for k in ("name", "image", "command", "args", "workingDir", "securityContext")
                           if c.get(k)}
    out["env"] = c.get("env") or {}
    out["ports"] = [{k: v for k, v in p.items() if v not in (None, "", 0)} for p in ports]
    res = _resources(c.get("resources"), f"{w}.resources")
    out["resources"] = {part: _core_quantities(res.get(part) or {}) for part in ("requests", "limits")}
    for key in ("livenessProbe", "readinessProbe"):
        probe = _probe(c.get(key), f"{w}.{key}")
        if probe:
            out[key] = _core_probe(probe, out["ports"])
    return out


def pod_spec(data: dict[str, Any]) -> PodSpec:
    """Podling's CreatePodRequest as the core's PodSpec."""
    if unknown := sorted(set(data) - POD_FIELDS):
        raise DialectError(400, f"unknown field {unknown[0]}: {_meant(unknown[0], POD_FIELDS)}a pod holds "
                           f"{', '.join(sorted(POD_FIELDS))}")
    if not data.get("name"):
        raise DialectError(400, "name is required")
    containers = data.get("containers")
    if not containers:
        raise DialectError(400, "at least one container is required")
    if not isinstance(containers, list):
        raise DialectError(400, "containers must be a list")
    cs = [_container(c, i) for i, c in enumerate(containers)]
    if len({c["name"] for c in cs}) != len(cs):
        raise DialectError(400, "container names must be unique within a pod")
    namespace = data.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        raise DialectError(400, "namespace must be a string")
    body = {"name": data["name"], "namespace": namespace or "default",
            "labels": data.get("labels") or {}, "annotations": data.get("annotations") or {}, "containers": cs}
    if data.get("restartPolicy"):
        body["restartPolicy"] = data["restartPolicy"]
    body |= {k: data[k] for k in POD_ESCALATIONS if data.get(k) is not None}
    try:
        return PodSpec.model_validate(body)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "pod"
        raise DialectError(400, f"{where}: {err['msg']}") from e


def _health(c: Row, spec: dict[str, Any]) -> str:
    if c.get("ready"):
        return "healthy"
    if c.get("state") == "running" and (spec.get("readinessProbe") or spec.get("livenessProbe")):
        return "unhealthy"
    return "unknown"


def pod_view(p: Row) -> dict[str, Any]:
    spec = p["spec"] or {}
    status = {c["name"]: c for c in p.get("containers") or ()}
    published = {(x["container"], x["containerPort"], x["protocol"]): x for x in p.get("ports") or ()}
    containers = []
    for c in spec.get("containers") or ():
        st = status.get(c["name"], {})
        ports = []
        for port in c.get("ports") or ():
            held = published.get((c["name"], port["containerPort"], port.get("protocol", "TCP")), {})
            ports.append(_omit({"name": port.get("name"), "containerPort": port["containerPort"],
                                "protocol": port.get("protocol", "TCP"),
                                "hostPort": held.get("hostPort") or port.get("hostPort")}))
        res = c.get("resources") or {}
        containers.append(_omit({
            "name": c["name"], "image": c.get("image"), "command": c.get("command"), "args": c.get("args"),
            "env": c.get("env"), "ports": ports, "livenessProbe": _podling_probe(c.get("livenessProbe")),
            "readinessProbe": _podling_probe(c.get("readinessProbe")), "workingDir": c.get("workingDir"),
            "resources": _omit({"requests": _podling_quantities(res.get("requests")),
                                "limits": _podling_quantities(res.get("limits"))}),
            "containerId": st.get("container_id"), "status": st.get("state") or "waiting",
            "healthStatus": _health(st, c), "startedAt": pd.go_time(st.get("started_at")),
            "finishedAt": pd.go_time(st.get("finished_at")), "exitCode": st.get("exit_code"),
            "error": st.get("error") or (st.get("reason") if st.get("state") != "running" else None),
            "restartCount": st.get("restart_count") or None}) | (
            {"exitCode": st["exit_code"]} if st.get("exit_code") is not None else {}))
    reason = None
    if p["state"] == "failed":
        reason = "Failed"
    elif "back-off" in (p["reason"] or ""):
        reason = "BackOff"
    elif p["state"] == "pending" and p["reason"]:
        reason = "Unschedulable"
    elif p["state"] == "unknown":
        reason = "NodeLost"
    out = {"podId": p["id"], "name": p["name"], "namespace": p["namespace"], "labels": p["labels"] or None,
           "annotations": spec.get("annotations") or None, "containers": containers, "status": p["state"],
           "nodeId": p["node_id"], "restartPolicy": p["restart_policy"], "createdAt": pd.go_time(p["created_at"]),
           "scheduledAt": pd.go_time(p["scheduled_at"]), "startedAt": pd.go_time(p["started_at"]),
           "finishedAt": pd.go_time(p["finished_at"]), "message": p["reason"], "reason": reason}
    keep = {"podId", "name", "containers", "status", "createdAt"}
    return {k: v for k, v in out.items() if k in keep or v not in (None, "", {}, [])}


def _pod(svc: Services, pod_id: str) -> Row:
    try:
        p = svc.coord.pods.get(pod_id)
    except NotFound as e:
        raise DialectError(404, "pod not found") from e
    if p["state"] in HIDDEN_POD_STATES:
        raise DialectError(404, "pod not found")
    return p


_NAMESPACE_OR_BLANK = r"^(?:[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?)?$"  # blank: default
# What pod_spec accepts, as a schema: the nearest stricter (one container, of an image; ports, probes and
# resources left out): names as the core's pods have them (corral.domain.pods).
POD_BODY = json_body({"type": "object", "required": ["name", "containers"], "additionalProperties": False,
                      "properties": {
                          "name": {"type": "string", "maxLength": 200, "pattern": DNS_NAME_RE.pattern},
                          "namespace": nullable({"type": "string", "pattern": _NAMESPACE_OR_BLANK}),
                          "containers": {"type": "array", "minItems": 1, "maxItems": 1, "items": {
                              "type": "object", "required": ["name", "image"], "additionalProperties": False,
                              "properties": {"name": {"type": "string", "pattern": DNS_LABEL_RE.pattern},
                                             "image": {"type": "string", "maxLength": 1000,
                                                       "pattern": f"^[^{WS}]+$"}}}}}})


@router.post("/api/v1/pods", status_code=201, summary="Podling: create a pod", openapi_extra=POD_BODY)
async def create_pod(request: Request, svc: Svc) -> dict[str, Any]:
    spec = pod_spec(await json_object(request))
    pid = pd.new_id(time.time())
    p = await asyncio.to_thread(svc.coord.pods.create, spec, pod_id=pid, origin="podling")
    return pod_view(p)


@router.get("/api/v1/pods", summary="Podling: the pods (the oldest 1,000 not deleted)")
def list_pods(svc: Svc) -> list[dict[str, Any]]:
    return [pod_view(p) for p in svc.coord.pods.list(limit=LIST_LIMIT, states=POD_STATUSES)]


@router.get("/api/v1/pods/{pod_id}", summary="Podling: one pod")
def get_pod(pod_id: str, svc: Svc) -> dict[str, Any]:
    return pod_view(_pod(svc, pod_id))


@router.delete("/api/v1/pods/{pod_id}", summary="Podling: delete a pod (its containers are stopped)")
def delete_pod(pod_id: str, svc: Svc) -> dict[str, str]:
    _pod(svc, pod_id)
    pods = svc.coord.pods
    p = pods.delete(pod_id)
    if p["state"] in ("terminated", "succeeded", "failed"):
        with contextlib.suppress(NotFound, Conflict):
            pods.purge(pod_id)
    return {"message": "pod deleted successfully"}


@router.put("/api/v1/pods/{pod_id}/status", summary="Podling: a worker reports a pod's status")
async def update_pod_status(
    pod_id: str, request: Request, svc: Svc,
    x_corral_node_id: Annotated[str | None, Header(max_length=64)] = None,
    x_corral_node_secret: Annotated[str | None, Header(max_length=200)] = None,
) -> dict[str, Any]:
    caller = await asyncio.to_thread(_caller, svc, x_corral_node_id, x_corral_node_secret)
    data = await json_object(request)
    if unknown := sorted(set(data) - {"status", "containers", "message", "reason", "annotations"}):
        raise DialectError(400, f"unknown field {unknown[0]}")
    status = _str(data, "status", True, 20)
    if status not in POD_STATUSES:
        raise DialectError(400, f"unknown status '{status}': one of {', '.join(POD_STATUSES)}")
    containers = data.get("containers") or []
    if not isinstance(containers, list) or not all(isinstance(c, dict) for c in containers):
        raise DialectError(400, "containers must be a list of objects")
    p = await asyncio.to_thread(_pod, svc, pod_id)
    why = pod_transition_error(p["state"], status)
    if why:
        raise DialectError(400, why)
    if caller is not None and p["node_id"] != caller:
        raise DialectError(403, f"pod {pod_id} is not on node {caller}")
    if not p["node_id"] or not p["instance_id"]:
        raise DialectError(409, f"pod {pod_id} is not placed on a node")
    await asyncio.to_thread(svc.coord.pods.sync, p["node_id"], [_pod_status(p, status, containers)], [])
    return pod_view(await asyncio.to_thread(_pod, svc, pod_id))


# Podling's pod flow, as a worker may report it: the core places pods, so "scheduled" is its word alone.
POD_TRANSITIONS = {"scheduled": {"running", "succeeded", "failed"}, "running": {"running", "succeeded", "failed"},
                   "unknown": {"running", "succeeded", "failed"}}


def pod_transition_error(current: str, wanted: str) -> str | None:
    if wanted in POD_TRANSITIONS.get(current, set()):
        return None
    if current in ("succeeded", "failed"):
        return f"the pod is {current} already; its status cannot change"
    if current == "pending" or wanted in ("pending", "scheduled", "unknown"):
        return f"a {current} pod cannot become {wanted}: pods are placed by the coordinator"
    return f"a {current} pod cannot become {wanted}"


def _pod_status(p: Row, status: str, containers: list[dict[str, Any]]) -> PodStatus:
    now = time.time()
    cs = []
    for c in containers:
        given = c.get("status")
        state = given if isinstance(given, str) and given in ("waiting", "running", "terminated") else (
            "running" if status == "running" else "terminated")
        code = c.get("exitCode")
        cs.append(ContainerStatus(
            name=str(c.get("name") or ""), state=state, container_id=c.get("containerId") or None,
            restart_count=c["restartCount"] if isinstance(c.get("restartCount"), int) else 0,
            exit_code=code if isinstance(code, int) and not isinstance(code, bool) else None,
            ready=c.get("healthStatus") == "healthy" or (state == "running" and c.get("healthStatus") is None),
            error=str(c["error"])[:65536] if c.get("error") else None,
            started_at=now if state == "running" else None, finished_at=now if state == "terminated" else None))
    return PodStatus(p["instance_id"], p["id"], status, cs, now)


# -- services -------------------------------------------------------------------------------------
SERVICE_FIELDS = {"name", "namespace", "type", "selector", "ports", "labels", "annotations", "sessionAffinity"}
SERVICE_UPDATE_FIELDS = {"selector", "ports", "labels", "annotations", "sessionAffinity"}


def _core_services(svc: Services) -> CoreServices:
    return CoreServices(svc.coord)


def _affinity(data: dict[str, Any]) -> None:
    if data.get("sessionAffinity") not in (None, "", "None"):
        raise DialectError(400, "sessionAffinity: only None is supported (connections are spread round robin)")


_PORT_NUMBERS = ("port", "targetPort", "nodePort")


def _service_ports(v: Any) -> list[dict[str, Any]]:
    if not isinstance(v, list) or not v:
        raise DialectError(400, "at least one port is required")
    out = []
    for i, p in enumerate(v):
        if not isinstance(p, dict):
            raise DialectError(400, f"ports[{i}] must be an object")
        # Go's zero values are absent: null, "", and 0 for a number (not a false, nor a 0 where text goes).
        out.append({k: x for k, x in p.items() if not (x is None or (isinstance(x, str) and x == "")
                                                       or (k in _PORT_NUMBERS and type(x) is int and x == 0))})
    return out


def service_spec(data: dict[str, Any]) -> ServiceSpec:
    try:
        return ServiceSpec.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "service"
        raise DialectError(400, f"{where}: {err['msg']}") from e


def service_view(s: Row) -> dict[str, Any]:
    ports = [_omit({"name": p.get("name"), "protocol": p.get("protocol") or "TCP", "port": p["port"],
                    "targetPort": p.get("targetPort") or p["port"], "nodePort": p.get("nodePort")})
             for p in s["ports"]]
    return _omit({"serviceId": s["id"], "name": s["name"], "namespace": s["namespace"], "type": s["type"],
                  "selector": s["selector"], "ports": ports, "labels": s["labels"], "annotations": s["annotations"],
                  "createdAt": pd.go_time(s["created_at"]), "updatedAt": pd.go_time(s["updated_at"])})


def _service(svc: Services, service_id: str) -> Row:
    try:
        row: Row = _core_services(svc).get(service_id)
    except NotFound as e:
        raise DialectError(404, "service not found") from e
    return row


# What create_service and update_service accept, as a schema: the nearest stricter (one port; a ClusterIP
# service): the core's names and label maps (corral.domain.services).
_SELECTOR = {"type": "object", "minProperties": 1, "maxProperties": MAX_LABELS,
             "propertyNames": {"minLength": 1, "maxLength": MAX_LABEL_KEY},
             "additionalProperties": {"type": "string", "maxLength": MAX_LABEL_VALUE}}
# A port's null or empty field is absent (_service_ports), as Go's decoder reads a zero value.
_SERVICE_PORTS = {"type": "array", "minItems": 1, "maxItems": 1, "items": {
    "type": "object", "required": ["port"], "additionalProperties": False, "properties": {
        "port": {"type": "integer", "minimum": 1, "maximum": 65535}, "protocol": {"enum": ["TCP", "UDP", "", None]},
        "name": nullable({"type": "string", "pattern": f"^(?:{PORT_NAME.pattern[1:-1]})?$"})}}}
SERVICE_BODY = json_body({"type": "object", "required": ["name", "selector", "ports"], "additionalProperties": False,
                          "properties": {"name": {"type": "string", "pattern": DNS_LABEL.pattern},
                                         "selector": _SELECTOR, "ports": _SERVICE_PORTS}})
SERVICE_UPDATE_BODY = json_body({"type": "object", "additionalProperties": False,
                                 "properties": {"selector": _SELECTOR, "ports": _SERVICE_PORTS}})


@router.post("/api/v1/services", status_code=201, summary="Podling: create a service", openapi_extra=SERVICE_BODY)
async def create_service(request: Request, svc: Svc) -> dict[str, Any]:
    data = await json_object(request)
    if unknown := sorted(set(data) - SERVICE_FIELDS):
        raise DialectError(400, f"unknown field {unknown[0]}")
    if not data.get("name"):
        raise DialectError(400, "name is required")
    if not data.get("selector"):
        raise DialectError(400, "selector is required")
    ports = _service_ports(data.get("ports"))
    _affinity(data)
    if data.get("type") not in (None, "", "ClusterIP", "NodePort"):
        raise DialectError(400, "type must be ClusterIP or NodePort (Corral has no load balancers)")
    body = {k: v for k, v in data.items() if k != "sessionAffinity" and v not in (None, "")}
    spec = service_spec({**body, "ports": ports})
    row = await asyncio.to_thread(_core_services(svc).create, spec, service_id=pd.new_id(time.time()),
                                  origin="podling")
    return service_view(row)


@router.get("/api/v1/services", summary="Podling: the services (?namespace= for one namespace's)")
def list_services(svc: Svc, namespace: Annotated[str, Query(max_length=63)] = "") -> list[dict[str, Any]]:
    return [service_view(s) for s in _core_services(svc).list(namespace or None, limit=LIST_LIMIT)]


@router.get("/api/v1/services/{service_id}", summary="Podling: one service")
def get_service(service_id: str, svc: Svc) -> dict[str, Any]:
    return service_view(_service(svc, service_id))


@router.put("/api/v1/services/{service_id}", summary="Podling: change a service's selector, ports, labels",
            openapi_extra=SERVICE_UPDATE_BODY)
async def update_service(service_id: str, request: Request, svc: Svc) -> dict[str, Any]:
    data = await json_object(request)
    if unknown := sorted(set(data) - SERVICE_UPDATE_FIELDS):
        raise DialectError(400, f"unknown field {unknown[0]}: a service's {', '.join(sorted(SERVICE_UPDATE_FIELDS))} "
                           "can change")
    _affinity(data)
    cur = await asyncio.to_thread(_service, svc, service_id)
    body = {"name": cur["name"], "namespace": cur["namespace"], "type": cur["type"], "selector": cur["selector"],
            "ports": cur["ports"], "labels": cur["labels"], "annotations": cur["annotations"]}
    for key in ("selector", "labels", "annotations"):
        if data.get(key) is not None:
            body[key] = data[key]
    if data.get("ports") is not None:
        body["ports"] = _service_ports(data["ports"])
    spec = service_spec(body)
    try:
        row = await asyncio.to_thread(_core_services(svc).update, service_id, spec)
    except NotFound as e:
        raise DialectError(404, "service not found") from e
    return service_view(row)


@router.delete("/api/v1/services/{service_id}", summary="Podling: delete a service")
def delete_service(service_id: str, svc: Svc) -> dict[str, str]:
    try:
        _core_services(svc).delete(service_id)
    except NotFound as e:
        raise DialectError(404, "service not found") from e
    return {"message": "service deleted"}


@router.get("/api/v1/services/{service_id}/endpoints", summary="Podling: the ready pods behind a service")
def service_endpoints(service_id: str, svc: Svc) -> dict[str, Any]:
    s = _service(svc, service_id)
    eps = _core_services(svc).endpoints(service_id)
    subsets: dict[tuple[Any, ...], dict[str, Any]] = {}
    for e in eps:
        key = (e.get("port_name"), e["port"])
        sub = subsets.setdefault(key, {"addresses": [], "ports": [_omit(
            {"name": e.get("port_name"), "port": e["port"], "protocol": next(
                (p.get("protocol") or "TCP" for p in s["ports"] if p["port"] == e["service_port"]), "TCP")})]})
        sub["addresses"].append({"ip": e["address"], "podId": e["pod_id"], "nodeId": e["node_id"]})
    return {"serviceId": s["id"], "serviceName": s["name"], "namespace": s["namespace"],
            "subsets": list(subsets.values()), "updatedAt": pd.go_time(time.time())}
