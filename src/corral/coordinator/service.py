"""The coordinator's services. Each public method is one transaction over the store.

Nothing here speaks HTTP: the API routers, the in-process agent transport and the background loops all
call these methods. Every state change is a compare-and-set through the store, so a late or duplicate
report (a completion after a cancel, a stale heartbeat) never changes a finished task.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets as secrets_mod
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from corral.coordinator import flow
from corral.coordinator.errors import Conflict, Forbidden, Invalid, NotFound, Overloaded
from corral.coordinator.flow import DONE_TASK, Flow, dag_ready
from corral.coordinator.idempotency import HEADER as IDEM_HEADER
from corral.coordinator.idempotency import TTL as IDEM_TTL
from corral.coordinator.idempotency import IdemKey, fingerprint
from corral.coordinator.policy import Policy, PolicyError
from corral.domain import workflow
from corral.domain.resources import Resources, parse_duration
from corral.domain.spec import JobSpec, TaskSpec, argv_of, dump_spec
from corral.domain.states import (
    TERMINAL_JOB_STATES,
    JobState,
    job_sources,
)
from corral.scheduler import NodeView, TaskView, plan
from corral.scheduler.placement import Strategy
from corral.store.sql import ACTIVE, LIVE_NODE, DuplicateKey, Row, Store, Tx

log = logging.getLogger("corral.coordinator")
MAX_LOST_RESCHEDULES = 3
NODE_SECRET_HEADER = "X-Corral-Node-Secret"
TERMINAL_JOB = [s.value for s in TERMINAL_JOB_STATES]


new_id = flow.new_id


def secret_hash(secret: str) -> str:
    """What the store keeps of a node secret: its sha256, hex (the secret itself is never stored)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _secret_ok(given: str | None, stored: str | None) -> bool:
    return bool(given) and bool(stored) and hmac.compare_digest(secret_hash(given or ""), stored or "")


@dataclass
class Settings:
    strategy: Strategy = "spread"
    heartbeat_interval: float = 3.0
    node_ttl: float = 15.0  # a node that misses heartbeats this long is down
    schedule_batch: int = 64  # tasks read per step of a pass; more while all fit
    max_pending_tasks: int = 100_000  # backpressure: submissions beyond this are refused (503)
    max_tasks_per_job: int = flow.MAX_TASKS_PER_JOB  # task rows of one job across all levels (subjobs too)
    policy: Policy = field(default_factory=Policy)  # what jobs may reach on the host (bind mounts, volumes, ...)
    max_log_bytes: int = 10_000_000  # output stored per attempt of a task; past it, a marker and no more
    node_port_range: tuple[int, int] = (30000, 32767)  # node ports given to pods' published ports


@dataclass
class NodeInfo:
    """What a worker tells about itself when it registers."""

    name: str
    hostname: str
    version: str
    cpu: float
    memory: int
    disk: int
    gpus: list[dict[str, Any]] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    runtimes: list[str] = field(default_factory=list)
    queues: list[str] = field(default_factory=lambda: ["default"])
    id: str | None = None
    address: str | None = None  # where its pods are reached (corral worker --advertise-address)


@dataclass
class Update:
    """One report from an agent about one execution."""

    execution_id: str
    state: str  # running | completed | failed | cancelled
    ts: float
    exit_code: int | None = None
    error: str | None = None
    container_id: str | None = None
    output: str | None = None  # what the task wrote to $CORRAL_OUTPUT / $TORK_OUTPUT (with its end)
    progress: float | None = None  # 0-100, from $CORRAL_PROGRESS / $TORK_PROGRESS (while it runs)


@dataclass
class LogLine:
    execution_id: str
    stream: str
    line: str
    ts: float


@dataclass
class _Changes:
    """What one report batch changes, gathered so that it is written in bulk."""

    started: list[Row] = field(default_factory=list)  # executions scheduled -> running
    tasks_started: list[Row] = field(default_factory=list)
    execs: list[Row] = field(default_factory=list)  # executions that ended
    tasks: list[Row] = field(default_factory=list)  # tasks that ended
    retries: list[Row] = field(default_factory=list)  # tasks back to pending for another attempt
    done: list[Row] = field(default_factory=list)  # completed tasks: what waited for them may start
    failures: list[tuple[Row, str, str]] = field(default_factory=list)  # (task, state, error): ended for good
    jobs_started: dict[str, float] = field(default_factory=dict)

    def start(self, ex: Row, task: Row | None, u: Update) -> None:
        self.started.append({"id": ex["id"], "state": "running", "started_at": u.ts,
                             "container_id": u.container_id})
        if task is not None and task["execution_id"] == ex["id"] and task["state"] == "scheduled":
            self.tasks_started.append({"id": task["id"], "_exec": ex["id"], "state": "running",
                                       "started_at": u.ts})
            self.jobs_started[task["job_id"]] = u.ts


def truncation_marker(cap: int) -> str:
    return (f"[corral: log truncated: this task's output passed the stored log limit of {cap} bytes "
            "(--max-log-bytes); the rest of it was dropped]")


