"""/v1/schedules: scheduled (cron) jobs. Create, list, inspect, pause, resume, delete."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from corral.api.deps import Services, services
from corral.api.errors import BadInput
from corral.api.idempotency import idem_key
from corral.api.native.jobs import read_body, validate_spec
from corral.api.openapi import CRON_PATTERN, json_body, nullable
from corral.api.timefmt import rfc3339
from corral.coordinator.idempotency import IdemKey
from corral.coordinator.schedules import Schedules
from corral.domain import schedule as cron
from corral.domain import workflow
from corral.store.sql import Row

router = APIRouter(prefix="/v1/schedules", tags=["schedules"])
Svc = Annotated[Services, Depends(services)]


def schedule_view(r: Row) -> dict[str, Any]:
    """A schedule; its job's secrets shown by name only, and their text redacted wherever it appears."""
    secrets = workflow.secrets_in(r["spec"])
    return {"id": r["id"], "name": r["name"], "cron": r["cron"], "state": r["state"],
            "next_run_at": rfc3339(r["next_run_at"]), "last_run_at": rfc3339(r["last_run_at"]),
            "last_job_id": r["last_job_id"], "created_at": rfc3339(r["created_at"]),
            "job": workflow.shown(r["spec"], secrets)}


def checked_cron(value: Any, field: str) -> str:
    try:
        return cron.validate(value)
    except cron.CronError as e:
        raise BadInput(f"{field}: {e}", [{"field": field, "message": str(e)}]) from e


async def create_schedule(svc: Services, response: Response, expr: str, job: Any, name: Any,
                          where: str = "", idem: IdemKey | None = None) -> dict[str, Any]:
    """Shared by POST /v1/schedules and POST /v1/jobs with a top-level ``schedule``."""
    if name is not None and (not isinstance(name, str) or not 1 <= len(name) <= 200):
        raise BadInput("name: 1-200 characters", [{"field": "name", "message": "1-200 characters"}])
    spec = await asyncio.to_thread(validate_spec, job, where)  # a body of up to 10 MiB: off the event loop
    row = await asyncio.to_thread(Schedules(svc.coord).create, expr, spec, name, idem)
    response.headers["Location"] = f"/v1/schedules/{row['id']}"
    return schedule_view(row)


_SCHEDULE_BODY = json_body({"type": "object", "required": ["cron", "job"], "additionalProperties": False,
                           "properties": {"name": nullable({"type": "string", "minLength": 1, "maxLength": 200}),
                                          "cron": {"type": "string", "pattern": CRON_PATTERN},
                                          "job": {"$ref": "#/components/schemas/JobSpec"}}}, yaml=True)


@router.post("", status_code=201, summary="Create a schedule: a job created at each tick of a cron expression",
             openapi_extra=_SCHEDULE_BODY)
async def create(request: Request, svc: Svc, response: Response) -> dict[str, Any]:
    data = await read_body(request)
    if not isinstance(data, dict):
        raise BadInput("a schedule is an object with 'cron' and 'job'")
    unknown = sorted(set(data) - {"name", "cron", "job"})
    if unknown:
        raise BadInput(f"{unknown[0]}: unknown field", [{"field": k, "message": "unknown field"} for k in unknown])
    expr = checked_cron(data.get("cron"), "cron")
    return await create_schedule(svc, response, expr, data.get("job"), data.get("name"), "job",
                                 idem_key(request, "v1/schedules"))


@router.get("", summary="List schedules, oldest first")
def list_schedules(svc: Svc) -> dict[str, Any]:
    return {"items": [schedule_view(r) for r in Schedules(svc.coord).all()]}


@router.get("/{schedule_id}", summary="A schedule")
def get(schedule_id: str, svc: Svc) -> dict[str, Any]:
    return schedule_view(Schedules(svc.coord).get(schedule_id))


@router.post("/{schedule_id}/pause", summary="Stop creating jobs until resumed")
def pause(schedule_id: str, svc: Svc) -> dict[str, Any]:
    return schedule_view(Schedules(svc.coord).pause(schedule_id))


@router.post("/{schedule_id}/resume", summary="Create jobs again, from the first tick after now")
def resume(schedule_id: str, svc: Svc) -> dict[str, Any]:
    return schedule_view(Schedules(svc.coord).resume(schedule_id))


@router.delete("/{schedule_id}", status_code=204, summary="Delete a schedule (the jobs it created stay)")
def delete(schedule_id: str, svc: Svc) -> Response:
    Schedules(svc.coord).delete(schedule_id)
    return Response(status_code=204)
