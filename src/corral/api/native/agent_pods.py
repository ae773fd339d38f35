"""/v1/agent/nodes/{id}/pods: a node's level-triggered pod sync.

The worker sends what it runs (each pod instance's phase and its containers' states) and their output;
the answer is the node's whole desired set, and anything the node runs that is not in it is stopped.
The node is authenticated (cluster token, then its secret) before its body is read; the body's models
are strict and bounded; only the node that holds an instance may report about it (coordinator/pods.py).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import Field

from corral.api.body import model_body
from corral.api.native.agent import (
    ID_PATTERN,
    MAX_LOG_LINES,
    ContainerId,
    ErrorText,
    LongText,
    NodeAgent,
    NodeId,
    Strict,
    Text200,
    Whole,
    node_guard,
)
from corral.domain.agentwire import ContainerStatus, PodLogLine, PodStatus

router = APIRouter(prefix="/v1/agent", tags=["agent"])
MAX_PODS = 10_000  # pod instances one node may name in one sync
MAX_CONTAINERS = 16
PodId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
InstanceId = Annotated[str, Field(pattern=ID_PATTERN)]
ContainerName = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
Time = Annotated[float, Field(ge=0, le=1e11)]


class ContainerStatusBody(Strict):
    name: ContainerName
    state: str = Field(pattern="^(waiting|running|terminated)$")
    reason: Text200 | None = None
    container_id: ContainerId | None = None
    restart_count: Whole = Field(0, ge=0, le=1 << 31)
    exit_code: Whole | None = Field(None, ge=-(1 << 31), lt=1 << 32)
    ready: bool = False
    error: ErrorText | None = None
    started_at: Time | None = None
    finished_at: Time | None = None


class PodStatusBody(Strict):
    instance_id: InstanceId
    pod_id: PodId
    phase: str = Field(pattern="^(running|succeeded|failed|stopped)$")
    containers: list[ContainerStatusBody] = Field([], max_length=MAX_CONTAINERS)
    ts: Time = 0.0


class PodLogBody(Strict):
    instance_id: InstanceId
    container: ContainerName
    stream: str = Field(pattern="^(stdout|stderr)$")
    line: LongText
    ts: Time


class SyncBody(Strict):
    pods: list[PodStatusBody] = Field([], max_length=MAX_PODS)
    logs: list[PodLogBody] = Field([], max_length=MAX_LOG_LINES)


SyncIn = Annotated[SyncBody, Depends(model_body(SyncBody, guard=node_guard))]


@router.post("/nodes/{node_id}/pods")
def sync_pods(node_id: NodeId, body: SyncIn, svc: NodeAgent) -> dict[str, Any]:
    """What this node runs and their output → the pods it should run (``desired``: run or stop), and
    ``log_full``: the instances whose stored output is full (``log_full_containers``: which of their
    containers), whose later lines are not wanted."""
    statuses = [PodStatus(p.instance_id, p.pod_id, p.phase,
                          [ContainerStatus(**c.model_dump()) for c in p.containers], p.ts) for p in body.pods]
    lines = [PodLogLine(**ln.model_dump()) for ln in body.logs]
    return svc.coord.pods.sync(node_id, statuses, lines)