def cap_logs(logs: Sequence[LogLine], stored: dict[str, int], cap: int
             ) -> tuple[list[LogLine], dict[str, int]]:
    """The lines of a batch to store, given the bytes each execution has stored (``stored``; lines of
    an execution not in it are dropped), and the executions' new sizes. An execution that goes past
    ``cap`` gets one truncation marker instead of the line that would pass it, and its size is then
    left above the cap, so that it gets no more lines and no second marker."""
    kept: list[LogLine] = []
    sizes: dict[str, int] = {}
    for ln in logs:
        size = sizes.get(ln.execution_id)
        if size is None:
            if ln.execution_id not in stored:
                continue
            size = stored[ln.execution_id]
        if size > cap:
            continue
        n = len(ln.line.encode("utf-8", "replace")) + 1
        if size + n > cap:
            kept.append(LogLine(ln.execution_id, "stderr", truncation_marker(cap), ln.ts))
            sizes[ln.execution_id] = cap + 1
        else:
            kept.append(ln)
            sizes[ln.execution_id] = size + n
    return kept, sizes


job_rows = flow.job_rows  # the rows of a new job and its tasks (used by the schedules too)


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{what} is not a list")
    return value


def _strings(value: Any, what: str) -> list[str]:
    items = _list(value, what)
    if not all(isinstance(x, str) for x in items):
        raise ValueError(f"{what} holds something other than strings")
    return items


def _gpu_index(g: Any) -> int:
    index = g.get("index") if isinstance(g, dict) else None
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise ValueError("a GPU without an integer index")
    return index


