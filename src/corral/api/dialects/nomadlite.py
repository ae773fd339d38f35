"""The nomad-lite REST API (its dashboard API) over Corral's core. See docs/api/nomad-lite.md.

A nomad-lite job is a shell command, with an optional image: here a Corral job of one task that runs the
command with ``sh -c``. Ids are Corral's job ids written as UUIDs. Errors are ``{"error": "..."}``, and
``{"success": false, "error": "..."}`` for a cancel, as nomad-lite answers them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from corral.api.deps import Services, services
from corral.api.dialects.base import DialectError, json_object, route_class
from corral.api.dialects.nomadlite_core import (
    LEADER_ID,
    MAX_COMMAND_BYTES,
    MAX_MS,
    MAX_STATUS,
    MAX_TOKEN,
    MAX_WORKER,
    JobFacts,
    JobFilter,
    cancel_job,
    cluster_members,
    find_jobs,
    job_facts,
    job_spec,
    job_uuid,
    jobs_facts,
    parse_job_id,
    state_numbers,
    worker_number,
)
from corral.api.idempotency import idem_key
from corral.api.openapi import TEXT_NO_EXPR, WS
from corral.coordinator.policy import ESCALATIONS, escalation
from corral.store.sql import Row, Tx

__all__ = ["job_uuid", "parse_job_id", "worker_number"]  # also read from here by other modules
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
def timestamp(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")


def view(f: JobFacts) -> dict[str, Any]:
    return {"id": f.job_id, "command": f.command, "status": f.status, "executed_by": f.worker, "output": f.output,
            "error": f.error, "created_at": timestamp(f.created_at), "completed_at": timestamp(f.completed_at),
            "image": f.image}


def job_view(job: Row, tasks: list[Row], lines: list[Row]) -> dict[str, Any]:
    return view(job_facts(job, tasks, lines))


def job_views(tx: Tx, jobs: list[Row]) -> list[dict[str, Any]]:
    return [view(f) for f in jobs_facts(tx, jobs)]


# -- jobs -----------------------------------------------------------------------------------------
# What submit (job_spec) accepts, as a schema: a command with something in it and no expression, of at most
# MAX_COMMAND_BYTES bytes of UTF-8 (no schema counts bytes: at most a quarter as many characters, a character being
# up to 4 bytes, or that many ASCII ones), an image without spaces or expressions (blank: the server's default),
# and none of the keys that ask for a privileged container.
SUBMIT_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["command"],
    "properties": {
        "command": {"type": "string", "minLength": 1, "maxLength": MAX_COMMAND_BYTES, "pattern": TEXT_NO_EXPR,
                    "anyOf": [{"maxLength": MAX_COMMAND_BYTES // 4}, {"pattern": "^[\\x00-\\x7f]*$"}],
                    "description": f"A shell command, run with sh -c: at most {MAX_COMMAND_BYTES} bytes"},
        "image": {"anyOf": [{"type": "string", "maxLength": 1000,
                             "pattern": f"^[{WS}]*(?:[^{{{WS}]|\\{{[^{{%{WS}])*\\{{?[{WS}]*$"},
                            {"type": "null"}],
                  "description": "The image to run it in; omitted or blank: the server's default, or a host process"},
        **dict.fromkeys(ESCALATIONS, False)}}}}}}


@router.post("/api/jobs", summary="nomad-lite: submit a shell command, optionally in an image",
             openapi_extra=SUBMIT_BODY)
async def submit(request: Request, svc: Svc) -> dict[str, Any]:
    data = await json_object(request)
    if (refused := escalation(data)) is not None:
        raise DialectError(400, refused)
    spec = job_spec(data.get("command"), data.get("image"))
    job = (await svc.coord.submit_async([spec], idem_key(request, "nomad-lite/jobs")))[0]
    return {"job_id": job_uuid(job["id"]), "status": "pending"}


@router.get("/api/jobs", summary="nomad-lite: list jobs, newest first, with ListJobs' filters and paging")
def list_jobs(
    svc: Svc, response: Response,
    status: Annotated[str, Query(max_length=MAX_STATUS)] = "",
    worker_id: Annotated[str, Query(max_length=MAX_WORKER)] = "",
    command: Annotated[str, Query(max_length=MAX_COMMAND_BYTES)] = "",
    created_after_ms: Annotated[int, Query(le=MAX_MS)] = 0, created_before_ms: Annotated[int, Query(le=MAX_MS)] = 0,
    page_size: Annotated[int | None, Query()] = None,
    page_token: Annotated[str, Query(max_length=MAX_TOKEN)] = "",
) -> Any:
    f = JobFilter(status=status, worker=worker_id, command=command, created_after_ms=created_after_ms,
                  created_before_ms=created_before_ms, page_size=page_size, page_token=page_token)
    with svc.coord.store.read() as tx:
        rows, total, token = find_jobs(tx, f)
        jobs = job_views(tx, rows)
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
    cancel_job(svc.coord, parse_job_id(job_id))
    return {"success": True, "error": None}


# -- cluster and health ---------------------------------------------------------------------------
@router.get("/api/cluster", summary="nomad-lite: the coordinators (leader, followers, the epoch as the term) "
                                    "and the workers")
def cluster(request: Request, svc: Svc) -> dict[str, Any]:
    try:
        state = svc.coord.cluster_status()
        with svc.coord.store.read() as tx:
            index = tx.state_change_count()
            members = cluster_members(tx, state)
    except Exception:  # the store does not answer: no leader can commit anything
        return {"node_id": LEADER_ID, "role": "candidate", "current_term": 0, "leader_id": None,
                "commit_index": 0, "last_applied": 0, "log_length": 0, "nodes": []}
    me, leader = state_numbers(state)
    return {
        "node_id": me,
        "role": "leader" if leader is not None and leader == me else "follower" if leader else "candidate",
        "current_term": state.epoch,
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
    """Ready while the store answers and a coordinator leads (``leader_id``: its number); a draining
    coordinator answers 503 ``draining``."""
    try:
        state = svc.coord.cluster_status() if svc.coord.store.ping() else None
    except Exception:
        state = None
    leader = next((m.node_no for m in state.members if m.id == state.leader_id), None) if state else None
    me = state.member(state.me) if state else None
    if me is not None and me.draining:
        return JSONResponse({"status": "draining", "leader_id": leader}, status_code=503)
    if state is None or state.leader_id is None:
        return JSONResponse({"status": "no_leader", "leader_id": None}, status_code=503)
    return JSONResponse({"status": "ok", "leader_id": leader if leader is not None else LEADER_ID})
