"""Tork's REST API over Corral's core (first slice: tasks that run one after another). See docs/api/tork.md.

A Tork job is a Corral job; Tork's ``execution`` entries are Corral's executions (one per attempt). Ids are
Corral's 32-hex ids, states are upper-cased, errors are ``{"message": "..."}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import socket
import time
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

import corral
from corral.api.deps import Services, services
from corral.api.dialects.base import MAX_BODY, DialectError, route_class
from corral.api.timefmt import rfc3339
from corral.coordinator.errors import Conflict, NotFound
from corral.domain.spec import JobSpec
from corral.store.sql import Row, Tx

TERMINAL = {"completed", "failed", "cancelled"}
JOB_FIELDS = {"name", "description", "tags", "inputs", "tasks", "priority"}
JOB_LATER = {"secrets", "output", "defaults", "webhooks", "permissions", "autoDelete", "schedule"}
TASK_FIELDS = {"name", "description", "image", "run", "cmd", "entrypoint", "env", "queue", "timeout", "retry",
               "workdir"}
TASK_LATER = {"parallel", "each", "subjob", "pre", "post", "if", "var", "mounts", "networks", "files", "limits",
              "sidecars", "registry", "gpus", "tags", "priority", "probe", "result"}
LOG_LINES = 100_000  # log paging reads at most this many lines of a job


def _render(request: Request, e: DialectError) -> Response:
    return JSONResponse({"message": e.message}, status_code=e.status, headers=e.headers)


router = APIRouter(tags=["tork"], route_class=route_class(_render))
Svc = Annotated[Services, Depends(services)]


# -- translation ----------------------------------------------------------------------------------
def _check_fields(data: dict[str, Any], known: set[str], later: set[str], where: str) -> None:
    for key in data:
        if key in later:
            raise DialectError(400, f"{where}{key} is not supported yet")
        if key not in known:
            raise DialectError(400, f"{where}{key} is not a known Tork field")


def _task(t: Any, i: int) -> dict[str, Any]:
    if not isinstance(t, dict):
        raise DialectError(400, f"tasks[{i}] must be a mapping")
    _check_fields(t, TASK_FIELDS, TASK_LATER, f"tasks[{i}].")
    out: dict[str, Any] = {k: t[k] for k in ("name", "image", "run", "entrypoint", "env", "queue", "timeout", "workdir")
                           if k in t}
    if "cmd" in t:
        out["command"] = t["cmd"]
    retry = t.get("retry")
    if retry is not None:
        if not isinstance(retry, dict) or set(retry) - {"limit", "attempts"}:
            raise DialectError(400, f"tasks[{i}].retry: only 'limit' is supported")
        out["retry"] = {"limit": retry.get("limit", 0)}
    return out


def to_spec(data: dict[str, Any]) -> JobSpec:
    _check_fields(data, JOB_FIELDS, JOB_LATER, "")
    tasks = data.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise DialectError(400, "tasks: a job needs at least one task")
    body = {k: data[k] for k in ("name", "tags", "priority") if data.get(k) is not None}
    body["tasks"] = [_task(t, i) for i, t in enumerate(tasks)]
    try:
        return JobSpec.model_validate(body)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]).replace("command", "cmd") or "job"
        raise DialectError(400, f"{loc}: {err['msg']}") from e


def task_spec_view(spec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: spec[k] for k in ("name", "image", "run", "entrypoint", "queue", "timeout", "workdir")
                           if k in spec}
    if spec.get("command") is not None:
        out["cmd"] = spec["command"]
    if spec.get("env"):
        out["env"] = spec["env"]
    if (spec.get("retry") or {}).get("limit"):
        out["retry"] = {"limit": spec["retry"]["limit"]}
    return out


def summary(j: Row) -> dict[str, Any]:
    return {"id": j["id"], "name": j["name"], "state": j["state"].upper(), "tags": j["tags"],
            "createdAt": rfc3339(j["created_at"]), "startedAt": rfc3339(j["started_at"]),
            "completedAt": rfc3339(j["finished_at"]), "error": j["error"]}


def execution_view(e: Row, t: Row) -> dict[str, Any]:
    spec = t["spec"]
    out = {"id": e["id"], "jobId": e["job_id"], "position": t["position"] + 1, "name": t["name"],
           "state": e["state"].upper(), "createdAt": rfc3339(e["scheduled_at"]),
           "scheduledAt": rfc3339(e["scheduled_at"]), "startedAt": rfc3339(e["started_at"]),
           "completedAt": rfc3339(e["finished_at"]), "run": spec.get("run"), "cmd": spec.get("command"),
           "image": spec.get("image"), "queue": t["queue"], "nodeId": e["node_id"], "attempt": e["attempt"],
           "error": e["error"] or None}
    return {k: v for k, v in out.items() if v is not None}


def job_detail(j: Row, tasks: list[Row], execs: list[Row]) -> dict[str, Any]:
    by_id = {t["id"]: t for t in tasks}
    current = next((t for t in tasks if t["state"] != "completed"), None)
    position = current["position"] + 1 if current else len(tasks) + 1  # past the end once all completed
    return {**summary(j), "tasks": [task_spec_view(t["spec"]) for t in tasks],
            "execution": [execution_view(e, by_id[e["task_id"]]) for e in execs if e["task_id"] in by_id],
            "position": position, "taskCount": j["task_count"]}


def _job(tx: Tx, job_id: str) -> Row:
    if (job := tx.job(job_id)) is None:
        raise DialectError(404, "job not found")
    return job


def _page_args(page: int, size: int, most: int) -> None:
    if page < 1:
        raise DialectError(400, "page must be 1 or more")
    if not 1 <= size <= most:
        raise DialectError(400, f"size must be between 1 and {most}")


# -- health and jobs ------------------------------------------------------------------------------
@router.get("/health", summary="Tork: the coordinator is up")
def health() -> dict[str, str]:
    return {"status": "UP", "version": corral.__version__}


@router.post("/jobs", summary="Tork: submit a job (JSON or YAML); ?wait=true answers when it has finished")
async def submit(request: Request, svc: Svc, wait: bool = False) -> dict[str, Any]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in ("application/json", "text/yaml", "application/x-yaml", "application/yaml"):
        raise DialectError(400, f"unsupported content type '{ctype}': use application/json or text/yaml")
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise DialectError(400, f"the job is {len(raw)} bytes; at most {MAX_BODY} are accepted")
    try:
        data = json.loads(raw) if ctype == "application/json" else yaml.safe_load(raw)
    except (ValueError, yaml.YAMLError) as e:
        raise DialectError(400, f"the job cannot be parsed: {e}") from e
    if not isinstance(data, dict):
        raise DialectError(400, "the job must be a mapping")
    job = await asyncio.to_thread(svc.coord.submit, to_spec(data))
    while wait and job["state"] not in TERMINAL:
        if await request.is_disconnected():
            break
        await asyncio.sleep(0.1)
        job = await asyncio.to_thread(svc.coord.job_row, job["id"])
    return summary(job)


@router.get("/jobs", summary="Tork: jobs, newest first; q searches names and tags, 'tag:x' filters by tag")
def list_jobs(svc: Svc, page: int = 1, size: int = 10, q: str = "") -> dict[str, Any]:
    _page_args(page, size, 20)
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
            rows, total = tx.list_jobs(q=text, tag=tags[0] if tags else None, limit=offset + size)
            rows = rows[offset:]
    return {"items": [summary(j) for j in rows], "number": page, "size": len(rows),
            "totalPages": math.ceil(total / size), "totalItems": total}


@router.get("/jobs/{job_id}", summary="Tork: one job, its tasks and their executions")
def get_job(job_id: str, svc: Svc) -> dict[str, Any]:
    with svc.coord.store.read() as tx:
        job = _job(tx, job_id)
        return job_detail(job, tx.tasks_of(job_id), tx.executions_of_job(job_id))


@router.put("/jobs/{job_id}/cancel", summary="Tork: cancel a pending, scheduled or running job")
def cancel(job_id: str, svc: Svc) -> dict[str, str]:
    try:
        svc.coord.cancel(job_id)
    except NotFound as e:
        raise DialectError(404, "job not found") from e
    except Conflict as e:
        raise DialectError(400, "job is not running") from e
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


# -- logs -----------------------------------------------------------------------------------------
def _log_page(lines: list[Row], page: int, size: int) -> dict[str, Any]:
    parts = [{"number": i + 1, "contents": r["line"] + "\n", "createdAt": rfc3339(r["ts"])}
             for i, r in reversed(list(enumerate(lines)))]  # newest first, as Tork answers
    items = parts[(page - 1) * size:page * size]
    return {"items": items, "number": page, "size": len(items), "totalPages": math.ceil(len(parts) / size),
            "totalItems": len(parts)}


@router.get("/jobs/{job_id}/log", summary="Tork: a job's output, one part per line, newest first")
def job_log(job_id: str, svc: Svc, page: int = 1, size: int = 10) -> dict[str, Any]:
    _page_args(page, size, 100)
    with svc.coord.store.read() as tx:
        _job(tx, job_id)
        return _log_page(tx.logs(job_id, limit=LOG_LINES), page, size)


@router.get("/tasks/{task_id}/log", summary="Tork: one execution's output (or every attempt of a task)")
def task_log(task_id: str, svc: Svc, page: int = 1, size: int = 10) -> dict[str, Any]:
    _page_args(page, size, 100)
    with svc.coord.store.read() as tx:
        ex = tx.executions_by_ids([task_id])
        if (owner := ex[0] if ex else tx.task(task_id)) is None:
            raise DialectError(404, "task not found")
        lines = [r for r in tx.logs(owner["job_id"], limit=LOG_LINES) if task_id in (r["execution_id"], r["task_id"])]
    return _log_page(lines, page, size)


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
    for n in rows:
        out.append({"id": n["id"], "name": "Worker", "startedAt": rfc3339(n["registered_at"]),
                    "cpuPercent": float((n["usage"] or {}).get("cpu_percent") or 0.0),
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