class Coordinator:
    def __init__(self, store: Store, settings: Settings | None = None) -> None:
        self.store = store
        self.settings = settings or Settings()
        self.started_at = time.time()
        self._kick = threading.Event()
        # Called with the ids of nodes that have new work or cancels waiting (wakes their long-polls).
        self.on_nodes_changed: Callable[[set[str]], None] = lambda ids: None
        self.pending_tasks = 0  # refreshed from the store every second; raised by each submission
        self._purged_at = 0.0  # when expired idempotency keys were last deleted
        self.flow = Flow(self.settings.policy, self.settings.max_tasks_per_job)
        # Secret values by job, so that output lines are redacted before they are stored (bounded).
        self._secrets: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self.stats = {"jobs_submitted": 0, "tasks_completed": 0, "tasks_failed": 0, "tasks_lost": 0,
                      "tasks_retried": 0, "schedule_passes": 0, "tasks_handed_back": 0,
                      "agent_reports_ignored": 0, "schedule_rows_skipped": 0}
        # Node id -> sha256 of its secret. A node's secret never changes once given, so this is only a
        # cache of the store (bounded), saving a read on every heartbeat, poll and report.
        self._node_secrets: OrderedDict[str, str] = OrderedDict()
        self._bad_rows_logged: set[str] = set()  # rows a scheduling pass skipped, logged once each
        from corral.coordinator.pods import Pods  # pods build on this module: imported here, not above
        self.pods = Pods(self)

    # -- jobs ---------------------------------------------------------------------------------
    def submit(self, spec: JobSpec, idem: IdemKey | None = None) -> Row:
        return self.submit_many([spec], idem)[0]

    def submit_many(self, specs: Sequence[JobSpec], idem: IdemKey | None = None) -> list[Row]:
        """Create the jobs in one transaction. With an idempotency key, a submission that was already made
        with it (on the same route, within its TTL) returns the jobs it created instead."""
        now = time.time()
        mark = fingerprint([dump_spec(s) for s in specs]) if idem is not None else ""
        if idem is not None and (done := self.replay(idem, mark, now)) is not None:
            return self._jobs_of(done, idem)
        adding = self.admit(*specs)
        items = [job_rows(spec, now) for spec in specs]
        earlier = self.insert_once(idem, mark, {"jobs": [job["id"] for job, _ in items]}, now,
                                   lambda tx: tx.insert_jobs(items))
        if earlier is not None:
            assert idem is not None
            return self._jobs_of(earlier, idem)
        self.stats["jobs_submitted"] += len(items)
        self.pending_tasks += adding
        self.kick()
        return [job for job, _ in items]

    def admit(self, *specs: JobSpec) -> int:
        """The one validation every way a job enters goes through before it is created (submitted now,
        a schedule created, a schedule's tick fired): its size (``check_size``), the operator's policy
        (``check_policy``), both ``Invalid``, and back-pressure (``Overloaded``). Returns the task rows the
        jobs add."""
        adding = sum(self.check_size(spec) for spec in specs)
        limit = self.settings.max_pending_tasks
        if self.pending_tasks + adding > limit:
            # Backpressure: refuse before accepting what cannot be held, rather than after.
            raise Overloaded(f"{self.pending_tasks} tasks are waiting, and this server holds at most {limit}: "
                             "try again shortly")
        for spec in specs:
            self.check_policy(spec)
        return adding

    def check_size(self, spec: JobSpec) -> int:
        """The task rows the job will hold, as far as that is known now (see ``workflow.rows_of_job``);
        a job over the limit is refused. Parts known only when they open are checked then."""
        n = workflow.rows_of_job(spec)
        if n > self.settings.max_tasks_per_job:
            raise Invalid(f"the job has {n:,} tasks across its levels (parallel, each, pre/post, subjobs); a job "
                          f"holds at most {self.settings.max_tasks_per_job:,} (corral server --max-tasks-per-job)")
        return n

    # -- idempotency keys (see idempotency.py) --------------------------------------------------
    def replay(self, idem: IdemKey, mark: str, now: float) -> dict[str, Any] | None:
        """What an earlier submission with this key created, or None if there was none; Conflict if it
        was made with a different request."""
        with self.store.read() as tx:
            row = tx.idempotency(idem.scope, idem.key, now - IDEM_TTL)
        if row is None:
            return None
        if row["fingerprint"] != mark:
            raise Conflict(f"{IDEM_HEADER} '{idem.key}' was used for a different request on this route; "
                           "a new request needs a new key")
        return dict(row["result"])

    def insert_once(self, idem: IdemKey | None, mark: str, result: dict[str, Any], now: float,
                    insert: Callable[[Tx], None]) -> dict[str, Any] | None:
        """Run ``insert`` in one transaction that also records the idempotency key (if any) with ``result``.
        None when this call wrote; the earlier request's result when a concurrent one with the same key won
        (the key is written first, so the loser waits on it and then fails on its unique constraint)."""
        try:
            with self.store.transaction() as tx:
                if idem is not None:
                    self.record_key(tx, idem, mark, result, now)
                insert(tx)
        except DuplicateKey:
            if idem is None:
                raise
            done = self.replay(idem, mark, now)
            if done is None:
                raise Conflict(f"a request with this {IDEM_HEADER} is being handled; try again") from None
            return done
        return None

    def record_key(self, tx: Tx, idem: IdemKey, mark: str, result: dict[str, Any], now: float) -> None:
        tx.insert_idempotency({"scope": idem.scope, "key": idem.key, "fingerprint": mark, "result": result,
                               "created_at": now}, now - IDEM_TTL)
        if now - self._purged_at > 60:  # expired keys go, once a minute at most
            self._purged_at = now
            tx.purge_idempotency(now - IDEM_TTL)

    def _jobs_of(self, done: dict[str, Any], idem: IdemKey) -> list[Row]:
        ids = list(done.get("jobs") or [])
        with self.store.read() as tx:
            rows = {j["id"]: j for j in tx.jobs_by_ids(ids)}
        if not ids or any(i not in rows for i in ids):
            raise Conflict(f"{IDEM_HEADER} '{idem.key}' was used for a job that is gone; a new request needs a "
                           "new key")
        return [rows[i] for i in ids]

    def check_policy(self, spec: JobSpec) -> None:
        """The operator's policy (bind mounts, ...) for a job about to be created: see policy.py."""
        try:
            self.settings.policy.check(spec)
        except PolicyError as e:
            raise Invalid(str(e)) from None

    def get_job(self, job_id: str) -> tuple[Row, list[Row], list[Row]]:
        with self.store.read() as tx:
            job = tx.job(job_id)
            if job is None:
                raise NotFound(f"no job with id '{job_id}'")
            return job, tx.tasks_of(job_id), tx.executions_of_job(job_id)

    def get_job_page(self, job_id: str, limit: int, after_seq: int = 0) -> tuple[Row, list[Row], list[Row],
                                                                              dict[str, int], bool]:
        """A job with one page of its tasks (``limit`` of them, after the cursor ``after_seq``), their
        executions, how many of its tasks are in each state, and whether more tasks follow."""
        with self.store.read() as tx:
            job = tx.job(job_id)
            if job is None:
                raise NotFound(f"no job with id '{job_id}'")
            tasks = tx.tasks_page(job_id, after_seq, limit + 1)
            more = len(tasks) > limit
            tasks = tasks[:limit]
            return job, tasks, tx.executions_of_tasks(t["id"] for t in tasks), tx.count_tasks_by_state(job_id), more

    def job_row(self, job_id: str) -> Row:
        with self.store.read() as tx:
            job = tx.job(job_id)
        if job is None:
            raise NotFound(f"no job with id '{job_id}'")
        return job

    def cancel(self, job_id: str, reason: str = "cancelled by user") -> Row:
        now = time.time()
        with self.store.transaction() as tx:
            job = tx.job(job_id)
            if job is None:
                raise NotFound(f"no job with id '{job_id}'")
            if not tx.cas_job(job_id, job_sources(JobState.CANCELLED), state=JobState.CANCELLED.value,
                              finished_at=now, error=reason):
                raise Conflict(f"job '{job_id}' is already {job['state']}; only an unfinished job can be "
                               "cancelled")
            nodes = self.flow.cancel_tasks(tx, job_id, now, reason)
            nodes |= self.flow.jobs_ended(tx, [job_id], now)
            job = tx.job(job_id)
        self.on_nodes_changed(nodes)
        self.kick()
        assert job is not None
        return job

    def restart(self, job_id: str) -> Row:
        """Run a failed or cancelled job again, from the first task that did not complete."""
        now = time.time()
        with self.store.transaction() as tx:
            job = tx.job(job_id)
            if job is None:
                raise NotFound(f"no job with id '{job_id}'")
            try:  # the policy may have changed since it was submitted
                self.settings.policy.check_stored(job["spec"])
            except PolicyError as e:
                raise Invalid(f"job '{job_id}' cannot run again: {e}") from None
            # A job with webhooks reports its new run too: delivery starts again.
            hooks = {} if job["hooks_done"] is None else {"hooks_done": False}
            if not tx.cas_job(job_id, ["failed", "cancelled"],
                              state=JobState.PENDING.value, error=None, finished_at=None, output=None, **hooks):
                raise Conflict(f"job '{job_id}' is {job['state']}; only a failed or cancelled job can be "
                               "restarted")
            tasks = self.flow.reset_for_restart(tx, tx.tasks_of(job_id), now)
            if any("depends_on" in (t["spec"] or {}) for t in tasks):
                ready, _ = dag_ready(tasks)
            else:  # a chain resumes at its first task that did not complete
                ready = [t["id"] for t in tasks if t["state"] not in DONE_TASK][:1]
            tx.cas_many("tasks", ["pending"], [{"id": i, "ready_at": now} for i in ready])
            job = tx.job(job_id)
        self.kick()
        assert job is not None
        return job

    def delete(self, job_id: str) -> None:
        with self.store.transaction() as tx:
            job = tx.job(job_id)
            if job is None:
                raise NotFound(f"no job with id '{job_id}'")
            if not tx.delete_job(job_id, TERMINAL_JOB):
                raise Conflict(f"job '{job_id}' is {job['state']}; cancel it or let it finish before "
                               "deleting it")

    # -- agents -------------------------------------------------------------------------------
    def register(self, info: NodeInfo, running: Iterable[str] = (), secret: str | None = None) -> Row:
        """Add a node, or bring back one that restarted. Work the coordinator believes is on the node
        but that the node no longer has is lost, and is rescheduled.

        A new node is given a secret (in the answer's ``node_secret``, once; the store keeps its hash).
        A registration that names a node that exists must present that node's secret, or it is refused:
        an identity is never taken over. A node id the store does not know (its state was lost) is
        registered with the secret presented, if any.
        """
        now = time.time()
        node_id = info.id or new_id()
        row = {"id": node_id, "name": info.name, "hostname": info.hostname, "version": info.version,
               "state": "ready", "cpu": info.cpu, "memory": info.memory, "disk": info.disk,
               "gpus": info.gpus, "labels": info.labels, "runtimes": info.runtimes, "queues": info.queues,
               "usage": {}, "registered_at": now, "last_heartbeat": now, "address": info.address}
        keep = set(running)
        issued: str | None = None
        with self.store.transaction() as tx:
            # A compare-and-set: the row is locked while its secret is checked, and a new one is added
            # only if no concurrent registration of the same id added it first (then that one's secret
            # must be presented, like any existing node's). An update never changes the secret.
            exists, stored = tx.node_secret_hash(node_id, lock=True) if info.id else (False, None)
            if not exists:
                if not secret or not info.id:
                    secret = issued = secrets_mod.token_urlsafe(32)
                stored = secret_hash(secret)
                if not tx.insert_node({**row, "secret_hash": stored}):
                    issued = None
                    exists, stored = tx.node_secret_hash(node_id, lock=True)
                    if not exists:  # added and removed again meanwhile
                        raise Conflict(f"node '{node_id}' is being registered concurrently: try again")
            if exists:
                if not _secret_ok(secret, stored):
                    log.warning("refused a registration as node %s (%s) without its secret", node_id, info.name)
                    raise Forbidden(f"node '{node_id}' is registered already, and this registration does not "
                                    f"present its secret ({NODE_SECRET_HEADER}); a node's secret is kept in "
                                    "its data dir (node-secret). Without it, register as a new node (no id)")
                tx.update_node(row)
            for ex in tx.active_executions(node_id):
                if ex["id"] not in keep:
                    self._lose(tx, ex, now, f"node {info.name} restarted without it")
        self._remember_node(node_id, stored)
        self.kick()
        out = {k: v for k, v in row.items() if k != "secret_hash"}
        out["node_secret"] = issued
        return out

    def _remember_node(self, node_id: str, stored: str | None) -> None:
        if stored:
            self._node_secrets[node_id] = stored
            self._node_secrets.move_to_end(node_id)
            while len(self._node_secrets) > 10_000:
                self._node_secrets.popitem(last=False)

    def authenticate(self, node_id: str, secret: str | None) -> None:
        """Refuse a call for ``node_id`` that does not present its secret (NotFound: an unknown node,
        which should register again)."""
        stored = self._node_secrets.get(node_id)
        if stored is None:
            with self.store.read() as tx:
                exists, stored = tx.node_secret_hash(node_id)
            if not exists:
                raise NotFound(f"no node with id '{node_id}': register again")
            self._remember_node(node_id, stored)
        if not _secret_ok(secret, stored):
            raise Forbidden(f"a call for node '{node_id}' must present that node's secret ({NODE_SECRET_HEADER}), "
                            "which the node was given when it first registered")

    def drain(self, node_id: str, running: Iterable[str] = ()) -> list[str]:
        """The node is shutting down: it takes no new work, and what was assigned to it that it has not
        started (not in ``running``) is handed back at once. Returns the executions handed back, which
        the node must not start."""
        now = time.time()
        keep = set(running)
        with self.store.transaction() as tx:
            node = tx.node(node_id)
            if node is None:
                raise NotFound(f"no node with id '{node_id}': register again")
            tx.cas_node(node_id, "ready", state="draining")
            handed = [ex["id"] for ex in tx.active_executions(node_id)
                      if ex["id"] not in keep and self._hand_back(tx, ex, now, f"node {node['name']} is shutting down")]
        log.info("node %s (%s) is draining; %d assignment(s) handed back", node_id, node["name"], len(handed))
        self.kick()
        return handed

    def leave(self, node_id: str) -> int:
        """The node stops now: it is down at once (no wait for its lease to expire), and whatever still
        runs on it is handed back (pending again, without using up an attempt). Returns how many."""
        now = time.time()
        with self.store.transaction() as tx:
            node = tx.node(node_id)
            if node is None:
                raise NotFound(f"no node with id '{node_id}': register again")
            for state in LIVE_NODE:
                tx.cas_node(node_id, state, state="down", usage={})
            n = sum(self._hand_back(tx, ex, now, f"node {node['name']} stopped before it finished")
                    for ex in tx.active_executions(node_id))
        log.info("node %s (%s) left; %d task(s) handed back", node_id, node["name"], n)
        self.kick()
        return n

    def _hand_back(self, tx: Tx, ex: Row, now: float, why: str) -> bool:
        """A node gives back an execution it will not finish: the task is pending again at once, and
        this attempt is not counted (neither a failure nor a loss)."""
        if not tx.cas_execution(ex["id"], ACTIVE, state="lost", finished_at=now, error=f"handed back: {why}"):
            return False
        task = tx.task(ex["task_id"])
        if task is None or task["execution_id"] != ex["id"] or task["state"] not in ACTIVE:
            return True
        if tx.cas_task(task["id"], ACTIVE, on_execution=ex["id"], state="pending", ready_at=now, node_id=None,
                       execution_id=None, attempts=max(int(task["attempts"]) - 1, 0),
                       reason=f"rescheduling: {why}"):
            self.stats["tasks_handed_back"] += 1
        return True

    def heartbeat(self, node_id: str, running: Sequence[str], usage: dict[str, Any] | None = None) -> list[str]:
        """Renew the node's lease; returns the executions it runs that it must stop."""
        now = time.time()
        cpu_percent = (usage or {}).get("cpu_percent")
        if isinstance(cpu_percent, (int, float)) and cpu_percent > 100:
            with self.store.read() as tx:
                node = tx.node(node_id)
            cores = max(float(node["cpu"]), 1.0) if node else 1.0
            if cpu_percent > 100 * cores:
                raise Invalid(f"usage.cpu_percent {cpu_percent:g} is more than 100 per core ({cores:g} cores)")
        with self.store.transaction() as tx:
            if not tx.touch_node(node_id, now, usage):
                node = tx.node(node_id)
                if node is None:
                    raise NotFound(f"no node with id '{node_id}': register again")
                # A node marked down that speaks again is back; its old work was already rescheduled.
                tx.cas_node(node_id, "down", state="ready", last_heartbeat=now, usage=usage or {})
                self.kick()
            return self._to_stop(tx, node_id, running)

    def _to_stop(self, tx: Tx, node_id: str, known: Sequence[str]) -> list[str]:
        if not known:
            return []
        alive = {ex["id"] for ex in tx.executions_by_ids(known, brief=True)
                 if ex["state"] in ACTIVE and ex["node_id"] == node_id}
        return [k for k in known if k not in alive]

    def poll(self, node_id: str, known: Sequence[str]) -> tuple[list[Row], list[str]]:
        """New assignments for the node (scheduled, and not yet known to it) and executions to stop."""
        with self.store.read() as tx:
            node = tx.node(node_id)
            if node is None:
                raise NotFound(f"no node with id '{node_id}': register again")
            known_set = set(known)
            fresh = [ex for ex in tx.active_executions(node_id, "scheduled") if ex["id"] not in known_set]
            work = self._assignments(tx, fresh) if fresh else []
            return work, self._to_stop(tx, node_id, known)

    def _secrets_of(self, tx: Tx, job_ids: set[str]) -> dict[str, tuple[str, ...]]:
        missing = [j for j in job_ids if j not in self._secrets]
        if missing:
            for jid, spec in tx.job_specs(missing).items():
                self._remember_secrets(jid, spec)
        return {j: self._secrets.get(j, ()) for j in job_ids}

    def _remember_secrets(self, job_id: str, spec: dict[str, Any]) -> None:
        self._secrets[job_id] = workflow.secrets_in(spec)  # its subjobs' secrets too: their output reaches it
        self._secrets.move_to_end(job_id)
        while len(self._secrets) > 10_000:
            self._secrets.popitem(last=False)

    def _assignments(self, tx: Tx, execs: list[Row]) -> list[Row]:
        tasks = {t["id"]: t for t in tx.tasks_by_ids({e["task_id"] for e in execs})}
        specs = tx.job_specs({e["job_id"] for e in execs})
        envs = {}
        for jid, job_spec in specs.items():
            envs[jid] = dict(job_spec.get("env") or {})
            self._remember_secrets(jid, job_spec)
        out = []
        policy = self.settings.policy
        host_policy = policy.for_worker()
        for ex in execs:
            t, job_env = tasks.get(ex["task_id"]), envs.get(ex["job_id"])
            if t is None or job_env is None:
                continue
            spec = t["spec"]  # validated at submit (or when its expressions were evaluated): read as stored
            env = {**job_env, **(spec.get("env") or {}), "CORRAL_JOB_ID": ex["job_id"], "CORRAL_TASK_ID": t["id"],
                   "CORRAL_TASK_NAME": t["name"],
                   "CORRAL_EXECUTION_ID": ex["id"], "CORRAL_ATTEMPT": str(ex["attempt"])}
            cpu_limit, memory_limit = policy.limits(spec.get("resources") or {})
            out.append({
                "execution_id": ex["id"], "job_id": ex["job_id"], "task_id": t["id"], "task_name": t["name"],
                "attempt": ex["attempt"], "image": spec.get("image"), "argv": argv_of(spec),
                "entrypoint": spec.get("entrypoint"), "env": env, "workdir": spec.get("workdir"),
                "timeout": None if spec.get("timeout") is None else parse_duration(spec["timeout"]),
                "cpu_limit": cpu_limit, "memory_limit": memory_limit, "policy": host_policy,
                "gpus": ex["gpus"], "files": spec.get("files") or {},
                "mounts": [{"source": None, "readonly": False, **m} for m in spec.get("mounts") or ()],
                "sidecars": [{"name": c.get("name"), "image": c.get("image"), "argv": argv_of(c),
                              "entrypoint": c.get("entrypoint"), "env": {**job_env, **(c.get("env") or {})}}
                             for c in spec.get("sidecars") or ()],
            })
        return out

    def report(self, node_id: str, updates: Sequence[Update], logs: Sequence[LogLine]) -> list[str]:
        """Apply an agent's batch of state changes and output lines, in one transaction.

        The rows involved are read (and on PostgreSQL locked) once, the decisions are made here, and
        the changes are written back in a few bulk compare-and-set statements, whatever the batch size.
        Returns the executions of the batch's lines whose stored log is full: their agent may keep
        the rest of their output.
        """
        if not updates and not logs:
            return []
        full: list[str] = []
        now = time.time()
        with self.store.transaction() as tx:
            asked = {u.execution_id for u in updates} | {ln.execution_id for ln in logs}
            found = tx.executions_by_ids(asked, lock=True, brief=True)
            # Only what is assigned to the calling node counts; lines for an execution that has ended
            # (or is another node's, or unknown) are not appended.
            execs = {e["id"]: e for e in found if e["node_id"] == node_id}
            foreign = asked - set(execs)
            if foreign:
                n = sum(u.execution_id in foreign for u in updates) + sum(ln.execution_id in foreign for ln in logs)
                self.stats["agent_reports_ignored"] += n
                log.warning("node %s sent %d update(s) or line(s) about %d execution(s) not assigned to it "
                            "(such as %s): ignored", node_id, n, len(foreign), min(foreign))
            if logs:
                open_ = {i: e for i, e in execs.items() if e["state"] in ACTIVE}
                full = self._append_logs(tx, open_, [ln for ln in logs if ln.execution_id in open_])
            # Per execution: when it started, and how it ended (if it did). A start and an end in one
            # batch (a quick task) become one change.
            started: dict[str, Update] = {}
            ended: dict[str, Update] = {}
            progress: dict[str, float] = {}
            for u in updates:
                ex = execs.get(u.execution_id)
                if ex is None or ex["node_id"] != node_id or ex["state"] not in ACTIVE:
                    continue  # unknown, someone else's, or already finished: a late report changes nothing
                if u.state != "running":
                    ended[u.execution_id] = u
                elif u.progress is not None:
                    progress[u.execution_id] = u.progress
                else:
                    started.setdefault(u.execution_id, u)
            if progress:
                tx.set_progress([{"id": execs[i]["task_id"], "_exec": i, "progress": p}
                                 for i, p in progress.items() if i not in ended])
            if not started and not ended:
                return full
            tasks = {t["id"]: t for t in tx.tasks_by_ids({execs[i]["task_id"] for i in {*started, *ended}},
                                                         lock=True, brief=True)}
            ch = _Changes()
            for ex_id, u in started.items():
                if ex_id not in ended and execs[ex_id]["state"] == "scheduled":
                    ch.start(execs[ex_id], tasks.get(execs[ex_id]["task_id"]), u)
            for ex_id, u in ended.items():
                self._end(tx, ch, execs[ex_id], tasks.get(execs[ex_id]["task_id"]), u, started.get(ex_id), now)
            nodes = self._apply(tx, ch, now)
        if nodes:
            self.on_nodes_changed(nodes)
        if ended:
            self.kick()
        return full

    def _append_logs(self, tx: Tx, execs: dict[str, Row], logs: Sequence[LogLine]) -> list[str]:
        """Store the lines of a batch, within each execution's stored log cap: the first line past it
        is replaced by one truncation marker, and what comes after is dropped. Returns the executions
        whose stored log is full."""
        cap = self.settings.max_log_bytes
        stored = {i: e["log_bytes"] or 0 for i, e in execs.items()}
        kept, sizes = cap_logs(logs, stored, cap)
        full = sorted({i for i in {ln.execution_id for ln in logs} if sizes.get(i, stored.get(i, 0)) > cap})
        if not kept:
            return full
        secrets = self._secrets_of(tx, {execs[ln.execution_id]["job_id"] for ln in kept})
        rows = []
        for ln in kept:
            ex = execs[ln.execution_id]
            hidden = secrets.get(ex["job_id"])
            rows.append({"job_id": ex["job_id"], "task_id": ex["task_id"], "execution_id": ln.execution_id,
                         "stream": ln.stream, "line": workflow.redact(ln.line, hidden) if hidden else ln.line,
                         "ts": ln.ts})
        tx.append_logs(rows)
        tx.add_log_bytes([(i, execs[i]["log_bytes"] or 0, n) for i, n in sizes.items()])
        return full

    def _end(self, tx: Tx, ch: _Changes, ex: Row, task: Row | None, u: Update, start: Update | None,
             now: float) -> None:
        ok = u.state == "completed" and u.exit_code == 0
        state = "completed" if ok else ("cancelled" if u.state == "cancelled" else "failed")
        error = None if ok else (u.error or (f"exit code {u.exit_code}" if u.exit_code is not None
                                             else "the attempt ended without an exit code"))
        started_at = start.ts if start else ex["started_at"]
        ch.execs.append({"id": ex["id"], "state": state, "exit_code": u.exit_code, "error": error,
                         "finished_at": u.ts, "started_at": started_at,
                         "container_id": u.container_id or (start.container_id if start else None)
                         or ex["container_id"]})
        if task is None or task["execution_id"] != ex["id"] or task["state"] not in ACTIVE:
            return
        if started_at is not None:
            ch.jobs_started[task["job_id"]] = started_at
        if ok:
            self.stats["tasks_completed"] += 1
            ch.tasks.append({"id": task["id"], "_exec": ex["id"], "state": "completed", "exit_code": 0,
                             "error": None, "finished_at": u.ts, "reason": None,
                             "started_at": started_at, "output": u.output})
            ch.done.append(task)
            return
        spec = TaskSpec.model_validate(tx.task_spec(task["id"]))
        # A lost attempt is the infrastructure's fault, not the task's: it does not use up a retry.
        failures = task["attempts"] - task["lost_count"]
        if state == "failed" and failures <= spec.retry.limit:
            delay = spec.retry.delay(failures)
            self.stats["tasks_retried"] += 1
            ch.retries.append({"id": task["id"], "_exec": ex["id"], "state": "pending", "ready_at": now + delay,
                               "node_id": None, "execution_id": None, "exit_code": u.exit_code, "error": error,
                               "reason": f"retrying in {delay:g}s after attempt {failures} failed: {error}"})
            return
        self.stats["tasks_failed"] += 1
        ch.tasks.append({"id": task["id"], "_exec": ex["id"], "state": state, "exit_code": u.exit_code,
                         "error": error, "finished_at": u.ts, "reason": None, "started_at": started_at,
                         "output": u.output})
        ch.failures.append((task, state, f"task '{task['name']}' {state}: {error}"))

    def _apply(self, tx: Tx, ch: _Changes, now: float) -> set[str]:
        """Write the batch's changes; returns the nodes that have executions to stop."""
        expected = len(ch.started) + len(ch.execs)
        changed = tx.cas_many("executions", ["scheduled"], ch.started)
        changed += tx.cas_many("executions", ACTIVE, ch.execs)
        changed += tx.cas_many("tasks", ["scheduled"], ch.tasks_started, on_execution=True)
        changed += tx.cas_many("tasks", ACTIVE, ch.tasks + ch.retries, on_execution=True)
        expected += len(ch.tasks_started) + len(ch.tasks) + len(ch.retries)
        if changed != expected:  # the rows were read under lock: this would be a bug, not a race
            log.warning("report: %d of %d compare-and-set changes applied", changed, expected)
        tx.jobs_to_state(ch.jobs_started, ["pending", "scheduled"], state=JobState.RUNNING.value)
        tx.jobs_started(ch.jobs_started)
        failed_jobs = {t["job_id"] for t, _, _ in ch.failures}
        if ch.done:
            self.flow.advance(tx, [t for t in ch.done if t["job_id"] not in failed_jobs], now)
        nodes: set[str] = set()
        for task, state, error in ch.failures:
            nodes |= self.flow.fail(tx, task, error, now, state)
        return nodes

    def _lose(self, tx: Tx, ex: Row, now: float, why: str) -> None:
        """The node running ``ex`` is gone: reschedule its task, unless it was lost too often."""
        if not tx.cas_execution(ex["id"], ACTIVE, state="lost", finished_at=now, error=why):
            return
        task = tx.task(ex["task_id"])
        if task is None or task["execution_id"] != ex["id"] or task["state"] not in ACTIVE:
            return
        self.stats["tasks_lost"] += 1
        if task["lost_count"] < MAX_LOST_RESCHEDULES:
            tx.cas_task(task["id"], ACTIVE, on_execution=ex["id"], state="pending", ready_at=now,
                        node_id=None, execution_id=None, lost_count=task["lost_count"] + 1,
                        reason=f"rescheduling: {why}")
        elif tx.cas_task(task["id"], ACTIVE, on_execution=ex["id"], state="lost", error=why, finished_at=now):
            self.on_nodes_changed(self.flow.fail(
                tx, task, f"task '{task['name']}' lost {task['lost_count'] + 1} times: {why}", now))

    # -- background work ----------------------------------------------------------------------
    def kick(self) -> None:
        """Ask for a scheduling pass soon."""
        self._kick.set()

    def wait_for_kick(self, timeout: float) -> None:
        self._kick.wait(timeout)
        self._kick.clear()

    def schedule_once(self) -> int:
        """One pass: place what fits, record why the rest waits. Returns how many tasks were placed."""
        self.stats["schedule_passes"] += 1
        placed_total = 0
        opened = 0
        while True:
            now = time.time()
            with self.store.read() as tx:
                ready = tx.ready_tasks(now, self.settings.schedule_batch)
                if not ready:
                    return placed_total
                if opened < 20 and any(t["kind"] != "run" for t in ready):
                    # Composite and template tasks are opened (or evaluated) first, then the tasks are read
                    # again. They come in the same read as the tasks to place: plain jobs pay no extra query.
                    ready = []
                else:
                    ready = [t for t in ready if t["kind"] == "run"]
                    node_rows = tx.nodes("ready")
                    alloc = {a["node_id"]: a for a in tx.allocations()}
            if not ready:
                if opened >= 20:
                    return placed_total
                self.open_composites()
                opened += 1
                continue
            # One malformed row (a node's GPU without an index, say) is skipped, logged and counted;
            # it never stops the pass, which would stop all scheduling.
            views = []
            for n in node_rows:
                try:
                    views.append(self._node_view(n, alloc.get(n["id"])))
                except (KeyError, TypeError, ValueError, AttributeError) as e:
                    self._skip_row("node", str(n.get("id")), e)
            tviews, bad = [], {}
            for t in ready:
                try:
                    tviews.append(self._task_view(t))
                except (KeyError, TypeError, ValueError, AttributeError) as e:
                    self._skip_row("task", str(t.get("id")), e)
                    bad[t["id"]] = f"cannot be placed: its stored record is malformed ({e})"
            result = plan(views, tviews, self.settings.strategy)
            result.reasons.update(bad)
            by_id = {t["id"]: t for t in ready}
            woken: set[str] = set()
            with self.store.transaction() as tx:
                rows: list[dict[str, Any]] = [
                    {"id": p.task_id, "node_id": p.node_id, "execution_id": new_id(), "gpus": list(p.gpus)}
                    for p in result.placements]
                won = tx.assign_tasks(rows)
                new_execs = []
                for r in rows:
                    if r["id"] not in won:
                        continue  # cancelled since the snapshot
                    t = by_id[r["id"]]
                    new_execs.append({"id": r["execution_id"], "task_id": t["id"], "job_id": t["job_id"],
                                      "attempt": t["attempts"] + 1, "node_id": r["node_id"],
                                      "state": "scheduled", "cpu": t["cpu"], "memory": t["memory"],
                                      "disk": t["disk"], "gpu": t["gpu"], "gpus": r["gpus"], "scheduled_at": now})
                    woken.add(r["node_id"])
                tx.insert_executions(new_execs)
                tx.jobs_to_state({e["job_id"] for e in new_execs}, ["pending"], state=JobState.SCHEDULED.value)
                tx.set_reasons({tid: r for tid, r in result.reasons.items() if by_id[tid]["reason"] != r})
            placed_total += len(new_execs)
            if woken:
                self.on_nodes_changed(woken)
            # Go on only while everything fitted and more may be waiting.
            if result.reasons or len(ready) < self.settings.schedule_batch:
                return placed_total

    def open_composites(self) -> None:
        """Evaluate and open the ready tasks that are not placed as they are (templates, parallel, each,
        subjob, pre/post). The expressions are evaluated between a read and the write, not inside the write
        transaction: a slow one holds up no submission."""
        now = time.time()
        with self.store.read() as tx:
            rows, jobs, contexts = self.flow.read_ready(tx, now)
        if not rows:
            return
        openings = self.flow.decide(rows, jobs, contexts, now)
        with self.store.transaction() as tx:
            nodes = self.flow.apply(tx, openings, now)
        if nodes:
            self.on_nodes_changed(nodes)

    def _skip_row(self, kind: str, row_id: str, e: Exception) -> None:
        self.stats["schedule_rows_skipped"] += 1
        key = f"{kind}:{row_id}"
        if key not in self._bad_rows_logged:  # once per row, not on every pass
            if len(self._bad_rows_logged) >= 1000:
                self._bad_rows_logged.clear()
            self._bad_rows_logged.add(key)
            log.warning("scheduling pass: skipped %s %s, whose stored record is malformed: %s", kind, row_id, e)

    @staticmethod
    def _node_view(n: Row, a: Row | None) -> NodeView:
        """The scheduler's view of a node row; ValueError or TypeError if the row is malformed."""
        allocated = Resources(float(a["cpu"] or 0), int(a["memory"] or 0), int(a["disk"] or 0),
                              int(a["gpu"] or 0)) if a else Resources()
        used = set(a["gpus_used"]) if a else set()
        gpu_idx = [_gpu_index(g) for g in _list(n["gpus"], "gpus")]
        labels = n["labels"] or {}
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise ValueError("labels is not a map of strings")
        return NodeView(n["id"], n["name"], Resources(float(n["cpu"]), int(n["memory"]), int(n["disk"]),
                                                      len(gpu_idx)),
                        allocated, labels, frozenset(_strings(n["runtimes"], "runtimes")),
                        frozenset(_strings(n["queues"], "queues")), [g for g in gpu_idx if g not in used])

    @staticmethod
    def _task_view(t: Row) -> TaskView:
        sel = t["node_selector"] or {}
        if not isinstance(sel, dict) or not all(isinstance(v, str) for v in sel.values()):
            raise ValueError("node_selector is not a map of strings")
        return TaskView(t["id"], t["job_id"], t["queue"], int(t["priority"]), t["job_seq"],
                        Resources(float(t["cpu"]), int(t["memory"]), int(t["disk"]), int(t["gpu"])),
                        t["runtime"], sel)

    def next_retry_in(self) -> float | None:
        now = time.time()
        with self.store.read() as tx:
            at = tx.next_ready_at(now)
        return None if at is None else max(at - now, 0.0)

    def refresh_pending(self) -> None:
        with self.store.read() as tx:
            self.pending_tasks = tx.count_pending_tasks()

    def reap_once(self) -> int:
        """Mark nodes that stopped heartbeating as down and reschedule their work. Returns how many."""
        now = time.time()
        ttl = self.settings.node_ttl
        if now - self.started_at < ttl:
            return 0  # after a coordinator restart, give every node one full lease to check in
        with self.store.transaction() as tx:
            stale = tx.stale_nodes(now - ttl)
            for n in stale:
                if tx.cas_node(n["id"], n["state"], state="down"):  # ready, or draining
                    for ex in tx.active_executions(n["id"]):
                        self._lose(tx, ex, now, f"node {n['name']} missed its heartbeats for {ttl:g}s")
        if stale:
            self.kick()
        return len(stale)
