"""/v1/agent: how workers register, heartbeat, receive work (long-poll) and report back.

Workers dial out to the coordinator; the coordinator never connects to a worker.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header
from pydantic import BaseModel, Field

from corral.api.deps import Services, services
from corral.coordinator.errors import Unauthorized
from corral.coordinator.service import LogLine, NodeInfo, Update

Svc = Annotated[Services, Depends(services)]


def _auth(svc: Svc, authorization: Annotated[str | None, Header()] = None) -> Services:
    if svc.agent_token:
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), svc.agent_token.encode()):
            raise Unauthorized("a worker must present the cluster token: corral worker --token ...")
    return svc


Agent = Annotated[Services, Depends(_auth)]
router = APIRouter(prefix="/v1/agent", tags=["agent"])


class RegisterBody(BaseModel):
    id: str | None = Field(None, pattern="^[0-9a-f]{32}$")
    name: str = Field(min_length=1, max_length=200)
    hostname: str = ""
    version: str = ""
    cpu: float = Field(ge=0)
    memory: int = Field(ge=0)
    disk: int = Field(0, ge=0)
    gpus: list[dict[str, Any]] = []
    labels: dict[str, str] = {}
    runtimes: list[str] = []
    queues: list[str] = ["default"]
    running: list[str] = []


class HeartbeatBody(BaseModel):
    running: list[str] = []
    usage: dict[str, Any] | None = None


class PollBody(BaseModel):
    known: list[str] = []
    wait: float = Field(20.0, ge=0, le=60)


class UpdateBody(BaseModel):
    execution_id: str
    state: str = Field(pattern="^(running|completed|failed|cancelled)$")
    ts: float
    exit_code: int | None = None
    error: str | None = None
    container_id: str | None = None
    output: str | None = Field(None, max_length=1 << 20)
    progress: float | None = Field(None, ge=0, le=100)


class LogBody(BaseModel):
    execution_id: str
    stream: str = Field(pattern="^(stdout|stderr)$")
    line: str
    ts: float


class ReportBody(BaseModel):
    updates: list[UpdateBody] = []
    logs: list[LogBody] = []


@router.post("/register")
def register(body: RegisterBody, svc: Agent) -> dict[str, Any]:
    info = NodeInfo(**body.model_dump(exclude={"running"}))
    row = svc.coord.register(info, body.running)
    s = svc.coord.settings
    return {"node_id": row["id"], "heartbeat_interval": s.heartbeat_interval, "node_ttl": s.node_ttl}


@router.post("/nodes/{node_id}/heartbeat")
def heartbeat(node_id: str, body: HeartbeatBody, svc: Agent) -> dict[str, Any]:
    return {"stop": svc.coord.heartbeat(node_id, body.running, body.usage)}


@router.post("/nodes/{node_id}/poll")
async def poll(node_id: str, body: PollBody, svc: Agent) -> dict[str, Any]:
    deadline = time.monotonic() + body.wait
    while True:
        ev = svc.wakeups.arm(node_id)
        work, stop = await asyncio.to_thread(svc.coord.poll, node_id, body.known)
        left = deadline - time.monotonic()
        if work or stop or left <= 0:
            return {"work": work, "stop": stop}
        await svc.wakeups.wait(ev, left)


@router.post("/nodes/{node_id}/report")
def report(node_id: str, body: ReportBody, svc: Agent) -> dict[str, list[str]]:
    """Apply a batch; ``log_full`` names the executions whose stored log is full (--max-log-bytes):
    the worker need not send their later output."""
    full = svc.coord.report(node_id, [Update(**u.model_dump()) for u in body.updates],
                            [LogLine(**ln.model_dump()) for ln in body.logs])
    return {"log_full": full}
