"""The CloudAI REST and WebSocket API over Corral's core. See docs/api/cloudai.md.

A CloudAI task is a Corral job of one container task: ``command`` runs with ``sh -c`` in ``docker_image``,
and ``req_cpu``, ``req_memory`` and ``req_storage`` (GB, meaning GiB) and ``req_gpu`` become the task's
resources, so placement honours them. Errors are ``{"error": {"code", "message", "details"}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from corral.api.deps import Services, services
from corral.api.dialects.base import DialectError, json_object, route_class
from corral.api.dialects.cloudai_views import (
    GIB,
    STATUS,
    STATUS_FILTER,
    USER_TAG,
    cluster_status,
    running_on,
    task_id,
    task_views,
    worker_view,
    worker_views,
)
from corral.api.dialects.telemetry import Hub, for_namespaces
from corral.api.idempotency import idem_key
from corral.api.openapi import IMAGE_PATTERN, NOT_BLANK, TEXT_NO_EXPR
from corral.auth.middleware import identity_of
from corral.coordinator.errors import Conflict, NotFound
from corral.coordinator.policy import ESCALATIONS, escalation_message
from corral.domain.resources import MAX_SIZE
from corral.domain.spec import MAX_TAG, MAX_VALUE, JobSpec, TaskSpec
from corral.store.sql import Row, Tx

MAX_LIMIT = 1000
MAX_USER_ID = MAX_TAG - len(USER_TAG)  # it is kept as a job tag
MAX_OFFSET = 1 << 31  # an offset past every task answers empty; this keeps it a number the store can hold
MAX_STATUS = 64  # the list's status filter: 'queued', 'running', ...
ERROR_PREFIXES = ("/api/tasks", "/api/workers", "/api/cluster/status", "/ws/telemetry")
# The document's rate limits: bucket -> rate, or connections at once for a WebSocket.
RATE_LIMITS = {"submit": "10/minute", "read": "60/minute", "websockets": "5"}


def error_body(e: DialectError) -> dict[str, Any]:
    return {"error": {"code": e.code or "ERROR", "message": e.message, "details": e.details or {}}}


def _render(request: Request, e: DialectError) -> Response:
    return JSONResponse(error_body(e), status_code=e.status, headers=e.headers)


def render_limit(status: int, message: str, headers: dict[str, str]) -> Response:
    return JSONResponse(error_body(DialectError(status, message, "RATE_LIMITED", {"retry_after": headers.get(
        "Retry-After")})), status_code=status, headers=headers)


def invalid(field: str, reason: str) -> DialectError:
    return DialectError(400, f"{field} {reason}", "INVALID_REQUEST", {"field": field, "reason": reason})


router = APIRouter(tags=["cloudai"], route_class=route_class(_render))
ws_router = APIRouter(tags=["cloudai"])
Svc = Annotated[Services, Depends(services)]


# -- requests -------------------------------------------------------------------------------------
def _text(data: dict[str, Any], name: str, limit: int = 0) -> str:
    v = data.get(name)
    if v is None:
        raise invalid(name, "is required")
    if not isinstance(v, str):
        raise invalid(name, "must be a string")
    if not v.strip():
        raise invalid(name, "cannot be empty")
    if limit and len(v) > limit:
        raise invalid(name, f"must be at most {limit} characters")
    return v


def _number(data: dict[str, Any], name: str, default: float | None, positive: bool = False) -> float | None:
    v = data.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise invalid(name, "must be a number")
    if positive and v <= 0:
        raise invalid(name, "must be greater than 0")
    if v < 0:
        raise invalid(name, "cannot be negative")
    return float(v)


def task_spec(data: dict[str, Any]) -> JobSpec:
    for key in data:
        if (refused := escalation_message(key)) is not None:
            raise invalid(key, refused.split(": ", 1)[1])
    user = _text(data, "user_id", MAX_USER_ID)
    image = _text(data, "docker_image")
    if any(c.isspace() for c in image):
        raise invalid("docker_image", "cannot contain spaces")
    command = _text(data, "command")
    cpu = _number(data, "req_cpu", None, positive=True)
    memory = _number(data, "req_memory", None)
    storage = _number(data, "req_storage", None)
    gpu = _number(data, "req_gpu", None)
    if gpu is not None and gpu != int(gpu):
        raise invalid("req_gpu", "must be a whole number: GPUs are placed whole")
    resources: dict[str, Any] = {"cpu": cpu,
                                 "memory": None if memory is None else int(memory * GIB),
                                 "disk": None if storage is None else int(storage * GIB),
                                 "gpu": None if gpu is None else int(gpu)}
    try:
        return JobSpec(name="cloudai-task", tags=[f"{USER_TAG}{user}", "cloudai"],
                       tasks=[TaskSpec.model_validate({"name": "main", "image": image, "run": command, "resources":
                                                       {k: v for k, v in resources.items() if v is not None}})])
    except ValidationError as e:
        err = e.errors()[0]
        names = {"cpu": "req_cpu", "memory": "req_memory", "disk": "req_storage", "gpu": "req_gpu",
                 "image": "docker_image", "run": "command"}
        field = next((names[str(p)] for p in reversed(err["loc"]) if str(p) in names), "(body)")
        raise invalid(field, str(err["msg"]).removeprefix("Value error, ")) from e


def parse_task_id(value: str) -> tuple[int | None, str | None]:
    """``task-<n>`` -> (n, None); a Corral job id (32 hex characters) -> (None, id)."""
    v = value.strip().lower()
    if v.startswith("task-") and v[5:].isdigit():
        return int(v[5:]), None
    if len(v) == 32 and all(c in "0123456789abcdef" for c in v):
        return None, v
    raise DialectError(404, f"no task '{value}': task ids look like task-<n>", "NOT_FOUND",
                       {"task_id": value})


def _job(tx: Tx, value: str) -> Row:
    seq, jid = parse_task_id(value)
    job = tx.job_by_seq(seq) if seq is not None else tx.job(jid or "")
    if job is None:
        raise DialectError(404, f"task {value} not found", "NOT_FOUND", {"task_id": value})
    return job


# What task_spec accepts, as a schema: the three texts with something in them (an image without spaces, and no
# expression in the image or the command), the resources within the task's limits (GiB up to 1 PiB, whole GPUs),
# and no key that asks for a privileged container (escalation_message reads a key's last part after a '.' or ']').
_GIBS = MAX_SIZE / GIB
_ESCALATION_KEY = r"(^|[.\]])(" + "|".join(ESCALATIONS) + ")$"
SUBMIT_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["user_id", "docker_image", "command"],
    "propertyNames": {"not": {"pattern": _ESCALATION_KEY}},
    "properties": {
        "user_id": {"type": "string", "minLength": 1, "maxLength": MAX_USER_ID, "pattern": NOT_BLANK},
        "docker_image": {"type": "string", "minLength": 1, "maxLength": 1000, "pattern": IMAGE_PATTERN},
        "command": {"type": "string", "minLength": 1, "maxLength": MAX_VALUE, "pattern": TEXT_NO_EXPR,
                    "description": "Run with sh -c in the image"},
        "req_cpu": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1024, "description": "Cores"},
        "req_memory": {"type": ["number", "null"], "minimum": 0, "maximum": _GIBS, "description": "GiB"},
        "req_storage": {"type": ["number", "null"], "minimum": 0, "maximum": _GIBS, "description": "GiB"},
        "req_gpu": {"type": ["integer", "null"], "minimum": 0, "maximum": 64, "description": "Whole GPUs"}}}}}}}


# -- tasks ----------------------------------------------------------------------------------------
@router.post("/api/tasks", summary="CloudAI: submit a task (a command in an image, with resources)",
             openapi_extra=SUBMIT_BODY)
async def submit(request: Request, svc: Svc) -> dict[str, Any]:
    spec = task_spec(await json_object(request, "the request body"))
    idem = idem_key(request, "cloudai/tasks")

    job = (await svc.coord.submit_async([spec], idem))[0]  # its row has the sequence number the store gave
    return {"task_id": task_id(job["seq"]), "status": "queued", "message": "Task submitted successfully"}


@router.get("/api/tasks", summary="CloudAI: list tasks, newest first")
def list_tasks(svc: Svc, status: Annotated[str | None, Query(max_length=MAX_STATUS)] = None,
               user_id: Annotated[str | None, Query(max_length=MAX_USER_ID)] = None,
               limit: Annotated[int, Query()] = 50, offset: Annotated[int, Query()] = 0) -> dict[str, Any]:
    states = None
    if status:
        states = STATUS_FILTER.get(status.strip().lower())
        if states is None:
            raise invalid("status", "must be one of " + ", ".join(STATUS_FILTER))
    if not 1 <= limit <= MAX_LIMIT:
        raise invalid("limit", f"must be between 1 and {MAX_LIMIT}")
    if not 0 <= offset <= MAX_OFFSET:
        raise invalid("offset", f"must be between 0 and {MAX_OFFSET}")
    with svc.coord.store.read() as tx:
        rows, total = tx.find_jobs(states=states, tag=f"{USER_TAG}{user_id}" if user_id else None,
                                   offset=offset, limit=limit)
        tasks = task_views(tx, rows)
    return {"tasks": tasks, "total": total, "limit": limit, "offset": offset}


@router.get("/api/tasks/{task_id}", summary="CloudAI: one task")
def get_task(task_id: str, svc: Svc) -> dict[str, Any]:
    with svc.coord.store.read() as tx:
        return task_views(tx, [_job(tx, task_id)])[0]


@router.post("/api/tasks/{task_id}/cancel", summary="CloudAI: cancel a queued or running task")
def cancel_task(task_id: str, svc: Svc) -> dict[str, Any]:
    with svc.coord.store.read() as tx:
        job = _job(tx, task_id)
    name = f"task-{job['seq']}"
    try:
        svc.coord.cancel(job["id"])
    except NotFound as e:
        raise DialectError(404, f"task {name} not found", "NOT_FOUND", {"task_id": name}) from e
    except Conflict as e:
        with svc.coord.store.read() as tx:
            now = tx.job(job["id"])
        state = STATUS.get(now["state"], now["state"]) if now else "gone"
        raise DialectError(409, f"task {name} is already {state}: it cannot be cancelled", "CONFLICT",
                           {"task_id": name, "status": state}) from e
    return {"task_id": name, "status": "cancelled", "message": "Task cancellation requested"}


# -- workers and the cluster ----------------------------------------------------------------------
@router.get("/api/workers", summary="CloudAI: every worker, with its capacity and what is allocated")
def list_workers(svc: Svc) -> dict[str, Any]:
    with svc.coord.store.read() as tx:
        return {"workers": worker_views(tx)}


@router.get("/api/workers/{worker_id}", summary="CloudAI: one worker (by id or name) and its tasks")
def get_worker(worker_id: str, svc: Svc) -> dict[str, Any]:
    with svc.coord.store.read() as tx:
        node = tx.node(worker_id) or next((n for n in tx.nodes() if n["name"] == worker_id), None)
        if node is None:
            raise DialectError(404, f"worker {worker_id} not found", "NOT_FOUND", {"worker_id": worker_id})
        alloc = next((a for a in tx.allocations() if a["node_id"] == node["id"]), None)
        return {**worker_view(node, alloc), "running_tasks": running_on(tx, node["id"])}


@router.get("/api/cluster/status", summary="CloudAI: workers, capacity and task counts")
def get_cluster_status(svc: Svc) -> dict[str, Any]:
    with svc.coord.store.read() as tx:
        return cluster_status(tx)


# -- telemetry ------------------------------------------------------------------------------------
def hub_of(app: Any, svc: Services) -> Hub:
    hub: Hub | None = getattr(app.state, "cloudai_telemetry", None)
    if hub is None:
        hub = app.state.cloudai_telemetry = Hub(svc.coord.store)
    return hub


@ws_router.websocket("/ws/telemetry")
async def telemetry(websocket: WebSocket) -> None:
    """A telemetry_update now and every interval; task and worker events as they happen."""
    hub = hub_of(websocket.app, websocket.app.state.services)
    store = websocket.app.state.services.coord.store
    # A caller limited to some namespaces sees their tasks and counts only (each message filtered for it).
    visible = identity_of(websocket.scope).visible()
    await websocket.accept()
    sub = hub.subscribe()

    async def send(text: str) -> None:
        if visible is not None:
            def mine() -> str | None:
                with store.read() as tx:
                    return for_namespaces(tx, text, visible)
            filtered = await asyncio.to_thread(mine)
            if filtered is None:
                return
            text = filtered
        await websocket.send_text(text)

    async def pump() -> None:
        await send(await hub.current())
        while (text := await sub.next()) is not None:
            await send(text)
        await websocket.close(code=1013, reason="too slow: fell too far behind")

    async def drain() -> None:
        while True:
            msg = await websocket.receive()
            if msg["type"] == "websocket.disconnect":
                return

    tasks = [asyncio.create_task(pump()), asyncio.create_task(drain())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        hub.unsubscribe(sub)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError, OSError):
                await t
