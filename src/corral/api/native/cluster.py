"""/v1/nodes and /v1/queues: what the cluster has and what waits on it; /v1/cluster: the coordinators, which
one leads, leadership transfer and a coordinator's drain."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from corral.api.body import model_body
from corral.api.deps import Services, services
from corral.api.native.views import node_view
from corral.api.openapi import own_errors
from corral.coordinator.errors import Invalid, NotFound
from corral.domain.resources import MAX_DURATION, parse_duration
from corral.domain.spec import NoBool

router = APIRouter(prefix="/v1", tags=["cluster"])
Svc = Annotated[Services, Depends(services)]


@router.get("/nodes", summary="Every worker node, with capacity and what is allocated on it")
def list_nodes(svc: Svc) -> dict[str, Any]:
    with svc.coord.store.read() as tx:
        alloc = {a["node_id"]: a for a in tx.allocations()}
        return {"items": [node_view(n, alloc.get(n["id"])) for n in tx.nodes()]}


def _node_answer(svc: Services, node_id: str) -> dict[str, Any]:
    with svc.coord.store.read() as tx:
        n = tx.node(node_id)
        if n is None:
            raise NotFound(f"no node with id '{node_id}'")
        alloc = {a["node_id"]: a for a in tx.allocations()}
        return node_view(n, alloc.get(node_id))


@router.get("/nodes/{node_id}", summary="One node")
def get_node(node_id: str, svc: Svc) -> dict[str, Any]:
    return _node_answer(svc, node_id)


class DrainBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # "10m", or seconds; none: running tasks may take as long as they need. The schema: the nearest stricter
    # (parse_duration takes more forms).
    deadline: Annotated[str | float | None, NoBool] = Field(None, json_schema_extra={"anyOf": [
        {"type": "string", "pattern": r"^\s*[1-9][0-9]{0,2}(?:ms|s|m|h)\s*$"},
        {"type": "number", "minimum": 0, "maximum": MAX_DURATION}, {"type": "null"}]})


DrainIn = Annotated[DrainBody, Depends(model_body(DrainBody))]


@router.post("/nodes/{node_id}/drain", summary="Drain a node: no new work; running tasks finish, or move at a deadline")
def drain_node(node_id: str, body: DrainIn, svc: Svc) -> dict[str, Any]:
    deadline = None
    if body.deadline is not None:
        try:
            deadline = parse_duration(body.deadline)
        except ValueError as e:
            raise Invalid(f"deadline: {e}") from e
    svc.coord.admin_drain(node_id, deadline)
    return _node_answer(svc, node_id)


@router.post("/nodes/{node_id}/undrain", summary="Undo a drain: the node takes new work again")
def undrain_node(node_id: str, svc: Svc) -> dict[str, Any]:
    svc.coord.undrain(node_id)
    return _node_answer(svc, node_id)


@router.get("/queues", summary="Queues: tasks pending and running, and the workers that serve each")
def list_queues(svc: Svc) -> dict[str, Any]:
    with svc.coord.store.read() as tx:
        counts = tx.count_tasks_by_queue_state()
        nodes = tx.nodes("ready")
    queues: dict[str, dict[str, Any]] = {}

    def q(name: str) -> dict[str, Any]:
        return queues.setdefault(name, {"name": name, "pending": 0, "running": 0, "workers": 0})

    q("default")
    for name, state, n in counts:
        q(name)["pending" if state == "pending" else "running"] += n
    for node in nodes:
        for name in node["queues"] or []:
            q(name)["workers"] += 1
    return {"items": sorted(queues.values(), key=lambda x: x["name"])}


class TransferIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: str | None = Field(None, min_length=1, max_length=64,
                               description="The coordinator to lead; any other live one if not given")


@router.get("/cluster", summary="The coordinators sharing the database: which leads, the epoch, liveness")
def cluster_status(svc: Svc) -> dict[str, Any]:
    return svc.coord.cluster_status().view()


@router.post("/cluster/transfer", summary="Hand the leadership to a coordinator (or any other), within 2 s",
             responses=own_errors(404))
async def transfer(svc: Svc, body: TransferIn | None = None) -> dict[str, Any]:
    target = body.target if body is not None else None
    state = await run_in_threadpool(svc.coord.transfer_leadership, target)
    return state.view()


@router.post("/cluster/{coord_id}/drain",
             summary="A coordinator stops taking the leadership, hands it over, and is no longer ready")
def drain_coordinator(coord_id: str, svc: Svc) -> dict[str, Any]:
    return svc.coord.drain_coordinator(coord_id, True).view()


@router.post("/cluster/{coord_id}/undrain", summary="A drained coordinator may lead again and is ready")
def undrain_coordinator(coord_id: str, svc: Svc) -> dict[str, Any]:
    return svc.coord.drain_coordinator(coord_id, False).view()
