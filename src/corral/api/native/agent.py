"""/v1/agent: how workers register, heartbeat, receive work (long-poll) and report back.

Workers dial out to the coordinator; the coordinator never connects to a worker. The token is checked
before a body is read (each body dependency depends on that check, so the order of a route's
parameters cannot undo it); bodies are JSON, read through corral.api.body like every other route's (a report
batch is at most 8 MiB: corral.api.edge).
"""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Request
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from starlette.types import Scope

from corral.api.body import model_body
from corral.api.deps import Services, services
from corral.auth.identity import Role
from corral.auth.middleware import identity_of
from corral.coordinator.errors import Forbidden, Unauthorized
from corral.coordinator.nodes import JOIN_TOKEN_PREFIX
from corral.domain.agentwire import NODE_SECRET_HEADER, LogLine, NodeInfo, Update
from corral.domain.spec import QueueName, lone_surrogate

Svc = Annotated[Services, Depends(services)]
ID_PATTERN = "^[0-9a-f]{32}$"


def _bearer(authorization: str | None) -> str:
    return (authorization or "").removeprefix("Bearer ").strip()


def caller_ok(scope: Scope, svc: Services, authorization: str | None) -> None:
    """A caller with the worker role (a worker's API key), the cluster token (when the server has one), or a
    join token: that one is checked by what follows (its validity at registration; on a node's calls, the
    node's own secret is the credential). No I/O."""
    ident = identity_of(scope)
    if ident.role == Role.WORKER:  # a worker's key: the cluster token's stand-in (not an admin's key or the
        return                     # local access token: workers are a role of their own)
    given = _bearer(authorization)
    if svc.agent_token and hmac.compare_digest(given.encode(), svc.agent_token.encode()):
        return
    if given.startswith(JOIN_TOKEN_PREFIX):
        return
    if svc.agent_token:
        raise Unauthorized("a worker must present the cluster token or a join token: corral worker --token ...")


async def _auth(request: Request, svc: Svc, authorization: Annotated[str | None, Header()] = None) -> Services:
    """``caller_ok`` as a dependency (async: no thread hop; it reads nothing)."""
    caller_ok(request.scope, svc, authorization)
    return svc


Agent = Annotated[Services, Depends(_auth)]
NodeId = Annotated[str, Path(pattern=ID_PATTERN, description="The node's id (32 hex digits)")]
Secret = Annotated[str | None, Header(max_length=200, alias=NODE_SECRET_HEADER)]


def _register_guard(svc: Agent, secret: Secret = None,
                    authorization: Annotated[str | None, Header()] = None) -> str | None:
    """Who may register: a caller with the cluster token, or with a join token that is neither revoked nor
    expired; with a join token no longer valid, only a node coming back (its own secret): the answer is
    then the one node id it may register as (None: any)."""
    given = _bearer(authorization)
    if not given.startswith(JOIN_TOKEN_PREFIX) or (
            svc.agent_token and hmac.compare_digest(given.encode(), svc.agent_token.encode())):
        return None
    if svc.coord.nodes.join_token_ok(given):
        return None
    owner = svc.coord.nodes.secret_owner(secret) if secret else None
    if owner is None:
        raise Unauthorized("this join token is unknown, revoked or expired: an admin makes another with "
                           "corral tokens create --worker")
    return owner


async def check_node(svc: Services, node_id: str, secret: str | None, authorization: str | None) -> None:
    """Every call about a node must come from that node: it presents the secret it was given. A worker
    that joined with a join token has no other credential: without a secret of any node, it is unknown
    (401); with another node's, it is refused (403). The secret's hash is cached once the node is known,
    so this usually reads nothing (the store is read in a worker thread when it must be)."""
    nodes = svc.coord.nodes
    try:
        if not nodes.authenticate_cached(node_id, secret):
            await asyncio.to_thread(nodes.authenticate, node_id, secret)
    except Forbidden:
        if not _bearer(authorization).startswith(JOIN_TOKEN_PREFIX) or (
                secret and await asyncio.to_thread(nodes.secret_owner, secret)):
            raise
        raise Unauthorized(f"no node has this credential ({NODE_SECRET_HEADER}): register again") from None


async def node_guard(node_id: NodeId, svc: Agent, secret: Secret = None,
                     authorization: Annotated[str | None, Header()] = None) -> Services:
    """``check_node`` as a dependency, after the caller's check (``_auth``); async: no thread hop."""
    await check_node(svc, node_id, secret, authorization)
    return svc


NodeAgent = Annotated[Services, Depends(node_guard)]
router = APIRouter(prefix="/v1/agent", tags=["agent"])
POLL_CHECK = 1.0  # seconds between checks, during a long-poll, that the worker is still connected


# -- what agents send: strict types, bounded sizes -------------------------------------------------
def _unicode(v: str) -> str:
    if lone_surrogate(v):
        raise ValueError("not valid Unicode text (a lone surrogate)")
    return v


