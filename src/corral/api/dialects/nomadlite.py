"""The nomad-lite REST API (its dashboard API) over Corral's core. See docs/api/nomad-lite.md.

A nomad-lite job is a shell command, with an optional image: here a Corral job of one task that runs the
command with ``sh -c``. Ids are Corral's job ids written as UUIDs. Errors are ``{"error": "..."}``, and
``{"success": false, "error": "..."}`` for a cancel, as nomad-lite answers them.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from corral.api.deps import Services, services
from corral.api.dialects.base import DialectError, json_object, route_class
from corral.api.dialects.nomadlite_core import (
    LEADER_ID,
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
    worker_number,
)
from corral.api.idempotency import idem_key
from corral.coordinator.policy import escalation
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
@router.post("/api/jobs", summary="nomad-lite: submit a shell command, optionally in an image")
async def submit(request: Request, svc: Svc) -> dict[str, Any]:
    data = await json_object(request)
    if (refused := escalation(data)) is not None:
        raise DialectError(400, refused)
    spec = job_spec(data.get("command"), data.get("image"))
    job = await asyncio.to_thread(svc.coord.submit, spec, idem_key(request, "nomad-lite/jobs"))
    return {"job_id": job_uuid(job["id"]), "status": "pending"}


@router.get("/api/jobs", summary="nomad-lite: list jobs, newest first, with ListJobs' filters and paging")
def list_jobs(
    svc: Svc, response: Response,
    status: str = "", worker_id: str = "", command: str = "",
    created_after_ms: int = 0, created_before_ms: int = 0,
    page_size: Annotated[int | None, Query()] = None, page_token: str = "",
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
@router.get("/api/cluster", summary="nomad-lite: this coordinator as the leader of its cluster, and the workers")
def cluster(request: Request, svc: Svc) -> dict[str, Any]:
    server = request.scope.get("server") or ("0.0.0.0", 0)
    address = f"{server[0]}:{server[1]}"
    try:
        with svc.coord.store.read() as tx:
            index = tx.state_change_count()
            members = cluster_members(tx, address)
        leader: int | None = LEADER_ID
    except Exception:  # the store does not answer: no leader can commit anything
        index, leader = 0, None
        members = [{"node_id": LEADER_ID, "address": address, "is_alive": False, "role": "coordinator",
                    "name": "coordinator"}]
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
