"""Tork's REST API over Corral's core (first slice: tasks that run one after another). See docs/api/tork.md.

A Tork job is a Corral job; Tork's ``execution`` entries are Corral's executions (one per attempt). Ids are
Corral's 32-hex ids, states are upper-cased, errors are ``{"message": "..."}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import re
import socket
import time
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

import corral
from corral.api.body import BadBody, read_body
from corral.api.deps import Services, services
from corral.api.dialects.base import DialectError, route_class
from corral.api.idempotency import idem_key
from corral.api.openapi import IMAGE_PATTERN, NAME_PATTERN, TEXT_NO_EXPR, WS, json_body, nullable
from corral.api.timefmt import rfc3339
from corral.coordinator.errors import Conflict, NotFound
from corral.coordinator.policy import escalation_message
from corral.domain import workflow
from corral.domain.nodes import safe_node
from corral.domain.spec import MAX_SEARCH, MAX_VALUE, JobSpec
from corral.store.sql import COUNT_CAP, Row, Tx

TERMINAL = {"completed", "failed", "cancelled"}
JOB_FIELDS = {"name", "description", "tags", "inputs", "secrets", "tasks", "priority", "output", "defaults",
              "webhooks", "autoDelete", "env"}
JOB_LATER = {"permissions", "schedule"}
# Corral's escalation fields, taken as the native API takes them: the policy refuses them (400) but for an admin
# on a server that allows them (corral server --allow-admin-escalation); other spellings are refused here.
TASK_ESCALATIONS = ("privileged", "cap_add", "network_mode", "pid", "ipc", "devices")
TASK_FIELDS = {"name", "description", "image", "run", "cmd", "entrypoint", "env", "queue", "timeout", "retry",
               "workdir", "parallel", "each", "subjob", "pre", "post", "if", "var", "mounts", "files", "limits",
               "sidecars", "gpus", "tags", "priority", "depends_on", "networks", "registry", "ports", "probe",
               *TASK_ESCALATIONS}
TASK_LATER: set[str] = set()
PORT_RE = re.compile(r"^(\d{1,5})(?:/(tcp|udp))?$")
LOG_PAGE_SIZE, LOG_PAGE_MOST = 25, 100  # a log page's size when none is asked, and the most it holds (Tork's)
DOCKER_SIZE = re.compile(r"^(\d+)\s*([kKmMgG]?)[bB]?$")

def render_error(request: Request, e: DialectError) -> Response:
    return JSONResponse({"message": e.message}, status_code=e.status, headers=e.headers)


router = APIRouter(tags=["tork"], route_class=route_class(render_error))
Svc = Annotated[Services, Depends(services)]


# -- translation ----------------------------------------------------------------------------------
def _check_fields(data: dict[str, Any], known: set[str], later: set[str], where: str) -> None:
    for key in data:
        if key not in known and (refused := escalation_message(f"{where}{key}")) is not None:
            raise DialectError(400, refused)
        if key in later:
            raise DialectError(400, f"{where}{key} is not supported yet")
        if key not in known:
            raise DialectError(400, f"{where}{key} is not a known Tork field")


def _limits(limits: Any, where: str) -> dict[str, Any]:
    """Tork's limits {cpus, memory} as Corral resources; memory in Docker's units ('10m', '1g', '512MB')."""
    if not isinstance(limits, dict) or set(limits) - {"cpus", "memory"}:
        raise DialectError(400, f"{where}limits: only 'cpus' and 'memory' are known")
    out: dict[str, Any] = {}
    if limits.get("cpus") is not None:
        try:
            out["cpu"] = float(limits["cpus"])
        except (TypeError, ValueError):
            raise DialectError(400, f"{where}limits.cpus: '{limits['cpus']}' is not a number") from None
    if limits.get("memory") is not None:
        m = DOCKER_SIZE.match(str(limits["memory"]).strip())
        if m is None:
            raise DialectError(400, f"{where}limits.memory: '{limits['memory']}' is not a size such as 512m or 1g")
        out["memory"] = m.group(1) + {"": "", "k": "Ki", "m": "Mi", "g": "Gi"}[m.group(2).lower()]
    return out


def _ports(ports: Any, where: str) -> list[dict[str, Any]]:
    """Tork's ports (container ports to publish: 8080, "8080" or "8080/udp") as Corral's [{port, protocol}]."""
    if not isinstance(ports, list):
        raise DialectError(400, f"{where}ports must be a list of container ports, such as [8080]")
    out = []
    for i, p in enumerate(ports):
        m = PORT_RE.match(str(p).strip()) if isinstance(p, (int, str)) and not isinstance(p, bool) else None
        if m is None:
            raise DialectError(400, f"{where}ports[{i}]: '{str(p)[:100]}' is not a port such as 8080 or '8080/udp'")
        out.append({"port": int(m.group(1)), "protocol": m.group(2) or "tcp"})
    return out


def _task(t: Any, where: str) -> dict[str, Any]:
    if not isinstance(t, dict):
        raise DialectError(400, f"{where.rstrip('.')} must be a mapping")
    _check_fields(t, TASK_FIELDS, TASK_LATER, where)
    out: dict[str, Any] = {k: t[k] for k in ("name", "description", "image", "run", "entrypoint", "env", "queue",
                                             "timeout", "workdir", "if", "var", "files", "mounts", "depends_on",
                                             "networks", "registry", "probe", *TASK_ESCALATIONS)
                           if t.get(k) is not None}
    if t.get("ports") is not None:
        out["ports"] = _ports(t["ports"], where)
    if t.get("cmd") is not None:
        out["command"] = t["cmd"]
    retry = t.get("retry")
    if retry is not None:
        if not isinstance(retry, dict) or set(retry) - {"limit", "attempts"}:
            raise DialectError(400, f"{where}retry: only 'limit' is supported")
        out["retry"] = {"limit": retry.get("limit", 0)}
    if t.get("limits") is not None:
        out["resources"] = _limits(t["limits"], where)
    if t.get("gpus") is not None:
        gpus = str(t["gpus"])
        if not gpus.isdigit():
            raise DialectError(400, f"{where}gpus: give a number of whole GPUs, e.g. '1'")
        out.setdefault("resources", {})["gpu"] = int(gpus)
    for k in ("pre", "post", "sidecars"):
        if t.get(k) is not None:
            if not isinstance(t[k], list):
                raise DialectError(400, f"{where}{k} must be a list of tasks")
            out[k] = [_task(c, f"{where}{k}[{i}].") for i, c in enumerate(t[k])]
    par = t.get("parallel")
    if par is not None:
        if not isinstance(par, dict) or not isinstance(par.get("tasks"), list):
            raise DialectError(400, f"{where}parallel needs 'tasks', a list")
        out["parallel"] = {"tasks": [_task(c, f"{where}parallel.tasks[{i}].") for i, c in enumerate(par["tasks"])]}
    each = t.get("each")
    if each is not None:
        if not isinstance(each, dict) or "task" not in each or "list" not in each:
            raise DialectError(400, f"{where}each needs 'list' and 'task'")
        out["each"] = {**{k: each[k] for k in ("list", "var", "concurrency") if each.get(k) is not None},
                       "task": _task(each["task"], f"{where}each.task.")}
    sub = t.get("subjob")
    if sub is not None:
        if not isinstance(sub, dict) or not isinstance(sub.get("tasks"), list):
            raise DialectError(400, f"{where}subjob needs 'tasks', a list")
        unknown = set(sub) - {"name", "description", "tasks", "inputs", "secrets", "output", "detached", "webhooks"}
        if unknown:
            raise DialectError(400, f"{where}subjob.{sorted(unknown)[0]} is not supported")
        out["subjob"] = {**{k: sub[k] for k in ("name", "description", "inputs", "secrets", "output", "detached",
                                                "webhooks")
                            if sub.get(k) is not None},
                         "tasks": [_task(c, f"{where}subjob.tasks[{i}].") for i, c in enumerate(sub["tasks"])]}
    return out


def to_spec(data: dict[str, Any]) -> JobSpec:
    _check_fields(data, JOB_FIELDS, JOB_LATER, "")
    tasks = data.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise DialectError(400, "tasks: a job needs at least one task")
    body = {k: data[k] for k in ("name", "description", "tags", "priority", "inputs", "secrets", "output",
                                 "webhooks", "autoDelete", "env") if data.get(k) is not None}
    defaults = data.get("defaults")
    if defaults is not None:
        if not isinstance(defaults, dict) or set(defaults) - {"retry", "limits", "timeout", "queue", "priority"}:
            raise DialectError(400, "defaults: only retry, limits, timeout, queue and priority are known")
        body["defaults"] = {k: defaults[k] for k in ("timeout", "queue", "priority") if defaults.get(k) is not None}
        if defaults.get("retry") is not None:
            body["defaults"]["retry"] = {"limit": (defaults["retry"] or {}).get("limit", 0)}
        if defaults.get("limits") is not None:
            body["defaults"]["resources"] = _limits(defaults["limits"], "defaults.")
    body["tasks"] = [_task(t, f"tasks[{i}].") for i, t in enumerate(tasks)]
    try:
        return JobSpec.model_validate(body)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]).replace("command", "cmd") or "job"
        raise DialectError(400, f"{loc}: {err['msg']}") from e


def task_spec_view(spec: dict[str, Any]) -> dict[str, Any]:
    """A task as Tork's job definition shows it (Tork's field names), nested tasks included."""
    out: dict[str, Any] = {k: spec[k] for k in ("name", "description", "image", "run", "entrypoint", "queue",
                                                "timeout", "workdir", "if", "var", "files", "mounts", "depends_on",
                                                "networks", "registry", "probe")
                           if spec.get(k) not in (None, {}, [])}
    if spec.get("ports"):
        out["ports"] = [p["port"] if p.get("protocol", "tcp") == "tcp" else f"{p['port']}/{p['protocol']}"
                        for p in spec["ports"]]
    if spec.get("command") is not None:
        out["cmd"] = spec["command"]
    if spec.get("env"):
        out["env"] = spec["env"]
    if (spec.get("retry") or {}).get("limit"):
        out["retry"] = {"limit": spec["retry"]["limit"]}
    res = spec.get("resources") or {}
    if res.get("cpu") is not None or res.get("memory") is not None:
        out["limits"] = {k: str(res[c]) for k, c in (("cpus", "cpu"), ("memory", "memory")) if res.get(c) is not None}
    for k in ("pre", "post", "sidecars"):
        if spec.get(k):
            out[k] = [task_spec_view(c) for c in spec[k]]
    if spec.get("parallel"):
        out["parallel"] = {"tasks": [task_spec_view(c) for c in spec["parallel"]["tasks"]]}
    if spec.get("each"):
        out["each"] = {**{k: v for k, v in spec["each"].items() if k != "task"},
                       "task": task_spec_view(spec["each"]["task"])}
    if spec.get("subjob"):
        out["subjob"] = {**{k: v for k, v in spec["subjob"].items() if k != "tasks"},
                         "tasks": [task_spec_view(c) for c in spec["subjob"]["tasks"]]}
    return out


def summary(j: Row) -> dict[str, Any]:
    spec = j.get("spec") or {}
    out = {"id": j["id"], "name": j["name"], "description": spec.get("description"),
           "state": j["state"].upper(), "tags": j["tags"], "inputs": spec.get("inputs") or None,
           "createdAt": rfc3339(j["created_at"]), "startedAt": rfc3339(j["started_at"]),
           "completedAt": rfc3339(j["finished_at"]) if j["state"] == "completed" else None,
           "failedAt": rfc3339(j["finished_at"]) if j["state"] == "failed" else None,
           "error": j["error"], "result": j.get("output"), "parentId": j.get("parent_task_id")}
    return redacted({k: v for k, v in out.items() if v is not None or k in ("error", "startedAt")}, spec)


def redacted(out: dict[str, Any], job_spec: dict[str, Any]) -> dict[str, Any]:
    """``out`` as the API shows it for a job with ``job_spec``: see ``workflow.shown``."""
    return workflow.shown(out, workflow.secrets_in(job_spec))


def task_view(t: Row, e: Row | None) -> dict[str, Any]:
    """A task as Tork shows it in a job's execution list and at GET /tasks/{id}: Tork's task is one run of
    it, so a placed task shows its latest attempt; a composite task (parallel, each, subjob) shows itself."""
    spec = t["spec"]
    state = e["state"] if e is not None else t["state"]
    out = {"id": e["id"] if e is not None else t["id"], "taskId": t["id"], "jobId": t["job_id"],
           "parentId": t["parent_id"], "position": t["position"] + 1, "name": t["name"],
           "description": spec.get("description"), "state": state.upper(),
           "createdAt": rfc3339(t["created_at"]), "scheduledAt": rfc3339(e["scheduled_at"]) if e else None,
           "startedAt": rfc3339(e["started_at"] if e else t["started_at"]),
           "completedAt": rfc3339(e["finished_at"] if e else t["finished_at"]),
           "run": spec.get("run"), "cmd": spec.get("command"), "image": spec.get("image"),
           "env": spec.get("env") or None, "var": spec.get("var"), "queue": t["queue"],
           "nodeId": e["node_id"] if e else None, "attempt": e["attempt"] if e else None,
           "result": t["output"], "progress": 100.0 if t["state"] == "completed" else float(t["progress"] or 0),
           "error": (e["error"] if e else None) or t["error"] or None, "subjobId": t["subjob_id"]}
    if t["kind"] in ("parallel", "each", "subjob", "steps"):
        out["kind"] = t["kind"]
    if e is not None and "ports" in e:
        out["ports"] = e["ports"]  # where its published ports are reached while it runs
    return {k: v for k, v in out.items() if v is not None}


def execution_view(e: Row, t: Row) -> dict[str, Any]:
    return task_view(t, e)


def job_detail(j: Row, tasks: list[Row], execs: list[Row]) -> dict[str, Any]:
    by_id = {t["id"]: t for t in tasks}
    top = [t for t in tasks if t["parent_id"] is None]
    current = next((t for t in top if t["state"] not in ("completed", "skipped")), None)
    position = current["position"] + 1 if current else len(top) + 1  # past the end once all completed
    with_runs = {e["task_id"] for e in execs}
    execution = [task_view(by_id[e["task_id"]], e) for e in execs if e["task_id"] in by_id]
    # Tasks that never ran (opened composites, skipped tasks) show too, so the list mirrors the job's shape.
    execution += [task_view(t, None) for t in tasks if t["id"] not in with_runs and t["state"] != "pending"]
    execution.sort(key=lambda x: (x.get("createdAt") or "", x.get("scheduledAt") or ""))
    return redacted({**summary(j), "tasks": [task_spec_view(t["spec"]) for t in top], "execution": execution,
                      "position": position, "taskCount": j["task_count"], "output": j["spec"].get("output"),
                      "secrets": j["spec"].get("secrets") or None}, j["spec"])


def _job(tx: Tx, job_id: str) -> Row:
    if (job := tx.job(job_id)) is None:
        raise DialectError(404, "job not found")
    return job


MAX_PAGE = 1 << 31  # a page past every row answers empty; this keeps the offset a number the store can hold


def page_args(page: int, size: int, most: int) -> tuple[int, int]:
    """A page and its size as Tork's handlers take them: a page below 1 is page 1, and the size is brought
    within 1 and ``most`` (20 for jobs and scheduled jobs, 100 for logs) instead of being refused."""
    return min(max(page, 1), MAX_PAGE), min(max(size, 1), most)


async def read_job(request: Request) -> dict[str, Any]:
    """A Tork job from the request body (read by corral.api.body): JSON or YAML by its content type (any
    other type is a 415)."""
    data: dict[str, Any] = await read_job_then(request, lambda d: d)
    return data


def _mapping(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise DialectError(400, "the job must be a mapping")
    return data


async def read_job_then(request: Request, then: Callable[[dict[str, Any]], Any]) -> Any:
    """``read_job``, with ``then`` applied to the job where the body is parsed (off the event loop when it
    is big, on it when small: no thread hop for a small job)."""
    try:
        return await read_body(request, yaml=True, then=lambda d: then(_mapping(d)))
    except BadBody as e:
        raise DialectError(e.status, str(e) if e.status != 400 else f"the job cannot be parsed: {e}") from e


# What to_spec accepts, as a schema: the nearest stricter one (a job's every rule is not a JSON schema: task
# names unique, depends_on a graph, expressions that parse). A job of tasks that each run a script (no
# expression in it) or an image; every key the server reads as absent when null may be null.
_TASK_SCHEMA = {"type": "object", "additionalProperties": False,
                "properties": {"image": nullable({"type": "string", "maxLength": 1000, "pattern": IMAGE_PATTERN}),
                               "run": nullable({"type": "string", "maxLength": MAX_VALUE, "pattern": TEXT_NO_EXPR})},
                "anyOf": [{"required": ["run"], "properties": {"run": {"type": "string"}}},
                          {"required": ["image"], "properties": {"image": {"type": "string"}}}]}
JOB_SCHEMA: dict[str, Any] = {"type": "object", "required": ["tasks"], "additionalProperties": False, "properties": {
    "name": nullable({"type": "string", "pattern": NAME_PATTERN}),
    "tags": nullable({"type": "array", "maxItems": 50, "items": {"type": "string", "minLength": 1, "maxLength": 100}}),
    "priority": nullable({"type": "integer", "minimum": 0, "maximum": 9}),
    "tasks": {"type": "array", "minItems": 1, "maxItems": 1000, "items": _TASK_SCHEMA}}}


# -- health and jobs ------------------------------------------------------------------------------
@router.get("/health", summary="Tork: the coordinator is up")
def health() -> dict[str, str]:
    return {"status": "UP", "version": corral.__version__}


@router.post("/jobs", summary="Tork: submit a job (JSON or YAML); ?wait=true answers when it has finished",
             openapi_extra=json_body(JOB_SCHEMA, yaml=True))
async def submit(request: Request, svc: Svc, wait: bool = False) -> dict[str, Any]:
    spec = await read_job_then(request, to_spec)  # big jobs validate off the loop
    job = (await svc.coord.submit_async([spec], idem_key(request, "tork/jobs")))[0]
    while wait and job["state"] not in TERMINAL:
        if await request.is_disconnected():
            break
        await asyncio.sleep(0.1)
        job = await asyncio.to_thread(svc.coord.job_row, job["id"])
    return summary(job)


@router.get("/jobs", summary="Tork: jobs, newest first; q searches names and tags, 'tag:x' filters by tag")
def list_jobs(svc: Svc, page: int = 1, size: int = 10,
              q: Annotated[str, Query(max_length=MAX_SEARCH)] = "") -> dict[str, Any]:
    page, size = page_args(page, size, 20)
    words = q.split()
    tags = [w.removeprefix("tag:") for w in words if w.startswith("tag:")]
    text = " ".join(w for w in words if not w.startswith("tag:")) or None
    if len(tags) > 1:
        raise DialectError(400, "q can filter by one tag at most")
    with svc.coord.store.read() as tx:
        offset = (page - 1) * size
        if text is None:
            rows, total = tx.find_jobs(tag=tags[0] if tags else None, offset=offset, limit=size)
        else:
            # The page alone: reading the pages before it too held up to 2^31 pages of rows in memory
            rows, total = tx.list_jobs(q=text, tag=tags[0] if tags else None, offset=offset, limit=size)
    total = min(total, COUNT_CAP)  # counted up to COUNT_CAP: a million-job history is not counted per page
    return {"items": [summary(j) for j in rows], "number": page, "size": len(rows),
            "totalPages": math.ceil(total / size), "totalItems": total}


@router.get("/jobs/{job_id}", summary="Tork: one job, its tasks and their executions")
def get_job(job_id: str, svc: Svc) -> dict[str, Any]:
    with svc.coord.store.read() as tx:
        job = _job(tx, job_id)
        tasks, execs = tx.tasks_of(job_id), tx.executions_of_job(job_id)
    svc.coord.nodes.attach_task_ports(tasks, execs)
    return job_detail(job, tasks, execs)


@contextlib.contextmanager
def answers(not_found: str, conflict: str = "") -> Iterator[None]:
    """A service call's errors in Tork's words: not found is a 404, a state that forbids it a 400."""
    try:
        yield
    except NotFound as e:
        raise DialectError(404, not_found) from e
    except Conflict as e:
        raise DialectError(400, conflict or str(e)) from e


@router.put("/jobs/{job_id}/cancel", summary="Tork: cancel a pending, scheduled or running job")
def cancel(job_id: str, svc: Svc) -> dict[str, str]:
    with answers("job not found", "job is not running"):
        svc.coord.cancel(job_id)
    return {"status": "OK"}


@router.put("/jobs/{job_id}/restart", summary="Tork: run a failed or cancelled job again")
def restart(job_id: str, svc: Svc) -> dict[str, str]:
    try:
        svc.coord.restart(job_id)
    except NotFound as e:
        raise DialectError(404, "job not found") from e
    except Conflict as e:
        with svc.coord.store.read() as tx:
            state = _job(tx, job_id)["state"].upper()
        raise DialectError(400, f"job is {state} and can not be restarted") from e
    return {"status": "OK"}


@router.get("/tasks/{task_id}", summary="Tork: one task (a run of it: its latest attempt), by task or attempt id")
def get_task(task_id: str, svc: Svc) -> dict[str, Any]:
    with svc.coord.store.read() as tx:
        ex = tx.executions_by_ids([task_id])
        task = tx.task(ex[0]["task_id"] if ex else task_id)
        if task is None:
            raise DialectError(404, "task not found")
        if not ex and task["execution_id"]:
            ex = tx.executions_by_ids([task["execution_id"]])
        job = tx.job(task["job_id"])
    svc.coord.nodes.attach_task_ports([task], ex)
    return redacted(task_view(task, ex[0] if ex else None), job["spec"] if job else {})


# -- logs -----------------------------------------------------------------------------------------
def _log_page(tx: Tx, job_id: str, page: int, size: int, owner: str | None = None) -> dict[str, Any]:
    """One page of output, one part per line, newest first as Tork answers; read a page at a time."""
    total = tx.count_logs(job_id, owner)
    offset = (page - 1) * size
    rows = tx.logs_newest_first(job_id, offset=offset, limit=size, owner=owner) if offset < total else []
    items = [{"number": total - offset - i, "contents": r["line"] + "\n", "createdAt": rfc3339(r["ts"])}
             for i, r in enumerate(rows)]
    return {"items": items, "number": page, "size": len(items), "totalPages": math.ceil(total / size),
            "totalItems": total}


@router.get("/jobs/{job_id}/log", summary="Tork: a job's output, one part per line, newest first")
def job_log(job_id: str, svc: Svc, page: int = 1, size: int = LOG_PAGE_SIZE) -> dict[str, Any]:
    page, size = page_args(page, size, LOG_PAGE_MOST)
    with svc.coord.store.read() as tx:
        _job(tx, job_id)
        return _log_page(tx, job_id, page, size)


@router.get("/tasks/{task_id}/log", summary="Tork: one execution's output (or every attempt of a task)")
def task_log(task_id: str, svc: Svc, page: int = 1, size: int = LOG_PAGE_SIZE) -> dict[str, Any]:
    page, size = page_args(page, size, LOG_PAGE_MOST)
    with svc.coord.store.read() as tx:
        ex = tx.executions_by_ids([task_id])
        if (owner := ex[0] if ex else tx.task(task_id)) is None:
            raise DialectError(404, "task not found")
        return _log_page(tx, owner["job_id"], page, size, task_id)


# -- nodes and queues -----------------------------------------------------------------------------
@router.get("/nodes", summary="Tork: the coordinator and the workers")
def nodes(svc: Svc) -> list[dict[str, Any]]:
    host = socket.gethostname()
    coord_id = hashlib.sha256(f"{host}:{svc.coord.started_at}".encode()).hexdigest()[:32]
    with svc.coord.store.read() as tx:
        rows = tx.nodes()
    out: list[dict[str, Any]] = [{
        "id": coord_id, "name": "Coordinator", "startedAt": rfc3339(svc.coord.started_at), "cpuPercent": 0.0,
        "lastHeartbeatAt": rfc3339(time.time()), "status": "UP", "hostname": host,
        "version": corral.__version__}]
    for n in map(safe_node, rows):  # a malformed stored row still answers
        out.append({"id": n["id"], "name": "Worker", "startedAt": rfc3339(n["registered_at"]),
                    "cpuPercent": n["usage"].get("cpu_percent", 0.0),
                    "lastHeartbeatAt": rfc3339(n["last_heartbeat"]), "queue": ",".join(n["queues"] or []),
                    "status": "UP" if n["state"] == "ready" else "DOWN", "hostname": n["hostname"],
                    "version": n["version"], "workerName": n["name"]})
    return out


def _queues(tx: Tx) -> dict[str, dict[str, Any]]:
    nodes, counts = tx.nodes(), tx.count_tasks_by_queue_state()
    names = {"default", *(x for n in nodes for x in n["queues"] or []), *(c[0] for c in counts)}
    out: dict[str, dict[str, Any]] = {x: {"name": x, "size": 0, "subscribers": 0, "unacked": 0} for x in names}
    for n in nodes:
        for name in n["queues"] or []:
            out[name]["subscribers"] += n["state"] == "ready"
    for name, state, count in counts:
        out[name]["size" if state == "pending" else "unacked"] += count
    return out


@router.get("/queues", summary="Tork: each queue's waiting and running tasks, and the workers serving it")
def queues(svc: Svc) -> list[dict[str, Any]]:
    with svc.coord.store.read() as tx:
        return sorted(_queues(tx).values(), key=lambda x: x["name"])


@router.delete("/queues/{name}", summary="Tork: cancel the jobs whose tasks wait in this queue (not 'default')")
def delete_queue(name: str, svc: Svc) -> dict[str, Any]:
    if name == "default":
        raise DialectError(400, "the default queue can not be deleted")
    with svc.coord.store.read() as tx:
        if name not in _queues(tx):
            raise DialectError(404, "queue not found")
        ids = tx.queued_jobs_of_queue(name)
    cancelled = 0
    for jid in ids:
        try:
            svc.coord.cancel(jid, reason=f"queue {name} was deleted")
            cancelled += 1
        except (NotFound, Conflict):
            pass  # finished or gone meanwhile
    return {"status": "OK", "cancelled": cancelled}


# -- users (Tork's POST /users; its basic-auth middleware is the edge's 'Authorization: Basic') ---------
# What create_user accepts (corral.auth: a name of NAME_RE, a password of 8 to 1024 characters, both stripped).
USER_BODY = json_body({"type": "object", "required": ["username", "password"], "properties": {
    "username": {"type": "string", "pattern": r"^\s*[A-Za-z0-9][A-Za-z0-9._@-]{0,62}\s*$"},
    "password": {"type": "string", "pattern": f"^[{WS}]*[^{WS}][\\s\\S]{{6,1022}}[^{WS}][{WS}]*$"},
    "name": {"type": "string"}}})


@router.post("/users", summary="Tork: create a user (admin); it then signs in with HTTP basic auth",
             openapi_extra=USER_BODY)
async def create_user(request: Request) -> dict[str, Any]:
    data = await read_body_object(request)
    username = str(data.get("username") or "").strip()
    password = str(data.get("password") or "").strip()
    if not username:
        raise DialectError(400, "must provide username")
    if not password:
        raise DialectError(400, "must provide password")
    auth = request.app.state.auth
    try:
        view = await asyncio.to_thread(auth.create_user, username, password, "user", None)
    except Conflict as e:
        raise DialectError(400, "user already exists") from e
    return {"id": view["name"], "name": str(data.get("name") or username), "username": view["name"],
            "createdAt": rfc3339(view["created_at"])}


async def read_body_object(request: Request) -> dict[str, Any]:
    try:
        data = await read_body(request)
    except BadBody as e:
        raise DialectError(e.status, str(e)) from e
    if not isinstance(data, dict):
        raise DialectError(400, "the body must be a JSON object")
    return data
