"""Podling's tasks and nodes over the core (used by api/dialects/podling.py and the worker's Podling port).

A Podling task is a native job of one task; ``podling_tasks`` (migration 0012) gives it its Podling id and
keeps what Podling's task holds that a job does not. A status a worker reports through Podling's API
(``PUT /api/v1/tasks/{id}/status``) goes through ``Coordinator.report`` like any agent's report, and
"scheduled" (a worker's execute) pins a pending task to that node through its node_selector: nothing
writes to a task but the coordinator's compare-and-sets.

A node registered through Podling's API is a Corral node that offers no runtime and serves no queue:
Corral cannot hand work to a Podling worker (they do not speak the agent protocol), so nothing is placed
there, but it is listed, heartbeats and deregisters as Podling's master lets it. A Corral worker started
with ``--podling-port`` is a Podling node too (its port in the label ``podling.io/port``).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

from corral.coordinator.errors import Conflict, Forbidden, Invalid, NotFound
from corral.coordinator.flow import job_rows
from corral.coordinator.service import Coordinator, NodeInfo, Update
from corral.domain import podling as pd
from corral.domain.spec import JobSpec
from corral.domain.states import TERMINAL_JOB_STATES
from corral.scheduler.placement import NODE_ID_LABEL
from corral.store.sql import ACTIVE, DuplicateKey, Row, Tx

PORT_LABEL, REGISTERED_LABEL = pd.PORT_LABEL, pd.REGISTERED_LABEL
TERMINAL_JOB = [s.value for s in TERMINAL_JOB_STATES]


@dataclass
class PodlingTask:
    """One Podling task as stored: its row in podling_tasks, its job, the job's task and current execution."""

    row: Row
    job: Row
    task: Row
    execution: Row | None

    @property
    def status(self) -> str:
        return pd.task_status(self.task["state"])


def is_podling_node(node: Row) -> bool:
    return (node.get("labels") or {}).get(REGISTERED_LABEL) == "api"


