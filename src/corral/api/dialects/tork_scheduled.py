"""Tork's scheduled-jobs REST API over Corral's schedules (corral.coordinator.schedules). See docs/api/tork.md.

A Tork scheduled job is a Corral schedule: the body is a Tork job (read by the Tork dialect's ``to_spec``)
plus ``cron``; each tick creates an ordinary job, listed by ``GET /jobs`` like any other. Errors are
``{"message": "..."}`` as everywhere in the Tork dialect.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError

from corral.api.deps import Services, services
from corral.api.dialects import tork
from corral.api.dialects.base import MAX_BODY, DialectError, route_class
from corral.api.timefmt import rfc3339
from corral.coordinator.errors import Conflict, NotFound
from corral.coordinator.schedules import Schedules
from corral.domain import schedule as cron
from corral.domain.spec import JobSpec, dump_spec
from corral.store.sql import Row

router = APIRouter(tags=["tork"], route_class=route_class(tork._render))
Svc = Annotated[Services, Depends(services)]

CONTENT_TYPES = ("application/json", "text/yaml", "application/x-yaml", "application/yaml")
REDACTED = "[REDACTED]"
# Job fields Corral's spec holds that the Tork job translation may not carry (yet): a scheduled job keeps
# them itself, so that they are shown and reach the jobs it creates.
KEPT = ("description", "inputs", "secrets")


# -- reading a scheduled job ----------------------------------------------------------------------
async def _body(request: Request) -> dict[str, Any]:
    """The request's Tork job, JSON or YAML, as POST /jobs reads it."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in CONTENT_TYPES:
        raise DialectError(400, f"unsupported content type '{ctype}': use application/json or text/yaml")
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise DialectError(400, f"the job is {len(raw)} bytes; at most {MAX_BODY} are accepted")
    try:
        data = json.loads(raw) if ctype == "application/json" else yaml.safe_load(raw)
    except (ValueError, yaml.YAMLError) as e:
        raise DialectError(400, f"the job cannot be parsed: {e}") from e
    if not isinstance(data, dict):
        raise DialectError(400, "the scheduled job must be a mapping")
    return data


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
    job = {k: v for k, v in data.items() if k != "cron"}
    # A field the translation refuses as "not supported yet" but Corral's spec holds is taken here.
    kept = {k: job.pop(k) for k in KEPT if k in job and k in tork.JOB_LATER}
    spec = tork.to_spec(job)
    # And one it accepts but leaves out of the spec is put back.
    kept |= {k: job[k] for k in KEPT if k in job and job[k] is not None and not getattr(spec, k)}
    if kept:
        try:
            spec = JobSpec.model_validate({**dump_spec(spec), **kept})
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err["loc"]) or "job"
            raise DialectError(400, f"{loc}: {err['msg']}") from e
    return expr, spec


# -- views ----------------------------------------------------------------------------------------
def _redact(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        for s in secrets:
            value = value.replace(s, REDACTED)
        return value
    if isinstance(value, dict):
        return {k: _redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, secrets) for v in value]
    return value


def _secret_values(spec: dict[str, Any]) -> list[str]:
    # Longest first, so that a secret inside another is not half-replaced.
    return sorted((v for v in (spec.get("secrets") or {}).values() if v), key=len, reverse=True)


def scheduled_summary(r: Row) -> dict[str, Any]:
    """An item of GET /scheduled-jobs."""
    spec = r["spec"]
    out = {"id": r["id"], "name": r["name"], "description": spec.get("description"), "cron": r["cron"],
           "state": r["state"].upper(), "createdAt": rfc3339(r["created_at"]), "tags": spec.get("tags") or [],
           "inputs": spec.get("inputs") or {}, "nextRunAt": rfc3339(r["next_run_at"]),
           "lastRunAt": rfc3339(r["last_run_at"]), "lastJobId": r["last_job_id"]}
    return dict(_redact(out, _secret_values(spec)))


def scheduled_job(r: Row) -> dict[str, Any]:
    """A scheduled job: the summary, its tasks in Tork's field names, and its secrets' names only."""
    spec = r["spec"]
    out = {**scheduled_summary(r), "tasks": [tork.task_spec_view(t) for t in spec.get("tasks") or []],
           "secrets": {k: REDACTED for k in spec.get("secrets") or {}}}
    if spec.get("priority"):
        out["priority"] = spec["priority"]
    return dict(_redact(out, _secret_values(spec)))


def _schedule(svc: Services, schedule_id: str) -> Row:
    try:
        return Schedules(svc.coord).get(schedule_id)
    except NotFound as e:
        raise DialectError(404, "scheduled job not found") from e


# -- routes ---------------------------------------------------------------------------------------
@router.post("/scheduled-jobs", summary="Tork: schedule a job (JSON or YAML, with 'cron'); a job at each tick")
async def create(request: Request, svc: Svc) -> dict[str, Any]:
    expr, spec = to_scheduled_spec(await _body(request))
    row = await asyncio.to_thread(Schedules(svc.coord).create, expr, spec)
    return scheduled_job(row)


@router.get("/scheduled-jobs", summary="Tork: scheduled jobs, newest first")
def list_scheduled(svc: Svc, page: int = 1, size: int = 10) -> dict[str, Any]:
    tork._page_args(page, size, 20)
    rows = sorted(Schedules(svc.coord).all(), key=lambda r: (r["created_at"], r["id"]), reverse=True)
    items = rows[(page - 1) * size:page * size]
    return {"items": [scheduled_summary(r) for r in items], "number": page, "size": len(items),
            "totalPages": math.ceil(len(rows) / size), "totalItems": len(rows)}


@router.get("/scheduled-jobs/{schedule_id}", summary="Tork: one scheduled job")
def get_scheduled(schedule_id: str, svc: Svc) -> dict[str, Any]:
    return scheduled_job(_schedule(svc, schedule_id))


@router.put("/scheduled-jobs/{schedule_id}/pause", summary="Tork: no more jobs from it until resumed")
def pause(schedule_id: str, svc: Svc) -> dict[str, str]:
    try:
        Schedules(svc.coord).pause(schedule_id)
    except NotFound as e:
        raise DialectError(404, "scheduled job not found") from e
    except Conflict as e:
        raise DialectError(400, "scheduled job is not active") from e
    return {"status": "OK"}


@router.put("/scheduled-jobs/{schedule_id}/resume", summary="Tork: jobs again, from the first tick after now")
def resume(schedule_id: str, svc: Svc) -> dict[str, str]:
    try:
        Schedules(svc.coord).resume(schedule_id)
    except NotFound as e:
        raise DialectError(404, "scheduled job not found") from e
    except Conflict as e:
        raise DialectError(400, "scheduled job is not paused") from e
    return {"status": "OK"}


@router.delete("/scheduled-jobs/{schedule_id}", summary="Tork: delete a scheduled job (its jobs stay)")
def delete(schedule_id: str, svc: Svc) -> dict[str, str]:
    try:
        Schedules(svc.coord).delete(schedule_id)
    except NotFound as e:
        raise DialectError(404, "scheduled job not found") from e
    return {"status": "OK"}
