"""What nomad-lite's two APIs share: its REST dashboard API (dialects/nomadlite.py) and its gRPC
SchedulerService (api/grpcapi/). Ids, statuses, worker numbers, the command's checks, a job's fields,
ListJobs' filters and paging, and the coordinators as nomad-lite's cluster. No HTTP and no gRPC here:
errors are ``DialectError`` with an HTTP status, which each API answers in its own shape.
"""

from __future__ import annotations

import os
import shlex
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from corral.api.dialects.base import DialectError
from corral.coordinator.errors import Conflict, NotFound
from corral.domain import workflow
from corral.domain.nodes import safe_node
from corral.domain.spec import JobSpec, TaskSpec
from corral.store.sql import COUNT_CAP, Row, Tx, decode_cursor, encode_cursor

if TYPE_CHECKING:
    from corral.coordinator.leadership import ClusterState
    from corral.coordinator.service import Coordinator

MAX_COMMAND_BYTES = 1024
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# Bounds on ListJobs' filters (REST query parameters and gRPC fields alike): a longer value is a 400
# (INVALID_ARGUMENT) naming it. The command filter is at most as long as a command nomad-lite accepts.
MAX_STATUS = 64  # 'JOB_STATUS_COMPLETED' and the like
MAX_WORKER = 200  # a worker number, a Corral node id or a node's name (at most 200 characters)
MAX_TOKEN = 200  # a page token this server handed out is far shorter
MAX_MS = 10**15  # created_after_ms, created_before_ms: milliseconds since 1970, about the year 33,700
LEADER_ID = 1  # this coordinator, in the cluster it reports
OUTPUT_LINES = 1000  # the last lines of output shown per job
OUTPUT_BYTES = 256 * 1024  # and at most about this much text of them
# Corral's job states as nomad-lite's: a job placed on a worker but not started yet is still pending.
STATUS = {"pending": "pending", "scheduled": "pending", "running": "running", "completed": "completed",
          "failed": "failed", "cancelled": "cancelled"}
STATUS_FILTER = {"pending": ["pending", "scheduled"], "running": ["running"], "completed": ["completed"],
                 "failed": ["failed"], "cancelled": ["cancelled"]}


# -- translation ----------------------------------------------------------------------------------
def job_uuid(job_id: str) -> str:
    return str(uuid.UUID(hex=job_id))


def parse_job_id(value: str) -> str:
    """A job id as a UUID (with or without dashes) -> Corral's 32 hex characters."""
    try:
        return uuid.UUID(value.strip()).hex
    except ValueError as e:
        raise DialectError(400, f"malformed job id '{value}': expected a UUID") from e


def worker_number(node_id: str | None) -> int | None:
    """A worker as nomad-lite's numeric node id: the first 52 bits of its Corral node id (safe in
    JavaScript numbers, and stable for the life of the worker)."""
    return int(node_id[:13], 16) if node_id else None


def command_of(task: Row | None) -> str:
    spec = task["spec"] if task else {}
    if spec.get("run") is not None:
        return str(spec["run"])
    return shlex.join(spec.get("command") or spec.get("entrypoint") or [])


def job_spec(command: object, image: object) -> JobSpec:
    """A nomad-lite submission as a Corral job, checked as nomad-lite checks it."""
    if command is None:
        raise DialectError(400, "command is required")
    if not isinstance(command, str):
        raise DialectError(400, "command must be a string")
    if not command.strip():
        raise DialectError(400, "command is empty")
    size = len(command.encode())
    if size > MAX_COMMAND_BYTES:
        raise DialectError(400, f"command is {size} bytes; at most {MAX_COMMAND_BYTES} are accepted")
    if image is not None and not isinstance(image, str):
        raise DialectError(400, "image must be a string")
    image = (image or "").strip() or os.environ.get("CORRAL_NOMADLITE_IMAGE", "").strip() or None
    try:
        return JobSpec(name="nomad-lite", tags=["nomad-lite"], tasks=[TaskSpec(name="main", run=command, image=image)])
    except ValidationError as e:
        err = e.errors()[0]
        raise DialectError(400, f"{'.'.join(str(x) for x in err['loc']) or 'job'}: {err['msg']}") from e