class PodlingTasks:
    def __init__(self, coord: Coordinator) -> None:
        self.coord = coord

    # -- tasks ----------------------------------------------------------------------------------
    def create(self, spec: JobSpec, extra: dict[str, Any], *, task_id: str | None = None,
               node_id: str | None = None) -> str:
        """A new Podling task (a job of the one task in ``spec``), pinned to ``node_id`` if given.
        Returns its Podling id; Conflict if ``task_id`` is taken."""
        if node_id is not None:
            t = spec.tasks[0]
            spec = spec.model_copy(update={"tasks": [t.model_copy(
                update={"node_selector": {**t.node_selector, NODE_ID_LABEL: node_id}})]})
        coord = self.coord
        adding = coord.admit(spec)
        now = time.time()
        job, tasks = job_rows(spec, now)
        pid = task_id or pd.new_id(now)
        try:
            with coord.store.transaction() as tx:
                tx.insert_jobs([(job, tasks)])
                tx.insert_podling_task({"id": pid, "job_id": job["id"], "extra": extra, "created_at": now})
        except DuplicateKey:
            raise Conflict(f"task {pid} exists already") from None
        coord.stats["jobs_submitted"] += 1
        coord.pending_tasks += adding
        coord.kick()
        return pid

    @staticmethod
    def _read(tx: Tx, task_id: str) -> PodlingTask | None:
        row = tx.podling_task(task_id)
        if row is None:
            return None
        job = tx.job(row["job_id"])
        tasks = tx.tasks_of(row["job_id"]) if job else []
        if job is None or not tasks:
            return None
        task = tasks[0]
        ex = tx.executions_by_ids([task["execution_id"]])[0] if task["execution_id"] else None
        return PodlingTask(row, job, task, ex)

    def get(self, task_id: str) -> PodlingTask:
        with self.coord.store.read() as tx:
            found = self._read(tx, task_id)
        if found is None:
            raise NotFound("task not found")
        return found

    def recent(self, limit: int, before_seq: int | None = None) -> list[PodlingTask]:
        """Podling tasks, newest first."""
        with self.coord.store.read() as tx:
            rows = tx.podling_tasks(limit, before_seq)
            jobs = {j["id"]: j for j in tx.jobs_by_ids(r["job_id"] for r in rows)}
            tasks: dict[str, Row] = {}
            for t in tx.tasks_of_jobs(jobs):
                if t["position"] == 0 and t["parent_id"] is None:
                    tasks[t["job_id"]] = t
            execs = {e["id"]: e for e in tx.executions_by_ids(
                t["execution_id"] for t in tasks.values() if t["execution_id"])}
        return [PodlingTask(r, jobs[r["job_id"]], tasks[r["job_id"]], execs.get(tasks[r["job_id"]]["execution_id"]))
                for r in rows if r["job_id"] in jobs and r["job_id"] in tasks]

    def pin(self, task_id: str, node_id: str) -> PodlingTask:
        """Run this task on ``node_id``: a pending task is pinned there (a compare-and-set on its state);
        one already placed there is left as it is; one placed elsewhere, or finished, is a Conflict."""
        with self.coord.store.transaction() as tx:
            found = self._read(tx, task_id)
            if found is None:
                raise NotFound("task not found")
            if tx.node(node_id) is None:
                raise Invalid(f"no node '{node_id}'")
            task = found.task
            if task["state"] == "pending":
                sel = {**(task["node_selector"] or {}), NODE_ID_LABEL: node_id}
                if not tx.cas_task(task["id"], ["pending"], node_selector=sel):
                    raise Conflict("the task was placed meanwhile; try again")
            elif task["state"] in ACTIVE:
                if task["node_id"] != node_id:
                    raise Conflict(f"task {task_id} is {task['state']} on node {task['node_id']}")
            else:
                raise Conflict(f"task {task_id} is {found.status} already")
        self.coord.kick()
        return self.get(task_id)

    def set_status(self, task_id: str, status: str, *, caller: str | None, container_id: str | None = None,
                   error: str | None = None, node_hint: str | None = None) -> PodlingTask:
        """A worker's report through Podling's API: only a legal step of the task flow (Invalid
        otherwise). ``caller``: the authenticated node making it (None when the server has no auth), which
        must be the task's node. "scheduled" pins the task to the caller (or ``node_hint``)."""
        found = self.get(task_id)
        why = pd.transition_error(found.status, status)
        if why:
            raise Invalid(why)
        if status == "scheduled":
            node = caller or node_hint
            if not node:
                raise Invalid("a task is scheduled onto a node: give nodeId (or report as a node)")
            return self.pin(task_id, node)
        task = found.task
        if status == "failed" and task["state"] == "pending":
            with contextlib.suppress(Conflict):
                self.coord.cancel(task["job_id"], error or "failed: reported by a worker")
            return self.get(task_id)
        if caller is not None and task["node_id"] != caller:
            raise Forbidden(f"task {task_id} is not assigned to node {caller}")
        ex = found.execution
        if ex is None or task["node_id"] is None:
            raise Conflict(f"task {task_id} is not assigned to a node")
        now = time.time()
        if status == "running":
            u = Update(ex["id"], "running", now, container_id=container_id or None)
        elif status == "completed":
            u = Update(ex["id"], "completed", now, exit_code=0, container_id=container_id or None)
        else:
            u = Update(ex["id"], "failed", now, exit_code=1, error=error or "failed: reported by a worker",
                       container_id=container_id or None)
        self.coord.report(task["node_id"], [u], [])
        after = self.get(task_id)
        if after.status == found.status:
            raise Conflict(f"task {task_id} changed meanwhile; it is {after.status}")
        return after

    def logs(self, task_id: str, tail: int, node_id: str | None = None) -> list[Row]:
        """The last ``tail`` lines of the task's output (of the attempt on ``node_id`` if given)."""
        found = self.get(task_id)
        if node_id is not None and found.task["node_id"] != node_id:
            raise NotFound("task not found")
        with self.coord.store.read() as tx:
            lines = tx.tail_logs(found.job["id"], tail, 256 * 1024)
        return lines

    # -- nodes ----------------------------------------------------------------------------------
    def register_node(self, hostname: str, port: int, cpu_milli: int, memory: int) -> Row:
        info = NodeInfo(name=hostname, hostname=hostname, version="podling", cpu=cpu_milli / 1000.0,
                        memory=memory, disk=0, labels={PORT_LABEL: str(port), REGISTERED_LABEL: "api"},
                        runtimes=[], queues=[])
        return self.coord.register(info)

    def node(self, ref: str) -> Row:
        """A node by its id, or by the hostname of a node registered through Podling's API (Podling's
        document heartbeats /nodes/worker-1/heartbeat for the node it registered as worker-1)."""
        with self.coord.store.read() as tx:
            node = tx.node(ref) if len(ref) <= 32 else None
            if node is None:
                named = [n for n in tx.nodes() if n["hostname"] == ref and is_podling_node(n)]
                node = max(named, key=lambda n: n["last_heartbeat"]) if named else None
        if node is None:
            raise NotFound("node not found")
        return node

    def _own(self, ref: str) -> Row:
        node = self.node(ref)
        if not is_podling_node(node):
            raise Forbidden(f"node {node['id']} is a Corral worker: it heartbeats and leaves through /v1/agent, "
                            "with its own secret")
        return node

    def heartbeat(self, ref: str) -> Row:
        node = self._own(ref)
        self.coord.heartbeat(node["id"], [])
        return self.node(node["id"])

    def deregister(self, ref: str) -> Row:
        node = self._own(ref)
        self.coord.leave(node["id"])
        return self.node(node["id"])

    # -- prune ----------------------------------------------------------------------------------
    def prune(self, everything: bool) -> dict[str, int]:
        """Podling's prune: finished tasks and offline nodes go; with ``everything``, unfinished tasks
        are cancelled and go too, and so do the nodes registered through Podling's API. Corral workers
        that are up are never removed (they would only register again)."""
        removed = {"tasks": 0, "nodes": 0, "pods": 0, "services": 0}
        before: int | None = None
        while True:
            page = self.recent(500, before)
            if not page:
                break
            before = page[-1].row["seq"]
            for t in page:
                if t.job["state"] not in TERMINAL_JOB:
                    if not everything:
                        continue
                    with contextlib.suppress(Conflict):
                        self.coord.cancel(t.job["id"], "pruned")
                try:
                    self.coord.delete(t.job["id"])
                    removed["tasks"] += 1
                except (Conflict, NotFound):
                    continue
        removed["pods"] = self._prune_pods(everything)
        if everything:
            from corral.coordinator.services import Services
            services = Services(self.coord)
            for sv in services.list(limit=1000):
                if sv["origin"] == "podling":
                    with contextlib.suppress(NotFound):
                        services.delete(sv["id"])
                        removed["services"] += 1
        with self.coord.store.transaction() as tx:
            for n in tx.nodes():
                if n["state"] == "down" or (everything and is_podling_node(n)):
                    removed["nodes"] += tx.delete_node(n["id"], [n["state"]])
        return removed

    def _prune_pods(self, everything: bool) -> int:
        """Podling's pods that have ended are purged; with ``everything``, the others are deleted (stopped:
        gone from Podling's API at once, purged by a later prune once their containers are gone)."""
        pods = self.coord.pods
        n, after = 0, 0
        while True:
            page = pods.list(origin="podling", limit=500, after=after)
            if not page:
                return n
            after = page[-1]["seq"]
            for p in page:
                try:
                    if p["state"] in ("succeeded", "failed", "terminated"):
                        pods.purge(p["id"])
                        n += p["state"] != "terminated"  # a deleted pod was counted when it was deleted
                    elif everything and p["state"] != "terminating":
                        if pods.delete(p["id"])["state"] == "terminated":
                            pods.purge(p["id"])
                        n += 1
                except (NotFound, Conflict):
                    continue