_U = AfterValidator(_unicode)
NodeName = Annotated[str, StringConstraints(min_length=1, max_length=200), _U]
Text50 = Annotated[str, StringConstraints(max_length=50), _U]
Text200 = Annotated[str, StringConstraints(max_length=200), _U]
Text255 = Annotated[str, StringConstraints(max_length=255), _U]
RuntimeName = Annotated[str, StringConstraints(min_length=1, max_length=32), _U]
ContainerId = Annotated[str, StringConstraints(max_length=128), _U]
ErrorText = Annotated[str, StringConstraints(max_length=1 << 16), _U]
LongText = Annotated[str, StringConstraints(max_length=1 << 20), _U]  # an output, a log line


MAX_LABELS, MAX_LABEL_KEY, MAX_LABEL_VALUE = 64, 128, 256


def _labels(v: dict[str, Any]) -> dict[str, str]:
    # Checked as a whole, so that an error names the field and never echoes a bad key.
    if len(v) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} labels")
    for k, val in v.items():
        if not isinstance(val, str):
            raise ValueError("label values must be strings")
        if not 1 <= len(k) <= MAX_LABEL_KEY or len(val) > MAX_LABEL_VALUE:
            raise ValueError(f"a label key is 1-{MAX_LABEL_KEY} characters, a value at most {MAX_LABEL_VALUE}")
        _unicode(k)
        _unicode(val)
    return v


Labels = Annotated[dict[str, Any], AfterValidator(_labels), WithJsonSchema({
    "type": "object", "maxProperties": MAX_LABELS, "propertyNames": {"minLength": 1, "maxLength": MAX_LABEL_KEY},
    "additionalProperties": {"type": "string", "maxLength": MAX_LABEL_VALUE}})]
# An IP address or a host name: what a client puts before ':port' to reach a pod.
Address = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9.:\-\[\]]+$")]
ExecutionId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
MAX_EXECUTIONS = 100_000  # executions a node may name in one call (running, known, updates)
MAX_LOG_LINES = 200_000  # lines in one report (the agent buffers at most this many)


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False)


def _whole(v: Any) -> Any:
    """A whole number written with a fraction of zero (``655.0``) is that integer, as JSON Schema's "integer"
    counts it (the document says integer); anything else is left to the strict check."""
    return int(v) if type(v) is float and v.is_integer() else v


Whole = Annotated[int, BeforeValidator(_whole)]


class GpuBody(Strict):
    index: Whole = Field(ge=0, le=4095)
    name: Text200 = ""
    memory: Whole = Field(0, ge=0, le=1 << 50)
    uuid: Text200 = ""


class RegisterBody(Strict):
    id: str | None = Field(None, pattern=ID_PATTERN)
    name: NodeName
    hostname: Text255 = ""
    version: Text50 = ""
    cpu: float = Field(ge=0, le=100_000)
    memory: Whole = Field(ge=0, le=1 << 60)
    disk: Whole = Field(0, ge=0, le=1 << 60)
    gpus: list[GpuBody] = Field([], max_length=256, json_schema_extra={"maxItems": 1},
                                description="Up to 256, each index once; the schema says one (the nearest stricter: "
                                            "JSON Schema cannot say that a field is unique among several).")
    labels: Labels = {}
    runtimes: list[RuntimeName] = Field([], max_length=8)
    queues: list[QueueName] = Field(["default"], max_length=64)
    running: list[ExecutionId] = Field([], max_length=MAX_EXECUTIONS)
    address: Address | None = None  # where the node's pods are reached (corral worker --advertise-address)

    @model_validator(mode="after")
    def _distinct_gpus(self) -> RegisterBody:
        if len({g.index for g in self.gpus}) != len(self.gpus):
            raise ValueError("two GPUs with the same index")
        return self


class Usage(Strict):
    """A node's last measured load (more fields are ignored)."""

    cpu_percent: float = Field(0.0, ge=0, le=409_600, json_schema_extra={"maximum": 100},
                               description="0 to 100 per core of the node; the schema says 100 (the nearest "
                                           "stricter: a node has one core at least)")
    memory_percent: float = Field(0.0, ge=0, le=100)


class HeartbeatBody(Strict):
    running: list[ExecutionId] = Field([], max_length=MAX_EXECUTIONS)
    usage: Usage | None = None


class PollBody(Strict):
    known: list[ExecutionId] = Field([], max_length=MAX_EXECUTIONS)
    wait: float = Field(20.0, ge=0, le=60)


class DrainBody(Strict):
    running: list[ExecutionId] = Field([], max_length=MAX_EXECUTIONS)


class UpdateBody(Strict):
    execution_id: ExecutionId
    state: str = Field(pattern="^(running|completed|failed|cancelled)$")
    ts: float = Field(ge=0)
    exit_code: Whole | None = Field(None, ge=-(1 << 31), lt=1 << 32)
    error: ErrorText | None = None
    container_id: ContainerId | None = None
    output: LongText | None = None
    progress: float | None = Field(None, ge=0, le=100)


