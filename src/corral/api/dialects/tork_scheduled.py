"""Tork's scheduled-jobs REST API over Corral's schedules (corral.coordinator.schedules). See docs/api/tork.md.

A Tork scheduled job is a Corral schedule: the body is a Tork job (read by the Tork dialect's ``to_spec``)
plus ``cron``; each tick creates an ordinary job, listed by ``GET /jobs`` like any other. Errors are
``{"message": "..."}`` as everywhere in the Tork dialect.
"""

from __future__ import annotations

import asyncio
import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from corral.api.deps import Services, services
from corral.api.dialects import tork
from corral.api.dialects.base import DialectError, route_class
from corral.api.idempotency import idem_key
from corral.api.openapi import CRON_PATTERN, json_body
from corral.api.timefmt import rfc3339
from corral.coordinator.errors import NotFound
from corral.coordinator.schedules import Schedules
from corral.domain import schedule as cron
from corral.domain.spec import JobSpec
from corral.store.sql import Row

router = APIRouter(tags=["tork"], route_class=route_class(tork.render_error))
Svc = Annotated[Services, Depends(services)]

NOT_FOUND = "scheduled job not found"


# -- reading a scheduled job ----------------------------------------------------------------------
def _cron(value: Any) -> str:
    if value is None or value == "":
        raise DialectError(400, "cron: a scheduled job needs a cron expression, such as '*/5 * * * *'")
    try:
        return cron.validate(value)
    except cron.CronError as e:
        raise DialectError(400, f"cron: {e}") from e


def to_scheduled_spec(data: dict[str, Any]) -> tuple[str, JobSpec]:
    """The cron expression and the job specification of a Tork scheduled job."""
    expr = _cron(data.get("cron"))
    return expr, tork.to_spec({k: v for k, v in data.items() if k != "cron"})


# -- views ----------------------------------------------------------------------------------------
def scheduled_summary(r: Row) -> dict[str, Any]:
    """An item of GET /scheduled-jobs."""
    spec = r["spec"]
    out = {"id": r["id"], "name": r["name"], "description": spec.get("description"), "cron": r["cron"],
           "state": r["state"].upper(), "createdAt": rfc3339(r["created_at"]), "tags": spec.get("tags") or [],
           "inputs": spec.get("inputs") or {}, "nextRunAt": rfc3339(r["next_run_at"]),
           "lastRunAt": rfc3339(r["last_run_at"]), "lastJobId": r["last_job_id"]}
    return tork.redacted(out, spec)


def scheduled_job(r: Row) -> dict[str, Any]:
    """A scheduled job: the summary, its tasks in Tork's field names, and its secrets' names only."""
    spec = r["spec"]
    out = {**scheduled_summary(r), "tasks": [tork.task_spec_view(t) for t in spec.get("tasks") or []],
           "secrets": spec.get("secrets") or {}}
    if spec.get("priority"):
        out["priority"] = spec["priority"]
    return tork.redacted(out, spec)


def _schedule(svc: Services, schedule_id: str) -> Row:
    try:
        return Schedules(svc.coord).get(schedule_id)
    except NotFound as e:
        raise DialectError(404, NOT_FOUND) from e


# -- routes ---------------------------------------------------------------------------------------
SCHEDULED_BODY = json_body({**tork.JOB_SCHEMA, "required": ["cron", "tasks"], "properties": {
    **tork.JOB_SCHEMA["properties"], "cron": {"type": "string", "pattern": CRON_PATTERN}}}, yaml=True)


@router.post("/scheduled-jobs", summary="Tork: schedule a job (JSON or YAML, with 'cron'); a job at each tick",
             openapi_extra=SCHEDULED_BODY)
async def create(request: Request, svc: Svc) -> dict[str, Any]:
    data = await tork.read_job(request)
    expr, spec = await asyncio.to_thread(to_scheduled_spec, data)  # a big body: validated off the event loop
    row = await asyncio.to_thread(Schedules(svc.coord).create, expr, spec, None,
                                  idem_key(request, "tork/scheduled-jobs"))
    return scheduled_job(row)


@router.get("/scheduled-jobs", summary="Tork: scheduled jobs, newest first")
def list_scheduled(svc: Svc, page: int = 1, size: int = 10) -> dict[str, Any]:
    page, size = tork.page_args(page, size, 20)
    rows = sorted(Schedules(svc.coord).all(), key=lambda r: (r["created_at"], r["id"]), reverse=True)
    items = rows[(page - 1) * size:page * size]
    return {"items": [scheduled_summary(r) for r in items], "number": page, "size": len(items),
            "totalPages": math.ceil(len(rows) / size), "totalItems": len(rows)}


@router.get("/scheduled-jobs/{schedule_id}", summary="Tork: one scheduled job")
def get_scheduled(schedule_id: str, svc: Svc) -> dict[str, Any]:
    return scheduled_job(_schedule(svc, schedule_id))


@router.put("/scheduled-jobs/{schedule_id}/pause", summary="Tork: no more jobs from it until resumed")
def pause(schedule_id: str, svc: Svc) -> dict[str, str]:
    with tork.answers(NOT_FOUND, "scheduled job is not active"):
        Schedules(svc.coord).pause(schedule_id)
    return {"status": "OK"}


@router.put("/scheduled-jobs/{schedule_id}/resume", summary="Tork: jobs again, from the first tick after now")
def resume(schedule_id: str, svc: Svc) -> dict[str, str]:
    with tork.answers(NOT_FOUND, "scheduled job is not paused"):
        Schedules(svc.coord).resume(schedule_id)
    return {"status": "OK"}


@router.delete("/scheduled-jobs/{schedule_id}", summary="Tork: delete a scheduled job (its jobs stay)")
def delete(schedule_id: str, svc: Svc) -> dict[str, str]:
    with tork.answers(NOT_FOUND):
        Schedules(svc.coord).delete(schedule_id)
    return {"status": "OK"}
