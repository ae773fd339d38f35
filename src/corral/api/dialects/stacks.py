"""The Stacks API (the Kubernetes stack provisioner's) over Corral's pods. See docs/api/stacks.md.

A stack is a pod of the core with a node port per target port and a time to live (coordinator/stacks.py);
this module only reads requests, checks the API key and writes answers in the document's shapes: errors are
``{"error": "..."}``, times RFC 3339 with up to nanosecond digits.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from corral.api.dialects.base import DialectError, json_object, route_class
from corral.api.openapi import NOT_BLANK, json_body
from corral.auth.middleware import identity_of
from corral.coordinator.stacks import MAX_BATCH, Stacks

# The paths this API owns on the main port (the edge answers its refusals in this API's shape).
ERROR_PREFIXES = ("/stacks", "/stats")
MAX_ID = 64


def error_body(message: str) -> dict[str, Any]:
    return {"error": message}


def _render(request: Request, e: DialectError) -> Response:
    message = e.message
    if e.status == 500:
        message = "internal server error"
    return JSONResponse(error_body(message), status_code=e.status, headers=e.headers)


def render_edge(status: int, message: str, headers: dict[str, str]) -> Response:
    return JSONResponse(error_body(message), status_code=status, headers=headers)


def rfc3339_nano(ts: float) -> str:
    """RFC 3339 in UTC with the fraction's trailing zeros dropped, as Go's time.RFC3339Nano prints it."""
    text = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return text + "Z"


def stacks_of(request: Request) -> Stacks:
    stacks: Stacks = request.app.state.stacks
    return stacks


def api_key(request: Request) -> None:
    """The API key (``X-API-KEY`` or ``?api_key=``), when one is configured: 401 without it."""
    want = stacks_of(request).config.api_key
    if not want or identity_of(request.scope).kind != "anonymous":  # a key, user or token the edge knew
        return
    given = request.headers.get("x-api-key", "").strip() or request.query_params.get("api_key", "").strip()
    if not given or not hmac.compare_digest(given.encode(), want.encode()):
        raise DialectError(401, "invalid api key")


router = APIRouter(tags=["stacks"], route_class=route_class(_render), dependencies=[Depends(api_key)])
St = Annotated[Stacks, Depends(stacks_of)]


def _times(view: dict[str, Any]) -> dict[str, Any]:
    return {k: rfc3339_nano(v) if k in ("ttl_expires_at", "created_at", "updated_at") else v
            for k, v in view.items()}


def _id(value: str, what: str = "stack") -> str:
    if not 1 <= len(value) <= MAX_ID:
        raise DialectError(404, f"{what} not found")
    return value


BATCH_BODY = json_body({"type": "object", "required": ["stack_ids"], "additionalProperties": False, "properties": {
    "stack_ids": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH,
                  "items": {"type": "string", "maxLength": MAX_ID, "pattern": NOT_BLANK}}}})


@router.post("/stacks/batch-delete", status_code=202, summary="Stacks: delete stacks in the background",
             openapi_extra=BATCH_BODY)
async def batch_delete(request: Request, stacks: St) -> JSONResponse:
    body = await json_object(request)
    extra = sorted(set(body) - {"stack_ids"})
    if extra:
        raise DialectError(400, f"invalid input: unknown field '{extra[0][:100]}'")
    ids = body.get("stack_ids")
    if not isinstance(ids, list) or not ids:
        raise DialectError(400, "invalid stack_ids: a non-empty list of stack ids is required")
    if len(ids) > MAX_BATCH:
        raise DialectError(400, f"invalid stack_ids: at most {MAX_BATCH} in one batch")
    clean: list[str] = []
    for v in ids:
        if not isinstance(v, str) or not v.strip() or len(v.strip()) > MAX_ID:
            raise DialectError(400, f"invalid stack_ids: each is a non-empty string of at most {MAX_ID} "
                                    "characters")
        if v.strip() not in clean:
            clean.append(v.strip())
    job_id = await run_in_threadpool(stacks.start_batch_delete, clean)
    return JSONResponse({"job_id": job_id}, status_code=202)


@router.get("/stacks/batch-delete/{job_id}", summary="Stacks: a batch delete's progress")
def batch_job(job_id: str, stacks: St) -> dict[str, Any]:
    return _times(stacks.batch_job(_id(job_id, "job")))


# What create accepts, as a schema: the nearest stricter. A Pod manifest is YAML in a string, which JSON Schema
# can describe only by a pattern: one container, named and of an image, that exposes port 8080 (the one
# target_port names) with CPU and memory limits (domain/k8s.parse_manifest asks for them). The values are
# quoted, so YAML reads each as text.
_MANIFEST = ('^apiVersion: v1\\nkind: Pod\\nspec:\\n  containers:\\n  - name: "[a-z](?:[-a-z0-9]{0,14}[a-z0-9])?"\\n'
             '    image: "[a-z0-9]{1,30}(?::[a-z0-9]{1,20})?"\\n    ports:\\n    - containerPort: 8080\\n'
             '    resources:\\n      limits:\\n        cpu: "[1-9][0-9]?m"\\n        memory: "[1-9][0-9]?Mi"\\n$')
CREATE_BODY = json_body({"type": "object", "required": ["pod_spec", "target_port"], "additionalProperties": False,
                         "properties": {
                             "pod_spec": {"type": "string", "pattern": _MANIFEST,
                                          "description": "A Kubernetes Pod manifest (YAML): the schema gives the "
                                                         "nearest stricter form of what is accepted"},
                             "target_port": {"type": "array", "minItems": 1, "maxItems": 1, "items": {
                                 "type": "object", "required": ["container_port", "protocol"],
                                 "additionalProperties": False,
                                 "properties": {"container_port": {"const": 8080}, "protocol": {"const": "TCP"}}}}}})


@router.post("/stacks", status_code=201, summary="Stacks: create a stack from a Pod manifest",
             openapi_extra=CREATE_BODY)
async def create(request: Request, stacks: St) -> JSONResponse:
    body = await json_object(request)
    extra = sorted(set(body) - {"pod_spec", "target_port"})
    if extra:
        raise DialectError(400, f"invalid input: unknown field '{extra[0][:100]}'")
    view = await run_in_threadpool(stacks.create, body.get("pod_spec"), body.get("target_port"))
    return JSONResponse(_times(view), status_code=201)


@router.get("/stacks", summary="Stacks: every stack")
def list_stacks(stacks: St) -> dict[str, Any]:
    return {"stacks": [_times(v) for v in stacks.list()]}


@router.get("/stacks/{stack_id}", summary="Stacks: one stack")
def get_stack(stack_id: str, stacks: St) -> dict[str, Any]:
    return _times(stacks.get(_id(stack_id)))


@router.get("/stacks/{stack_id}/status", summary="Stacks: a stack's status, ports and address")
def get_status(stack_id: str, stacks: St) -> dict[str, Any]:
    v = stacks.get(_id(stack_id))
    return {"stack_id": v["stack_id"], "status": v["status"], "ttl": rfc3339_nano(v["ttl_expires_at"]),
            "ports": v["ports"], "node_public_ip": v["node_public_ip"]}


@router.delete("/stacks/{stack_id}", summary="Stacks: delete a stack")
def delete_stack(stack_id: str, stacks: St) -> dict[str, Any]:
    stacks.delete(_id(stack_id))
    return {"deleted": True, "stack_id": stack_id}


@router.get("/stats", summary="Stacks: counts, node distribution, ports and reserved resources")
def stats(stacks: St) -> dict[str, Any]:
    return stacks.stats()


# Served only where the Stacks API has a port of its own: on the main port /healthz is Corral's probe,
# which answers {"status": "ok", ...} without a key.
health_router = APIRouter(tags=["stacks"], route_class=route_class(_render), dependencies=[Depends(api_key)])


@health_router.get("/healthz", summary="Stacks: health")
def healthz() -> dict[str, str]:
    return {"status": "ok"}
