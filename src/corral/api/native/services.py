"""/v1/services: a stable name and port in front of the ready pods a label selector matches.

Also the agent's ``GET /v1/agent/nodes/{id}/services``: the NodePort services a node forwards, with their
ready endpoints (node-authenticated like the agent's other calls).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import ValidationError

from corral.api.deps import Services as Deps
from corral.api.deps import services as deps
from corral.api.errors import BadInput, field_errors
from corral.api.native.agent import NodeAgent, NodeId
from corral.api.native.jobs import read_body
from corral.api.timefmt import rfc3339
from corral.coordinator.services import Services
from corral.domain.services import ServiceSpec
from corral.store.sql import decode_cursor, encode_cursor

router = APIRouter(prefix="/v1/services", tags=["services"])
agent_router = APIRouter(prefix="/v1/agent", tags=["agent"])
Svc = Annotated[Deps, Depends(deps)]
ServiceId = Annotated[str, Path(min_length=1, max_length=64, description="The service's id")]
FORWARD_POLL = 1.0  # seconds between a worker's reads of its services


_SERVICE_SCHEMA = ServiceSpec.model_json_schema(ref_template="#/components/schemas/{model}")
_SERVICE_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/ServiceSpec"}},
    "application/yaml": {"schema": {"$ref": "#/components/schemas/ServiceSpec"}}}}}


def service_schemas() -> dict[str, Any]:
    """The service specification's schemas, for the OpenAPI document (the body is parsed by hand: it may
    be YAML)."""
    defs = dict(_SERVICE_SCHEMA.get("$defs", {}))
    defs["ServiceSpec"] = {k: v for k, v in _SERVICE_SCHEMA.items() if k != "$defs"}
    return defs


def service_view(s: dict[str, Any]) -> dict[str, Any]:
    return {**{k: v for k, v in s.items() if k != "seq"},
            "created_at": rfc3339(s["created_at"]), "updated_at": rfc3339(s["updated_at"])}


def validate_service(data: Any) -> ServiceSpec:
    if not isinstance(data, dict):
        raise BadInput("a service is an object with 'name', 'selector' and 'ports'")
    try:
        return ServiceSpec.model_validate(data)
    except ValidationError as e:
        errs = field_errors(e)
        raise BadInput("; ".join(f"{x['field']}: {x['message']}" for x in errs), errs) from e


@router.post("", status_code=201, summary="Create a service (JSON or YAML)", openapi_extra=_SERVICE_BODY)
async def create(request: Request, svc: Svc, response: Response) -> dict[str, Any]:
    spec = validate_service(await read_body(request))
    out = await asyncio.to_thread(Services(svc.coord).create, spec)
    response.headers["Location"] = f"/v1/services/{out['id']}"
    return service_view(out)


@router.get("", summary="List services, oldest first, a page at a time")
def list_services(svc: Svc, namespace: Annotated[str | None, Query(max_length=63)] = None,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                  cursor: Annotated[str | None, Query(max_length=200)] = None) -> dict[str, Any]:
    try:
        after = decode_cursor(cursor) if cursor else 0
    except ValueError as e:
        raise BadInput(f"cursor: {e}", [{"field": "cursor", "message": str(e)}]) from e
    items = Services(svc.coord).list(namespace, after_seq=after, limit=limit + 1)
    more = len(items) > limit
    items = items[:limit]
    return {"items": [service_view(s) for s in items],
            "next_cursor": encode_cursor(items[-1]["seq"]) if more else None}


@router.get("/{service_id}", summary="A service")
def get(service_id: ServiceId, svc: Svc) -> dict[str, Any]:
    return service_view(Services(svc.coord).get(service_id))


@router.put("/{service_id}", summary="Replace a service's spec (its name and namespace stay)",
            openapi_extra=_SERVICE_BODY)
async def update(service_id: ServiceId, request: Request, svc: Svc,
                 version: Annotated[int | None, Query(ge=1, le=2**63 - 1,
                                                      description="Refuse (409) unless the service is "
                                                                  "still at this version")] = None
                 ) -> dict[str, Any]:
    spec = validate_service(await read_body(request))
    return service_view(await asyncio.to_thread(Services(svc.coord).update, service_id, spec, version))


@router.delete("/{service_id}", status_code=204, summary="Delete a service (its node ports are freed)")
def delete(service_id: ServiceId, svc: Svc) -> Response:
    Services(svc.coord).delete(service_id)
    return Response(status_code=204)


@router.get("/{service_id}/endpoints", summary="The ready pods the service sends traffic to")
def endpoints(service_id: ServiceId, svc: Svc) -> dict[str, Any]:
    return {"service_id": service_id, "endpoints": Services(svc.coord).endpoints(service_id)}


@agent_router.get("/nodes/{node_id}/services", summary="The NodePort services this node forwards")
def node_services(node_id: NodeId, svc: NodeAgent) -> dict[str, Any]:
    """Every NodePort service whose port this node holds, with its ready endpoints; the worker reads it
    every ``interval`` seconds and forwards each node port to them."""
    return {"services": Services(svc.coord).for_node(node_id), "interval": FORWARD_POLL}
