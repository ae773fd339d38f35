"""/v1/jobs: submit, list, inspect, cancel, restart, delete, and read or follow logs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from corral.api import body
from corral.api import openapi as api_doc
from corral.api.deps import Services, services
from corral.api.errors import BadInput, field_errors
from corral.api.idempotency import idem_key
from corral.api.native.views import job_view, tasks_page_view
from corral.api.timefmt import parse_time, rfc3339
from corral.coordinator.errors import NotFound
from corral.domain.spec import MAX_QUEUE, MAX_SEARCH, MAX_TAG, JobSpec
from corral.domain.states import TERMINAL_JOB_STATES, JobState
from corral.store.sql import COUNT_CAP, decode_cursor, encode_cursor

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
Svc = Annotated[Services, Depends(services)]
MAX_LIMIT = 1000
MAX_BATCH = 1000
TASKS_SHOWN = 200  # tasks a job view carries; the rest are paged through /v1/jobs/{id}/tasks
MAX_LOG_PAGE = 10_000  # lines in one page of a job's log (and its default size)
LOG_PAGE_BYTES = 8 * 1024 * 1024  # about the most text in one page
LOG_READ_CHUNK = 1000  # lines read from the store at a time while a page is gathered
# Bounds on the list's query parameters (each longer value is a 400 naming it; see docs/api.md)
MAX_STATES = 200  # 'state': the six states, comma-separated, fit several times
MAX_TIME = 64  # 'created_after', 'created_before': an RFC 3339 time or UNIX seconds
MAX_CURSOR = 200  # a cursor this server handed out is far shorter


def validate_spec(data: Any, where: str = "") -> JobSpec:
    if not isinstance(data, dict):
        raise BadInput("a job is an object with at least 'tasks'")
    try:
        return JobSpec.model_validate(data)
    except ValidationError as e:
        errs = field_errors(e)
        if where:
            errs = [{**x, "field": f"{where}.{x['field']}"} for x in errs]
        raise BadInput("; ".join(f"{x['field']}: {x['message']}" for x in errs), errs) from e


async def read_body(request: Request, then: Callable[[Any], Any] | None = None) -> Any:
    """A JSON or YAML body through the one body reader (corral.api.body), ``then`` applied to it off the
    event loop when it is big."""
    return await body.read_body(request, yaml=True, then=then)


def _spec_unless_scheduled(data: Any) -> Any:
    return data if isinstance(data, dict) and "schedule" in data else validate_spec(data)


_JOB_SCHEMA = JobSpec.model_json_schema(ref_template="#/components/schemas/{model}")
_JOB_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/JobSpec"}},
    "application/yaml": {"schema": {"$ref": "#/components/schemas/JobSpec"}}}}}


def job_schemas() -> dict[str, Any]:
    """The job specification's schemas, for the OpenAPI document (the body is parsed by hand, since it
    may be YAML)."""
    defs = dict(_JOB_SCHEMA.get("$defs", {}))
    defs["JobSpec"] = {k: v for k, v in _JOB_SCHEMA.items() if k != "$defs"}
    return defs


@router.post("", status_code=201, summary="Submit a job (JSON or YAML)", openapi_extra=_JOB_BODY,
             response_model=None)
async def submit(request: Request, svc: Svc, response: Response) -> dict[str, Any] | Response:
    data = await read_body(request, then=_spec_unless_scheduled)
    if not isinstance(data, JobSpec):
        # A job with `schedule: {cron: ...}` is a scheduled job: create the schedule instead.
        from corral.api.native.schedules import checked_cron, create_schedule
        data = dict(data)
        sched = data.pop("schedule")
        if not isinstance(sched, dict) or set(sched) - {"cron"}:
            raise BadInput("schedule: an object with 'cron'", [{"field": "schedule", "message": "only 'cron'"}])
        return await create_schedule(svc, response, checked_cron(sched.get("cron"), "schedule.cron"), data, None,
                                     idem=idem_key(request, "v1/jobs"))
    # Written by the next group commit, with the submissions made meanwhile; answered once committed.
    job = (await svc.coord.submit_async([data], idem_key(request, "v1/jobs")))[0]
    return JSONResponse(job_view(job), status_code=201, headers={"Location": f"/v1/jobs/{job['id']}"})


def _batch_specs(data: Any) -> list[JobSpec]:
    items = data.get("jobs") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise BadInput("send {\"jobs\": [ ...job objects... ]}")
    if len(items) > MAX_BATCH:
        raise BadInput(f"{len(items)} jobs in one batch; at most {MAX_BATCH}")
    return [validate_spec(x, f"jobs.{i}") for i, x in enumerate(items)]


_BATCH_BODY = api_doc.json_body({"type": "object", "required": ["jobs"], "properties": {"jobs": {
    "type": "array", "minItems": 1, "maxItems": MAX_BATCH, "items": {"$ref": "#/components/schemas/JobSpec"}}}},
    yaml=True)


@router.post("/batch", status_code=201, summary="Submit up to 1000 jobs in one transaction", openapi_extra=_BATCH_BODY)
async def submit_batch(request: Request, svc: Svc) -> dict[str, Any]:
    specs = await read_body(request, then=_batch_specs)
    jobs = await svc.coord.submit_async(specs, idem_key(request, "v1/jobs/batch"))
    return {"items": [job_view(j) for j in jobs]}


@router.get("", summary="List jobs, newest first")
def list_jobs(
    svc: Svc,
    state: Annotated[str | None, Query(max_length=MAX_STATES,
                                       description="One state, or several separated by commas")] = None,
    queue: Annotated[str | None, Query(max_length=MAX_QUEUE)] = None,
    tag: Annotated[str | None, Query(max_length=MAX_TAG)] = None,
    q: Annotated[str | None, Query(max_length=MAX_SEARCH, description="Text to find in the name or tags")] = None,
    id_prefix: Annotated[str | None, Query(pattern="^[0-9a-f]{1,32}$",
                                           description="The start of the job's id (the short ids tables show)")] = None,
    created_after: Annotated[str | None, Query(max_length=MAX_TIME,
                                               description="RFC 3339 time or UNIX seconds")] = None,
    created_before: Annotated[str | None, Query(max_length=MAX_TIME)] = None,
    limit: Annotated[int, Query(ge=1)] = 50,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR)] = None,
) -> dict[str, Any]:
    if limit > MAX_LIMIT:
        raise BadInput(f"limit is at most {MAX_LIMIT}", [{"field": "limit", "message": f"at most {MAX_LIMIT}"}])
    if state:
        bad = [s for s in state.split(",") if s not in {x.value for x in JobState}]
        if bad:
            raise BadInput(f"unknown state '{bad[0]}': one of " + ", ".join(x.value for x in JobState),
                           [{"field": "state", "message": "unknown state"}])
    try:
        after = parse_time(created_after) if created_after else None
        before = parse_time(created_before) if created_before else None
        before_seq = decode_cursor(cursor) if cursor else None
    except ValueError as e:
        raise BadInput(str(e)) from e
    with svc.coord.store.read() as tx:
        rows, total = tx.list_jobs(state=state, queue=queue, tag=tag, q=q, created_after=after,
                                   created_before=before, before_seq=before_seq, id_prefix=id_prefix,
                                   limit=limit + 1)
    # One row more than asked tells whether another page exists.
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = encode_cursor(rows[-1]["seq"]) if more else None
    # total: exact up to COUNT_CAP matches; past it, COUNT_CAP with total_exact false ("at least")
    return {"items": [job_view(r) for r in rows], "next_cursor": nxt, "total": min(total, COUNT_CAP),
            "total_exact": total <= COUNT_CAP}


@router.get("/{job_id}", summary="A job, how many of its tasks are in each state, and its first tasks",
            response_model=None)
async def get_job(job_id: str, svc: Svc,
                  tasks_limit: Annotated[int, Query(ge=0, le=MAX_LIMIT,
                                                    description="How many tasks to show")] = TASKS_SHOWN,
                  ) -> Response:
    job, tasks, execs, summary, more = await svc.coord.job_page_soon(job_id, tasks_limit)
    out = job_view(job, tasks, execs)
    out["task_summary"] = {"total": sum(summary.values()), **summary}
    out["tasks_next_cursor"] = encode_cursor(tasks[-1]["seq"] if tasks else 0) if more else None
    return JSONResponse(out)  # plain JSON values already: FastAPI's validation of a dict is skipped


@router.get("/{job_id}/tasks", summary="A job's tasks, a page at a time, in the order they were created")
def get_tasks(job_id: str, svc: Svc, limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = TASKS_SHOWN,
              cursor: Annotated[str | None, Query(max_length=MAX_CURSOR)] = None) -> dict[str, Any]:
    try:
        after = decode_cursor(cursor) if cursor else 0
    except ValueError as e:
        raise BadInput(str(e), [{"field": "cursor", "message": str(e)}]) from e
    job, tasks, execs, _, more = svc.coord.get_job_page(job_id, limit, after)
    svc.coord.nodes.attach_task_ports(tasks, execs)
    return tasks_page_view(job, tasks, execs, encode_cursor(tasks[-1]["seq"]) if more and tasks else None)


@router.post("/{job_id}/cancel", summary="Cancel an unfinished job; its running containers are stopped")
def cancel(job_id: str, svc: Svc) -> dict[str, Any]:
    return job_view(svc.coord.cancel(job_id))


@router.post("/{job_id}/restart", summary="Run a failed or cancelled job again from its unfinished task")
def restart(job_id: str, svc: Svc) -> dict[str, Any]:
    return job_view(svc.coord.restart(job_id))


@router.delete("/{job_id}", status_code=204, summary="Delete a finished job, its tasks and its logs")
def delete(job_id: str, svc: Svc) -> Response:
    svc.coord.delete(job_id)
    return Response(status_code=204)


def _line(r: dict[str, Any], fmt: str, names: dict[str, str]) -> str:
    if fmt == "ndjson":
        return json.dumps({"seq": r["seq"], "task": names.get(r["task_id"], r["task_id"]),
                           "task_id": r["task_id"], "execution_id": r["execution_id"],
                           "stream": r["stream"], "line": r["line"], "time": rfc3339(r["ts"])}) + "\n"
    return str(r["line"]) + "\n"


@router.get("/{job_id}/logs", summary="The job's output, a page at a time; follow=true streams it until the job ends",
            responses=api_doc.LOG_LINES)
async def logs(
    job_id: str, svc: Svc, request: Request,
    tail: Annotated[int | None, Query(ge=0, le=100000, description="Only the last N lines")] = None,
    follow: bool = False,
    after: Annotated[int, Query(ge=0, le=2**63 - 1,
                                description="Only lines after this sequence number (a cursor)")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LOG_PAGE, description="At most this many lines")] = MAX_LOG_PAGE,
    format: Annotated[str, Query(pattern="^(text|ndjson)$")] = "text",
) -> Response:
    """A page holds at most ``limit`` lines and about 8 MiB. When more lines follow it, the answer says
    where the next page starts: ``X-Next-After`` (pass it as ``after``) and a ``Link: <...>; rel="next"``.
    ``X-Last-Seq`` is the sequence number of the last line sent (or ``after`` if none): poll from there
    for lines still to come. ``follow`` streams every page, then new lines, until the job has ended
    and its last line was sent."""
    store = svc.coord.store

    def read(after_seq: int, tail_n: int | None) -> tuple[list[dict[str, Any]], str, bool]:
        """A page after ``after_seq``, the job's state, and whether more lines follow the page."""
        with store.read() as tx:
            job = tx.job(job_id)
            if job is None:
                raise NotFound(f"no job with id '{job_id}'")
            if tail_n is not None:
                return tx.tail_logs(job_id, tail_n, LOG_PAGE_BYTES, after_seq), job["state"], False
            rows: list[dict[str, Any]] = []
            size, last = 0, after_seq
            while len(rows) < limit and size < LOG_PAGE_BYTES:
                want = min(LOG_READ_CHUNK, limit - len(rows))
                part = tx.logs(job_id, after_seq=last, limit=want)
                for r in part:
                    rows.append(r)
                    size += len(r["line"]) + 1
                    if size >= LOG_PAGE_BYTES:
                        break
                if len(part) < want and size < LOG_PAGE_BYTES:
                    return rows, job["state"], False  # the end of what is stored
                last = rows[-1]["seq"]
            more = bool(tx.logs(job_id, after_seq=last, limit=1))
            return rows, job["state"], more

    def task_names() -> dict[str, str]:
        # A job's tasks are fixed when it is submitted: read their names once, not on every poll.
        with store.read() as tx:
            return {t["id"]: t["name"] for t in tx.tasks_of(job_id)}

    rows, state, more = await asyncio.to_thread(read, after, tail)
    names = await asyncio.to_thread(task_names) if format == "ndjson" else {}
    media = "application/x-ndjson" if format == "ndjson" else "text/plain; charset=utf-8"
    if not follow:
        last_seq = rows[-1]["seq"] if rows else after
        headers = {"X-Last-Seq": str(last_seq)}
        if more:
            nxt = request.url.include_query_params(after=last_seq, limit=limit)
            headers["X-Next-After"] = str(last_seq)
            headers["Link"] = f'<{nxt.path}?{nxt.query}>; rel="next"'
        return Response("".join(_line(r, format, names) for r in rows), media_type=media, headers=headers)

    async def stream() -> AsyncIterator[str]:
        nonlocal rows, state, more
        last = after
        while True:
            if rows:
                last = rows[-1]["seq"]
                yield "".join(_line(r, format, names) for r in rows)
            if not more:
                if state in {s.value for s in TERMINAL_JOB_STATES}:
                    # A worker reports a task's end with or after its last lines: nothing is left.
                    return
                await asyncio.sleep(0.2)
            rows, state, more = await asyncio.to_thread(read, last, None)

    return StreamingResponse(stream(), media_type=media)