def cancel_job(coord: Coordinator, job_id: str) -> None:
    """Cancel a pending or running job: 404 for an unknown one, 400 (code ``terminal``) for one that ended."""
    try:
        coord.cancel(job_id)
    except NotFound as e:
        raise DialectError(404, f"job {job_uuid(job_id)} not found") from e
    except Conflict as e:
        with coord.store.read() as tx:
            row = tx.job(job_id)
        state = STATUS.get(row["state"], row["state"]) if row else "gone"
        raise DialectError(400, f"job is already {state}", code="terminal") from e


# -- a job's fields -------------------------------------------------------------------------------
@dataclass
class JobFacts:
    """One job as nomad-lite sees it; each API writes these fields in its own shape."""

    job_id: str  # as a UUID
    command: str
    status: str  # pending | running | completed | failed | cancelled
    worker: int | None  # the worker it was placed on (its latest attempt), as a number
    output: str | None
    error: str | None
    exit_code: int | None
    created_at: float
    completed_at: float | None
    image: str | None


def job_facts(job: Row, tasks: list[Row], lines: list[Row]) -> JobFacts:
    node = next((t["node_id"] for t in reversed(tasks) if t["node_id"]), None)
    finished = job["finished_at"] is not None
    out = "".join(r["line"] + "\n" for r in lines if r["stream"] == "stdout")
    err = "".join(r["line"] + "\n" for r in lines if r["stream"] == "stderr")
    facts = {
        "job_id": job_uuid(job["id"]), "command": command_of(tasks[0] if tasks else None),
        "status": STATUS.get(job["state"], job["state"]), "worker": worker_number(node),
        "output": out if out or finished else None, "error": err or job["error"] or None,
        "exit_code": tasks[0]["exit_code"] if tasks else None,
        "created_at": job["created_at"], "completed_at": job["finished_at"],
        "image": (tasks[0]["spec"].get("image") if tasks else None),
    }
    # the one redaction every view of every API applies
    return JobFacts(**workflow.shown(facts, workflow.secrets_in(job.get("spec") or {})))


def jobs_facts(tx: Tx, jobs: list[Row], output: bool = True) -> list[JobFacts]:
    by_job: dict[str, list[Row]] = {}
    for t in tx.tasks_of_jobs(j["id"] for j in jobs):
        by_job.setdefault(t["job_id"], []).append(t)
    tails = tx.tail_logs_of_jobs((j["id"] for j in jobs), OUTPUT_LINES, OUTPUT_BYTES) if output else {}
    return [job_facts(j, by_job.get(j["id"], []), tails.get(j["id"], [])) for j in jobs]


# -- ListJobs -------------------------------------------------------------------------------------
@dataclass
class JobFilter:
    """ListJobs' filters and paging, as given (each API reads them from its own request)."""

    status: str = ""  # a status name (case-insensitive, JOB_STATUS_ prefix allowed); "" = any
    worker: str = ""  # a worker number, Corral node id or name; "" or "0" = any
    command: str = ""
    created_after_ms: int = 0
    created_before_ms: int = 0
    page_size: int | None = None
    page_token: str = ""


def _ms(name: str, value: int, upper: bool = False) -> float | None:
    """A bound in milliseconds as seconds; an upper bound takes in its whole millisecond (a job created at
    1000.4 ms is created at 1000 ms, as its ``created_at_ms`` says)."""
    if value < 0:
        raise DialectError(400, f"{name} cannot be negative")
    if value > MAX_MS:
        raise DialectError(400, f"{name} is at most {MAX_MS}")
    if not value:
        return None
    return (value + 1) / 1000.0 - 1e-9 if upper else value / 1000.0


def _worker_prefix(tx: Tx, worker_id: str) -> str | None:
    """The worker filter as a node-id prefix: nomad-lite's number, a Corral node id, or a node's name."""
    w = worker_id.strip()
    if w.isascii() and w.isdigit():  # str.isdigit takes '²' too, which int() does not
        return None if int(w) == 0 else format(int(w), "013x")
    if len(w) == 32 and all(c in "0123456789abcdef" for c in w):
        return w
    node = next((n for n in tx.nodes() if n["name"] == w), None)
    return node["id"] if node else "not-a-node"


