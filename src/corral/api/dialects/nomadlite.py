"""The nomad-lite REST API (its dashboard API) over Corral's core. See docs/api/nomad-lite.md.

A nomad-lite job is a shell command, with an optional image: here a Corral job of one task that runs the
command with ``sh -c``. Ids are Corral's job ids written as UUIDs. Errors are ``{"error": "..."}``, and
``{"success": false, "error": "..."}`` for a cancel, as nomad-lite answers them.
"""

from __future__ import annotations

import os
import shlex
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from corral.api.deps import Services, services
from corral.api.dialects.base import DialectError, json_object, route_class
from corral.api.idempotency import idem_key
from corral.coordinator.errors import Conflict, NotFound
from corral.domain import workflow
from corral.domain.nodes import safe_node
from corral.domain.spec import JobSpec, TaskSpec
from corral.store.sql import Row, Tx, decode_cursor, encode_cursor

MAX_COMMAND_BYTES = 1024
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
LEADER_ID = 1  # this coordinator, in the cluster it reports
OUTPUT_LINES = 1000  # the last lines of output shown per job
OUTPUT_BYTES = 256 * 1024  # and at most about this much text of them
# Corral's job states as nomad-lite's: a job placed on a worker but not started yet is still pending.
STATUS = {"pending": "pending", "scheduled": "pending", "running": "running", "completed": "completed",
          "failed": "failed", "cancelled": "cancelled"}
STATUS_FILTER = {"pending": ["pending", "scheduled"], "running": ["running"], "completed": ["completed"],
                 "failed": ["failed"], "cancelled": ["cancelled"]}
# nomad-lite errors start with one of these; the rest of the router's 4xx get the same shape.
ERROR_PREFIXES = ("/api/jobs", "/api/cluster", "/health/")


def _render(request: Request, e: DialectError) -> Response:
    body: dict[str, Any] = {"error": e.message}
    if request.method == "DELETE":
        body = {"success": False, "error": e.message}
    return JSONResponse(body, status_code=e.status, headers=e.headers)


def render_limit(status: int, message: str, headers: dict[str, str]) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


router = APIRouter(tags=["nomad-lite"], route_class=route_class(_render))
Svc = Annotated[Services, Depends(services)]


# -- translation ----------------------------------------------------------------------------------
def job_uuid(job_id: str) -> str:
    return str(uuid.UUID(hex=job_id))


def parse_job_id(value: str) -> str:
    """A job id as a UUID (with or without dashes) -> Corral's 32 hex characters."""
    try:
        return uuid.UUID(value.strip()).hex
    except ValueError as e:
        raise DialectError(400, f"malformed job id '{value}': expected a UUID") from e


def worker_number(node_id: str | None) -> int | None:
    """A worker as nomad-lite's numeric node id: the first 52 bits of its Corral node id (safe in
    JavaScript numbers, and stable for the life of the worker)."""
    return int(node_id[:13], 16) if node_id else None


