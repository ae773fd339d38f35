"""/v1/pods: create (JSON or YAML), list, inspect, delete, purge, and read or follow a pod's logs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from corral.api import body
from corral.api import openapi as api_doc
from corral.api.deps import Services, services
from corral.api.errors import BadInput, field_errors
from corral.api.timefmt import rfc3339
from corral.domain.pods import FINAL_POD_STATES, PodSpec
from corral.domain.resources import format_size
from corral.store.sql import Row, decode_cursor, encode_cursor

router = APIRouter(prefix="/v1/pods", tags=["pods"])
Svc = Annotated[Services, Depends(services)]
MAX_LIMIT = 1000
MAX_LOG_PAGE = 10_000
MAX_WAIT = 60  # seconds a GET /v1/pods/{id}?wait= holds on
FOLLOW_POLL = 0.2  # seconds between reads of new lines while following
FINAL = {s.value for s in FINAL_POD_STATES}
MANIFEST_KEYS = {"apiVersion", "kind", "metadata", "spec"}


def _from_manifest(data: dict[str, Any]) -> dict[str, Any]:
    """A Kubernetes-shaped ``{apiVersion, kind: Pod, metadata, spec}`` as the flat pod spec."""
    if data.get("kind") != "Pod":
        raise BadInput("kind: only 'Pod' is taken here", [{"field": "kind", "message": "only 'Pod'"}])
    extra = set(data) - MANIFEST_KEYS
    if extra:
        raise BadInput(f"{sorted(extra)[0]}: unknown field", [{"field": sorted(extra)[0], "message": "unknown field"}])
    meta, spec = data.get("metadata") or {}, data.get("spec") or {}
    if not isinstance(meta, dict) or not isinstance(spec, dict):
        raise BadInput("metadata and spec are objects")
    unknown = set(meta) - {"name", "namespace", "labels", "annotations"}
    if unknown:
        f = f"metadata.{sorted(unknown)[0]}"
        raise BadInput(f"{f}: unknown field", [{"field": f, "message": "unknown field"}])
    return {**meta, **spec}


def validate_pod(data: Any) -> PodSpec:
    if not isinstance(data, dict):
        raise BadInput("a pod is an object with at least 'name' and 'containers'")
    if "kind" in data or "apiVersion" in data:
        data = _from_manifest(data)
    try:
        return PodSpec.model_validate(data)
    except ValidationError as e:
        errs = field_errors(e)
        raise BadInput("; ".join(f"{x['field']}: {x['message']}" for x in errs), errs) from e


def _selector(text: str | None) -> dict[str, str] | None:
    """``app=web,tier=front`` as a map."""
    if not text:
        return None
    out: dict[str, str] = {}
    for part in text.split(","):
        k, eq, v = part.partition("=")
        if not eq or not k.strip():
            raise BadInput(f"selector: '{part[:100]}' is not key=value",
                           [{"field": "selector", "message": "a list of key=value, separated by commas"}])
        out[k.strip()] = v.strip()
    return out


def pod_view(p: Row) -> dict[str, Any]:
    spec = p["spec"]
    return {
        "id": p["id"], "name": p["name"], "namespace": p["namespace"], "origin": p["origin"],
        "labels": p["labels"], "annotations": spec.get("annotations", {}), "state": p["state"],
        "reason": p["reason"], "desired": p["desired"], "restartPolicy": p["restart_policy"],
        "ready": bool(p["ready"]), "node_id": p["node_id"], "node_name": p.get("node_name"),
        "address": p.get("address"), "instance_id": p["instance_id"], "runtime": p["runtime"],
        "resources": {"cpu": p["cpu"], "memory": format_size(int(p["memory"]))},
        "node_selector": p["node_selector"], "ttl_expires_at": rfc3339(p["ttl_expires_at"]),
        "grace": p["grace"],
        "containers": [{**c, "started_at": rfc3339(c["started_at"]), "finished_at": rfc3339(c["finished_at"]),
                        "ready": bool(c["ready"])} for c in p.get("containers", ())],
        "ports": p.get("ports", []),
        "created_at": rfc3339(p["created_at"]), "scheduled_at": rfc3339(p["scheduled_at"]),
        "started_at": rfc3339(p["started_at"]), "finished_at": rfc3339(p["finished_at"]),
        "spec": spec,
    }


_POD_SCHEMA = PodSpec.model_json_schema(ref_template="#/components/schemas/{model}")
_POD_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/PodSpec"}},
    "application/yaml": {"schema": {"$ref": "#/components/schemas/PodSpec"}}}}}


def pod_schemas() -> dict[str, Any]:
    """The pod specification's schemas, for the OpenAPI document (the body is parsed by hand: it may be
    YAML)."""
    defs = dict(_POD_SCHEMA.get("$defs", {}))
    defs["PodSpec"] = {k: v for k, v in _POD_SCHEMA.items() if k != "$defs"}
    return defs


@router.post("", status_code=201, summary="Create a pod (JSON or YAML; a Kubernetes Pod manifest too)",
             openapi_extra=_POD_BODY)
async def create(request: Request, svc: Svc, response: Response) -> dict[str, Any]:
    spec = await body.read_body(request, yaml=True, then=validate_pod)
    pod = await asyncio.to_thread(svc.coord.pods.create, spec)
    response.headers["Location"] = f"/v1/pods/{pod['id']}"
    return pod_view(pod)


@router.get("", summary="List pods in creation order")
def list_pods(
    svc: Svc,
    namespace: Annotated[str | None, Query(max_length=63)] = None,
    selector: Annotated[str | None, Query(max_length=4096, description="key=value[,key=value...]")] = None,
    origin: Annotated[str | None, Query(pattern="^(native|podling|stacks)$")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    try:
        after = decode_cursor(cursor) if cursor else 0
    except ValueError as e:
        raise BadInput(f"cursor: {e}", [{"field": "cursor", "message": str(e)}]) from None
    rows = svc.coord.pods.list(namespace=namespace, selector=_selector(selector), origin=origin,
                               limit=limit + 1, after=after)
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": [pod_view(p) for p in rows],
            "next_cursor": encode_cursor(rows[-1]["seq"]) if more and rows else None}


@router.get("/{pod_id}", summary="A pod, its containers and the ports it holds; ?wait= until it is ready or ended")
async def get_pod(pod_id: str, svc: Svc,
                  wait: Annotated[float, Query(ge=0, le=MAX_WAIT, description=(
                      "Answer once the pod runs and is ready, has ended or is being deleted, waiting at most this "
                      "many seconds (then the pod as it is)"))] = 0) -> dict[str, Any]:
    pods = svc.coord.pods
    if wait > 0:
        return pod_view(await pods.get_settled(pod_id, wait))
    return pod_view(await anyio.to_thread.run_sync(pods.get, pod_id))


@router.delete("/{pod_id}", summary="Stop a pod (SIGTERM, SIGKILL after its grace); the record stays")
def delete_pod(pod_id: str, svc: Svc,
               grace: Annotated[float | None, Query(ge=0, le=3600, description="Seconds before SIGKILL")] = None
               ) -> dict[str, Any]:
    return pod_view(svc.coord.pods.delete(pod_id, grace))


@router.post("/{pod_id}/purge", status_code=204, summary="Remove an ended pod's record and its logs")
def purge_pod(pod_id: str, svc: Svc) -> Response:
    svc.coord.pods.purge(pod_id)
    return Response(status_code=204)


def _line(r: Row, fmt: str) -> str:
    if fmt == "ndjson":
        return json.dumps({"seq": r["seq"], "container": r["container"], "instance_id": r["instance_id"],
                           "stream": r["stream"], "line": r["line"], "time": rfc3339(r["ts"])}) + "\n"
    return str(r["line"]) + "\n"


@router.get("/{pod_id}/logs", summary="A pod's output (one container's with ?container=); follow=true streams it",
            responses=api_doc.LOG_LINES)
async def logs(
    pod_id: str, svc: Svc,
    container: Annotated[str | None, Query(max_length=63)] = None,
    after: Annotated[int, Query(ge=0, le=2**63 - 1, description="Only lines after this sequence number")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LOG_PAGE)] = 1000,
    follow: bool = False,
    format: Annotated[str, Query(pattern="^(text|ndjson)$")] = "text",
) -> Response:
    """``X-Last-Seq`` is the sequence number of the last line sent (or ``after``): ask again from there
    for lines still to come. ``follow`` streams the lines, then new ones as they come, until the pod
    has ended and its last lines were sent."""
    pods = svc.coord.pods
    rows = await asyncio.to_thread(pods.logs, pod_id, container, after, limit)
    media = "application/x-ndjson" if format == "ndjson" else "text/plain; charset=utf-8"
    if not follow:
        last = rows[-1]["seq"] if rows else after
        return Response("".join(_line(r, format) for r in rows), media_type=media, headers={"X-Last-Seq": str(last)})

    async def stream() -> AsyncIterator[str]:
        nonlocal rows
        last = after
        while True:
            if rows:
                last = rows[-1]["seq"]
                yield "".join(_line(r, format) for r in rows)
            if len(rows) < limit:
                state = await asyncio.to_thread(pods.state, pod_id)
                rows = await asyncio.to_thread(pods.logs, pod_id, container, last, limit)
                if not rows and state in FINAL:
                    return  # a node reports a pod's end with or after its last lines
                if not rows:
                    await asyncio.sleep(FOLLOW_POLL)
                    rows = await asyncio.to_thread(pods.logs, pod_id, container, last, limit)
            else:
                rows = await asyncio.to_thread(pods.logs, pod_id, container, last, limit)

    return StreamingResponse(stream(), media_type=media)
