"""/v1/quotas and /v1/namespaces/{namespace}/quota: per-namespace quotas (corral.domain.quotas).

An admin sets and removes them; a caller reads those of the namespaces it sees (another namespace's is a
404, as every object is), each with what the namespace holds now.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response

from corral.api.deps import Services as Deps
from corral.api.deps import services as deps
from corral.api.errors import BadInput
from corral.api.native.jobs import read_body
from corral.auth import context
from corral.auth.identity import check_namespace
from corral.coordinator.errors import NotFound
from corral.domain.quotas import CPU_PATTERN, MAX_COUNT, MAX_CPU, MEMORY_PATTERN, Usage, parse_quota
from corral.domain.resources import MAX_SIZE
from corral.store.quotas import quota_of
from corral.store.sql import Row

router = APIRouter(prefix="/v1", tags=["quotas"])
Svc = Annotated[Deps, Depends(deps)]
Namespace = Annotated[str, Path(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
                                description="A namespace (a DNS label)")]

_NULL = {"type": "null"}
_COUNT = {"anyOf": [{"type": "integer", "minimum": 0, "maximum": MAX_COUNT}, _NULL]}
# What parse_quota accepts, as a schema (a string size or core count within the bounds it checks).
_FIELDS: dict[str, Any] = {
    "cpu": {"anyOf": [{"type": "number", "minimum": 0, "maximum": MAX_CPU},
                      {"type": "string", "pattern": CPU_PATTERN}, _NULL],
            "description": "cores (8, 0.5, \"500m\")"},
    "memory": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": MAX_SIZE},
                         {"type": "string", "pattern": MEMORY_PATTERN}, _NULL],
               "description": "bytes, or a size such as \"16GB\" or \"512Mi\""},
    "gpus": _COUNT,
    "tasks": {**_COUNT, "description": "tasks placed or running at once"},
    "pods": {**_COUNT, "description": "pods placed or running at once"},
}
_QUOTA_SCHEMA = {
    "type": "object", "additionalProperties": False, "properties": _FIELDS,
    # at least one bound that is not null
    "anyOf": [{"required": [f], "properties": {f: {"not": _NULL}}} for f in _FIELDS],
}
_QUOTA_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": _QUOTA_SCHEMA}}}}


def quota_view(row: Row, usage: Usage | None) -> dict[str, Any]:
    return {"namespace": row["namespace"], "quota": quota_of(row).view(), "used": (usage or Usage()).view(),
            "updated_by": row["updated_by"], "updated_at": row["updated_at"]}


def _check(namespace: str) -> str:
    try:
        return check_namespace(namespace)
    except ValueError as e:
        raise BadInput(str(e)) from None


@router.get("/quotas", summary="The namespaces' quotas, each with what it holds (those the caller sees)")
async def list_quotas(svc: Svc) -> dict[str, Any]:
    def read() -> list[dict[str, Any]]:
        with svc.coord.store.read() as tx:
            rows = {ns: r for ns, r in tx.quotas().items() if context.sees(ns)}
            usage = tx.namespace_usage(rows) if rows else {}
        return [quota_view(rows[ns], usage.get(ns)) for ns in sorted(rows)]

    return {"items": await asyncio.to_thread(read)}


@router.get("/namespaces/{namespace}/quota", summary="A namespace's quota and what it holds")
async def get_quota(namespace: Namespace, svc: Svc) -> dict[str, Any]:
    def read() -> dict[str, Any]:
        with svc.coord.store.read() as tx:
            row = tx.quota(namespace) if context.sees(namespace) else None
            if row is None:
                raise NotFound(f"namespace {namespace} has no quota")
            return quota_view(row, tx.namespace_usage([namespace]).get(namespace))

    return await asyncio.to_thread(read)


@router.put("/namespaces/{namespace}/quota", summary="Set a namespace's quota (admin)", openapi_extra=_QUOTA_BODY)
async def put_quota(namespace: Namespace, request: Request, svc: Svc) -> dict[str, Any]:
    ns = _check(namespace)
    data = await read_body(request)
    try:
        q = parse_quota(data)
    except ValueError as e:
        raise BadInput(str(e)) from None
    ident = context.caller()
    row = {"namespace": ns, **q.view(), "updated_by": ident.principal if ident else "anonymous",
           "updated_at": time.time()}

    def write() -> dict[str, Any]:
        with svc.coord.store.transaction() as tx:
            tx.put_quota(row)
        with svc.coord.store.read() as tx:
            view = quota_view(row, tx.namespace_usage([ns]).get(ns))
        svc.coord.kick()  # a raised quota may let waiting work run now
        return view

    return await asyncio.to_thread(write)


@router.delete("/namespaces/{namespace}/quota", status_code=204, summary="Remove a namespace's quota (admin)")
async def delete_quota(namespace: Namespace, svc: Svc) -> Response:
    def write() -> None:
        with svc.coord.store.transaction() as tx:
            if not tx.delete_quota(namespace):
                raise NotFound(f"namespace {namespace} has no quota")
        svc.coord.kick()

    await asyncio.to_thread(write)
    return Response(status_code=204)