def timestamp(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")


def command_of(task: Row | None) -> str:
    spec = task["spec"] if task else {}
    if spec.get("run") is not None:
        return str(spec["run"])
    return shlex.join(spec.get("command") or spec.get("entrypoint") or [])


def job_view(job: Row, tasks: list[Row], lines: list[Row]) -> dict[str, Any]:
    node = next((t["node_id"] for t in reversed(tasks) if t["node_id"]), None)
    finished = job["finished_at"] is not None
    out = "".join(r["line"] + "\n" for r in lines if r["stream"] == "stdout")
    err = "".join(r["line"] + "\n" for r in lines if r["stream"] == "stderr")
    return workflow.shown({
        "id": job_uuid(job["id"]),
        "command": command_of(tasks[0] if tasks else None),
        "status": STATUS.get(job["state"], job["state"]),
        "executed_by": worker_number(node),
        "output": out if out or finished else None,
        "error": err or job["error"] or None,
        "created_at": timestamp(job["created_at"]),
        "completed_at": timestamp(job["finished_at"]),
        "image": (tasks[0]["spec"].get("image") if tasks else None),
    }, workflow.secrets_in(job.get("spec") or {}))  # the one redaction every view of every API applies


def job_views(tx: Tx, jobs: list[Row]) -> list[dict[str, Any]]:
    by_job: dict[str, list[Row]] = {}
    for t in tx.tasks_of_jobs(j["id"] for j in jobs):
        by_job.setdefault(t["job_id"], []).append(t)
    return [job_view(j, by_job.get(j["id"], []), tx.tail_logs(j["id"], OUTPUT_LINES, OUTPUT_BYTES)) for j in jobs]


# -- jobs -----------------------------------------------------------------------------------------
@router.post("/api/jobs", summary="nomad-lite: submit a shell command, optionally in an image")
async def submit(request: Request, svc: Svc) -> dict[str, Any]:
    data = await json_object(request)
    command = data.get("command")
    if command is None:
        raise DialectError(400, "command is required")
    if not isinstance(command, str):
        raise DialectError(400, "command must be a string")
    if not command.strip():
        raise DialectError(400, "command is empty")
    size = len(command.encode())
    if size > MAX_COMMAND_BYTES:
        raise DialectError(400, f"command is {size} bytes; at most {MAX_COMMAND_BYTES} are accepted")
    image = data.get("image")
    if image is not None and not isinstance(image, str):
        raise DialectError(400, "image must be a string")
    image = (image or "").strip() or os.environ.get("CORRAL_NOMADLITE_IMAGE", "").strip() or None
    try:
        spec = JobSpec(name="nomad-lite", tags=["nomad-lite"], tasks=[TaskSpec(name="main", run=command, image=image)])
    except ValidationError as e:
        err = e.errors()[0]
        raise DialectError(400, f"{'.'.join(str(x) for x in err['loc']) or 'job'}: {err['msg']}") from e
    job = (await svc.coord.submit_async([spec], idem_key(request, "nomad-lite/jobs")))[0]
    return {"job_id": job_uuid(job["id"]), "status": "pending"}


def _ms(name: str, value: int) -> float | None:
    if value < 0:
        raise DialectError(400, f"{name} cannot be negative")
    return value / 1000.0 if value else None


def _worker_prefix(tx: Tx, worker_id: str) -> str | None:
    """The worker filter as a node-id prefix: nomad-lite's number, a Corral node id, or a node's name."""
    w = worker_id.strip()
    if w.isdigit():
        return None if int(w) == 0 else format(int(w), "013x")
    if len(w) == 32 and all(c in "0123456789abcdef" for c in w):
        return w
    node = next((n for n in tx.nodes() if n["name"] == w), None)
    return node["id"] if node else "not-a-node"


@router.get("/api/jobs", summary="nomad-lite: list jobs, newest first, with ListJobs' filters and paging")
def list_jobs(
    svc: Svc, response: Response,
    status: str = "", worker_id: str = "", command: str = "",
    created_after_ms: int = 0, created_before_ms: int = 0,
    page_size: Annotated[int | None, Query()] = None, page_token: str = "",
) -> Any:
    states = None
    if status:
        key = status.strip().lower().removeprefix("job_status_")
        if key not in STATUS_FILTER and key != "unspecified":
            raise DialectError(400, f"unknown status '{status}': one of " + ", ".join(STATUS_FILTER))
        states = STATUS_FILTER.get(key)
    if page_size is not None and page_size < 0:
        raise DialectError(400, "page_size cannot be negative")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    try:
        before = decode_cursor(page_token) if page_token else None
    except ValueError as e:
        raise DialectError(400, "page_token is not one this server handed out") from e
    after, until = _ms("created_after_ms", created_after_ms), _ms("created_before_ms", created_before_ms)
    with svc.coord.store.read() as tx:
        prefix = _worker_prefix(tx, worker_id) if worker_id else None
        rows, total = tx.find_jobs(states=states, node_prefix=prefix, command=command or None,
                                   created_from=after, created_to=until, before_seq=before, limit=size + 1)
        more = len(rows) > size
        rows = rows[:size]
        jobs = job_views(tx, rows)
    token = encode_cursor(rows[-1]["seq"]) if more else ""
    response.headers["X-Total-Count"] = str(total)
    if token:
        response.headers["X-Next-Page-Token"] = token
    if page_size is None and not page_token:
        return jobs
    return {"jobs": jobs, "next_page_token": token, "total_count": total}


@router.get("/api/jobs/{job_id}", summary="nomad-lite: one job (GetJobStatus)")
def get_job(job_id: str, svc: Svc) -> dict[str, Any]:
    jid = parse_job_id(job_id)
    with svc.coord.store.read() as tx:
        job = tx.job(jid)
        if job is None:
            raise DialectError(404, f"job {job_uuid(jid)} not found")
        return job_views(tx, [job])[0]


@router.delete("/api/jobs/{job_id}", summary="nomad-lite: cancel a pending or running job")
def cancel(job_id: str, svc: Svc) -> dict[str, Any]:
    jid = parse_job_id(job_id)
    try:
        svc.coord.cancel(jid)
    except NotFound as e:
        raise DialectError(404, f"job {job_uuid(jid)} not found") from e
    except Conflict as e:
        with svc.coord.store.read() as tx:
            row = tx.job(jid)
        state = STATUS.get(row["state"], row["state"]) if row else "gone"
        raise DialectError(400, f"job is already {state}") from e
    return {"success": True, "error": None}


# -- cluster and health ---------------------------------------------------------------------------
@router.get("/api/cluster", summary="nomad-lite: this coordinator as the leader of its cluster, and the workers")
def cluster(request: Request, svc: Svc) -> dict[str, Any]:
    server = request.scope.get("server") or ("0.0.0.0", 0)
    address = f"{server[0]}:{server[1]}"
    try:
        with svc.coord.store.read() as tx:
            index = tx.state_change_count()
            nodes = tx.nodes()
        leader: int | None = LEADER_ID
    except Exception:  # the store does not answer: no leader can commit anything
        index, nodes, leader = 0, [], None
    members = [{"node_id": LEADER_ID, "address": address, "is_alive": leader is not None, "role": "coordinator",
                "name": "coordinator"}]
    members += [{"node_id": worker_number(n["id"]), "address": n["hostname"], "is_alive": n["state"] == "ready",
                 "role": "worker", "name": n["name"]} for n in map(safe_node, nodes)]
    return {
        "node_id": LEADER_ID,
        "role": "leader" if leader is not None else "candidate",
        "current_term": int(svc.coord.started_at),
        "leader_id": leader,
        "commit_index": index,
        "last_applied": index,
        "log_length": index,
        "nodes": members,
    }


@router.get("/health/live", summary="nomad-lite: the process is up")
def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/health/ready", summary="nomad-lite: a leader can commit (the store answers)")
def ready(svc: Svc) -> Response:
    if svc.coord.store.ping():
        return JSONResponse({"status": "ok", "leader_id": LEADER_ID})
    return JSONResponse({"status": "no_leader", "leader_id": None}, status_code=503)