def find_jobs(tx: Tx, f: JobFilter) -> tuple[list[Row], int, str]:
    """One page of jobs, newest first: (rows, how many match in all, the next page's token or "")."""
    for name, value, most in (("status", f.status, MAX_STATUS), ("worker_id", f.worker, MAX_WORKER),
                              ("command", f.command, MAX_COMMAND_BYTES), ("page_token", f.page_token, MAX_TOKEN)):
        if len(value) > most:
            raise DialectError(400, f"{name} is at most {most} characters")
    states = None
    if f.status:
        key = f.status.strip().lower().removeprefix("job_status_")
        if key not in STATUS_FILTER and key != "unspecified":
            raise DialectError(400, f"unknown status '{f.status}': one of " + ", ".join(STATUS_FILTER))
        states = STATUS_FILTER.get(key)
    if f.page_size is not None and f.page_size < 0:
        raise DialectError(400, "page_size cannot be negative")
    size = min(f.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    try:
        before = decode_cursor(f.page_token) if f.page_token else None
    except ValueError as e:
        raise DialectError(400, "page_token is not one this server handed out") from e
    after = _ms("created_after_ms", f.created_after_ms)
    until = _ms("created_before_ms", f.created_before_ms, upper=True)
    prefix = _worker_prefix(tx, f.worker) if f.worker else None
    rows, total = tx.find_jobs(states=states, node_prefix=prefix, command=f.command or None,
                               created_from=after, created_to=until, before_seq=before, limit=size + 1)
    more = len(rows) > size
    rows = rows[:size]
    return rows, min(total, COUNT_CAP), encode_cursor(rows[-1]["seq"]) if more else ""


# -- the cluster ----------------------------------------------------------------------------------
def state_numbers(state: ClusterState) -> tuple[int, int | None]:
    """The answering coordinator's number and the leader's (None while no lease is held)."""
    numbers = {m.id: m.node_no for m in state.members}
    return numbers.get(state.me, LEADER_ID), numbers.get(state.leader_id) if state.leader_id else None


def cluster_members(tx: Tx, state: ClusterState) -> list[dict[str, Any]]:
    """The coordinators (their small stable numbers), then every worker by its number."""
    members: list[dict[str, Any]] = [
        {"node_id": m.node_no, "address": m.address.split("://", 1)[-1].rstrip("/"), "is_alive": m.alive,
         "role": "coordinator", "name": m.id} for m in state.members]
    members += [{"node_id": worker_number(n["id"]), "address": n["hostname"], "is_alive": n["state"] == "ready",
                 "role": "worker", "name": n["name"]} for n in map(safe_node, tx.nodes())]
    return members


# -- the log of committed state changes -----------------------------------------------------------
@dataclass(frozen=True)
class Change:
    """One committed state change, as nomad-lite's Raft log would hold it. ``kind``: ``submit`` (a job
    accepted), ``assign`` (an attempt placed on a worker), ``status`` (an attempt or a job reached
    ``status``) or ``cancel`` (a job cancelled)."""

    ts: float
    kind: str
    job_id: str  # as a UUID
    worker: int | None = None
    status: str = ""
    exit_code: int | None = None


_ORDER = {"submit": 0, "assign": 1, "status": 2, "cancel": 3}


def state_changes(jobs: list[Row], execs: list[Row]) -> list[Change]:
    """The changes ``Tx.state_change_rows`` holds, oldest first: one per job submitted and per job ended,
    one per attempt placed, started and ended (as ``Tx.state_change_count`` counts them)."""
    out: list[Change] = []
    for j in jobs:
        jid = job_uuid(j["id"])
        out.append(Change(j["created_at"], "submit", jid))
        if j["finished_at"] is not None:
            state = str(STATUS.get(j["state"], j["state"]))
            out.append(Change(j["finished_at"], "cancel" if state == "cancelled" else "status", jid, status=state))
    for e in execs:
        jid, worker = job_uuid(e["job_id"]), worker_number(e["node_id"])
        out.append(Change(e["scheduled_at"], "assign", jid, worker))
        if e["started_at"] is not None:
            out.append(Change(e["started_at"], "status", jid, worker, "running"))
        if e["finished_at"] is not None:
            state = "failed" if e["state"] == "lost" else str(STATUS.get(e["state"], e["state"]))
            out.append(Change(e["finished_at"], "status", jid, worker, state, e["exit_code"]))
    out.sort(key=lambda c: (c.ts, _ORDER[c.kind]))
    return out