class LogBody(Strict):
    execution_id: ExecutionId
    stream: str = Field(pattern="^(stdout|stderr)$")
    line: LongText
    ts: float = Field(ge=0)


class ReportBody(Strict):
    updates: list[UpdateBody] = Field([], max_length=MAX_EXECUTIONS)
    logs: list[LogBody] = Field([], max_length=MAX_LOG_LINES)


# Each body depends on the check of its caller (the cluster token; for a node's calls, its secret too):
# nothing is read or parsed for a caller that is refused, whatever the order of a route's parameters.
RegisterIn = Annotated[RegisterBody, Depends(model_body(RegisterBody, guard=_register_guard))]
HeartbeatIn = Annotated[HeartbeatBody, Depends(model_body(HeartbeatBody, guard=node_guard))]
PollIn = Annotated[PollBody, Depends(model_body(PollBody, guard=node_guard))]
ReportIn = Annotated[ReportBody, Depends(model_body(ReportBody, guard=node_guard))]
DrainIn = Annotated[DrainBody, Depends(model_body(DrainBody, guard=node_guard))]


# -- routes ------------------------------------------------------------------------------------------
@router.post("/register")
def register(body: RegisterIn, svc: Agent, only: Annotated[str | None, Depends(_register_guard)],
             x_corral_node_secret: Secret = None) -> dict[str, Any]:
    """Register a new node (no id: the answer holds its id and, once, its secret) or bring back one that
    restarted (its id and its secret in X-Corral-Node-Secret; without the secret: 403). With a join token
    (corral tokens create --worker) instead of the cluster token: a revoked or expired one only lets a node
    that joined before come back as itself (401 otherwise)."""
    if only is not None and body.id != only:
        raise Unauthorized("this join token is unknown, revoked or expired: an admin makes another with "
                           "corral tokens create --worker")
    info = NodeInfo(**{**body.model_dump(exclude={"running", "gpus"}), "gpus": [g.model_dump() for g in body.gpus]})
    row = svc.coord.register(info, body.running, secret=x_corral_node_secret)
    s = svc.coord.settings
    out = {"node_id": row["id"], "heartbeat_interval": s.heartbeat_interval, "node_ttl": s.node_ttl,
           "kept": row.get("kept") or {}}
    if row.get("node_secret"):
        out["node_secret"] = row["node_secret"]
    return out


@router.post("/nodes/{node_id}/heartbeat")
async def heartbeat(node_id: NodeId, body: HeartbeatIn, svc: NodeAgent) -> dict[str, Any]:
    usage = body.usage.model_dump() if body.usage is not None else None
    return {"stop": await svc.coord.nodes.heartbeat_async(node_id, body.running, usage)}


@router.post("/nodes/{node_id}/poll")
async def poll(node_id: NodeId, body: PollIn, svc: NodeAgent, request: Request) -> dict[str, Any]:
    """Work for this node, waiting up to ``wait`` seconds for some, or until the node is woken for another
    reason (its pods changed: it answers then with no work, and the worker syncs its pods). A worker that
    has gone (its connection closed) is noticed within a second, so its poll does not hold the server's
    shutdown."""
    deadline = time.monotonic() + body.wait
    woken = False
    while True:
        ev = svc.wakeups.arm(node_id)
        work, stop = await asyncio.to_thread(svc.coord.poll, node_id, body.known)
        left = deadline - time.monotonic()
        # Woken with no work: something else changed for the node (its pods): the worker asks at once.
        if work or stop or left <= 0 or woken:
            return {"work": work, "stop": stop}
        woken = True
        while not ev.is_set() and (left := deadline - time.monotonic()) > 0:
            await svc.wakeups.wait(ev, min(left, POLL_CHECK))
            if await request.is_disconnected():
                return {"work": [], "stop": []}


@router.post("/nodes/{node_id}/report")
def report(node_id: NodeId, body: ReportIn, svc: NodeAgent) -> dict[str, list[str]]:
    """Updates and output lines about executions assigned to this node; anything about an execution that
    is not (another node's, or unknown) is ignored, and lines for an execution that has ended are not
    appended. ``log_full`` names the executions whose stored log is full (--max-log-bytes): the worker
    need not send their later output."""
    full = svc.coord.report(node_id, [Update(**u.model_dump()) for u in body.updates],
                            [LogLine(**ln.model_dump()) for ln in body.logs])
    return {"log_full": full}


@router.post("/nodes/{node_id}/drain")
def drain(node_id: NodeId, body: DrainIn, svc: NodeAgent) -> dict[str, Any]:
    """The node is shutting down: no new work for it; what it was given and has not started (not in
    ``running``) is handed back at once, and listed so that it does not start it."""
    return {"handed_back": svc.coord.drain(node_id, body.running)}


@router.post("/nodes/{node_id}/leave")
def leave(node_id: NodeId, svc: NodeAgent) -> dict[str, Any]:
    """The node stops: it is down at once, and what still runs on it is handed back to be placed again."""
    return {"handed_back": svc.coord.leave(node_id)}
