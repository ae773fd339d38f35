"""The scheduling pass: open what is not placed as it is (templates, composites), place the ready tasks
with the pure ``scheduler.plan``, and commit each plan through one step (``commit``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from corral.auth.identity import DEFAULT_NAMESPACE
from corral.coordinator.part import Part
from corral.domain.ids import new_id
from corral.domain.quotas import Budgets
from corral.domain.resources import Resources
from corral.domain.states import JobState
from corral.scheduler import NodeView, TaskView, plan
from corral.scheduler.placement import Plan, unserved_reason
from corral.store.quotas import quota_of
from corral.store.sql import Row, Tx

if TYPE_CHECKING:
    from corral.coordinator.service import Coordinator

log = logging.getLogger("corral.coordinator")
MAX_STEP = 1024  # tasks one step of a scheduling pass reads and places, at most (one write transaction)
WAITING_PAGES = 4  # pages of a queue a pass reads past tasks that cannot be placed now, looking for ones that can
# After a look past waiting tasks that placed none of the queue's tasks (a full cluster, a backlog of tasks alike),
# the queue's passes read its first page alone for this long (seconds): then they look past again.
LOOK_PAST_PAUSE = 0.5
# What of a ready node decides whether a task could ever be placed on it: a change of any of these (or a new
# ready node) reads the parked tasks again.
_NODE_SHAPE = ("id", "cpu", "memory", "disk", "gpus", "labels", "runtimes", "queues")


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


class Scheduling(Part):
    """Placing ready tasks on nodes."""

    def __init__(self, coord: Coordinator) -> None:
        super().__init__(coord)
        self._bad_rows_logged: set[str] = set()  # rows a scheduling pass skipped, logged once each
        self._step = self.settings.schedule_batch  # tasks the next step of a pass reads
        # Per queue: where, past the waiting tasks, the last pass stopped looking (absent: it saw them all).
        self._resume: dict[str, int] = {}
        self._nodes_seen: set[int] | None = None  # the ready nodes' shapes at the last pass (None: no pass yet)
        # Per queue: when a look past its waiting tasks last placed none of them (see LOOK_PAST_PAUSE)
        self._looked_past_in_vain: dict[str, float] = {}

    def schedule_once(self) -> int:
        """One pass: place what fits, record why the rest waits. Returns how many tasks were placed.

        Composite and template tasks are opened first. Then each queue that holds pending tasks and that a
        ready node serves is read in placement order (``Tx.ready_tasks``, an index walk, no sort), a page of
        each per step, and one ``plan`` places the step's pages together (priority first across queues).
        Tasks that no ready node could hold even empty are parked (``tasks.parked``) with their reason: the
        read leaves them out until the ready nodes change, so that they neither hide the work behind them
        nor cost every pass a read. The tasks of a queue no ready node serves are never read to be placed:
        they are parked in one statement per queue (``_park_unserved``)."""
        self.stats["schedule_passes"] += 1
        opened = 0
        while True:
            now = time.time()
            with self.store.read() as tx:
                if opened < 20 and tx.composites_ready(now):
                    composites = True
                else:
                    composites = False
                    node_rows = tx.nodes("ready")
                    queues = tx.pending_queues()
                    served = self._served(node_rows)
                    unserved = tx.unparked_queues([q for q in queues if q not in served], now)
            if not composites:
                break
            self.open_composites()
            opened += 1
        if not queues:
            self._resume.clear()
            return 0
        self._unpark_if_nodes_changed(node_rows)
        self._park_unserved(unserved, bool(node_rows))
        return self._place([q for q in queues if q in served], node_rows)

    def _place(self, queues: list[str], node_rows: list[Row]) -> int:
        """Steps over the served queues. Each step reads the next page of every queue still in play, plans
        them and commits the plan. A step that placed all it read takes four times as many tasks next (up
        to MAX_STEP), and so does the next pass's first step, so that a large backlog on a large cluster is
        not placed 64 tasks per read of 5,000 nodes; a step that left tasks waiting sets it back to
        schedule_batch: a full cluster's passes stay small. In a queue, tasks that cannot be placed now (a
        selector no node matches, more than any node has, no room) must not hide the ones behind them: a
        page that leaves some waiting is followed by one past them, up to WAITING_PAGES per queue and pass;
        the next pass reads the queue's top again (what frees up goes first), then goes on from where this
        one stopped, so that every ready task is looked at within a few passes. A look past waiting tasks that
        placed none of them (a full cluster and a backlog of tasks alike) pauses the looking past for that
        queue for LOOK_PAST_PAUSE: until then its passes read its first page alone (the oldest go first as
        room frees up), instead of every pass reading and planning pages that cannot fit. Parked tasks leave
        the read with the commit that parks them: they neither count as waiting nor move the offset. A step
        whose plan places nothing and changes no reason writes nothing."""
        placed_total = 0
        batch = self._step
        offset = dict.fromkeys(queues, 0)
        pages = dict.fromkeys(queues, 0)
        for q in list(self._resume):
            if q not in offset:
                del self._resume[q]
        active = list(queues)
        while active:
            now = time.time()
            with self.store.read() as tx:
                reads = {q: tx.ready_tasks(q, now, batch, offset[q]) for q in active}
                # A composite task not opened yet (more than one pass opens) is stepped over, not placed.
                ready = [t for rs in reads.values() for t in rs if t["kind"] == "run"]
                if not ready and all(len(rs) < batch for rs in reads.values()):
                    for q in active:
                        self._resume.pop(q, None)  # looked at them all: the next pass starts from the top
                    return placed_total
                alloc = {a["node_id"]: a for a in tx.allocations()}
                budgets = self.budgets(tx, {t["job_id"] for t in ready}, ready)
            views = self.node_views(node_rows, alloc)
            tviews, bad = [], {}
            for t in ready:
                try:
                    tviews.append(self.task_view(t))
                except (KeyError, TypeError, ValueError, AttributeError) as e:
                    self._skip_row("task", str(t.get("id")), e)
                    bad[t["id"]] = f"cannot be placed: its stored record is malformed ({e})"
            result = plan(views, tviews, self.settings.strategy, budgets)
            result.reasons.update(bad)
            result.never.update(bad)
            by_id = {t["id"]: t for t in ready}
            if result.placements or result.reasons:
                placed_total += self.commit(result, by_id, now)
            waiting: dict[str, int] = {}  # per queue: tasks left waiting and still read (not parked)
            for tid in result.reasons:
                if tid not in result.never:
                    q = by_id[tid]["queue"]
                    waiting[q] = waiting.get(q, 0) + 1
            placed_in = {by_id[p.task_id]["queue"] for p in result.placements}
            if waiting:
                self._step = self.settings.schedule_batch
            else:
                self._step = min(batch * 4, max(MAX_STEP, self.settings.schedule_batch))
            still = []
            for q in active:
                if pages[q] and q in placed_in:  # this step looked past waiting tasks, and placed some
                    self._looked_past_in_vain.pop(q, None)
                elif pages[q] and waiting.get(q):  # and none of those fit either
                    self._looked_past_in_vain[q] = now
                if len(reads[q]) < batch:  # the last of the queue's ready tasks
                    self._resume.pop(q, None)
                    continue
                offset[q] += sum(t["kind"] != "run" for t in reads[q])
                if waiting.get(q):  # some wait: look past them (a few pages a pass)
                    if now - self._looked_past_in_vain.get(q, -LOOK_PAST_PAUSE) < LOOK_PAST_PAUSE:
                        continue  # a full cluster: the first page only, for a while (the next pass)
                    offset[q] += waiting[q]
                    if pages[q] == 0:
                        offset[q] = max(offset[q], self._resume.get(q, 0))
                    pages[q] += 1
                    if pages[q] >= WAITING_PAGES:
                        self._resume[q] = offset[q]
                        continue
                still.append(q)
            active, batch = still, self._step
        return placed_total

    def _served(self, node_rows: list[Row]) -> set[str]:
        served: set[str] = set()
        for n in node_rows:
            try:
                served.update(_strings(n["queues"], "queues"))
            except (KeyError, TypeError, ValueError) as e:
                self._skip_row("node", str(n.get("id")), e)
        return served

    def _park_unserved(self, queues: list[str], any_nodes: bool) -> None:
        """The ready tasks of queues that no ready node serves wait for that alone: each such queue's tasks
        that are not parked yet are parked with that reason, in one statement per queue (its new tasks only:
        the index leaves the parked ones out)."""
        if not queues:
            return
        now = time.time()
        with self.store.transaction() as tx:
            self.coord.fence(tx)
            for q in queues:
                tx.park_queue(q, now, unserved_reason(q, any_nodes))

    def _unpark_if_nodes_changed(self, node_rows: list[Row]) -> None:
        """Parked tasks are read again when a ready node appears or changes (registered, back from a drain
        or from down, new labels or capacity), and on this coordinator's first pass (another may have parked
        them against other nodes). A node that leaves cannot make a parked task placeable: that costs no
        unparking (its tasks keep the reason they were parked with)."""
        seen = {hash(repr([n.get(k) for k in _NODE_SHAPE])) for n in node_rows}
        if self._nodes_seen is None or not seen <= self._nodes_seen:
            with self.store.transaction() as tx:
                self.coord.fence(tx)
                n = tx.unpark_tasks()
            if n:
                log.info("scheduling pass: %d parked task(s) read again, the ready nodes changed", n)
        self._nodes_seen = seen

    @staticmethod
    def budgets(tx: Tx, job_ids: set[str], ready: list[Row]) -> Budgets | None:
        """The namespaces' quotas and what they hold (None when no namespace has a quota: then nothing more
        is read); each ready task's row is given its job's ``namespace``."""
        rows = tx.quotas()
        if not rows:
            return None
        namespaces = tx.job_namespaces(job_ids)
        for t in ready:
            t["namespace"] = namespaces.get(t["job_id"], DEFAULT_NAMESPACE)
        return Budgets({ns: quota_of(r) for ns, r in rows.items()}, tx.namespace_usage(rows))

    def commit(self, result: Plan, by_id: dict[str, Row], now: float) -> int:
        """The one step that writes a plan: each placement is a compare-and-set of its task (still pending:
        a task cancelled since the snapshot is left alone) with its new execution, the jobs
        placed become scheduled, and the reasons of what waits are written where they changed. The nodes
        given work are woken. Returns how many tasks were placed. The write carries the leader's epoch: it
        is refused (Fenced) if another coordinator has taken the leadership since; the other coordinators are
        told in the same transaction (``Coordinator.announce``), so a refused plan wakes nobody."""
        woken: set[str] = set()
        never = {tid: result.reasons[tid] for tid in result.never}
        changed: dict[str, str | None] = {tid: r for tid, r in result.reasons.items()
                                          if tid not in never and by_id[tid]["reason"] != r}
        if not result.placements and not never and not changed:
            return 0  # the same tasks wait for the same reasons: nothing to write
        with self.store.transaction() as tx:
            self.coord.fence(tx)
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
            tx.set_reasons(changed)
            tx.park_tasks(never)  # not read again until the ready nodes change
            # The other coordinators hear of it with the commit itself: no thread hop or round trip after it
            # stands between a placement and the long-poll of its worker on another coordinator.
            told = bool(woken) and self.coord.announce(tx, woken)
        if woken:
            (self.coord.on_nodes_local if told else self.coord.on_nodes_changed)(woken)
        return len(new_execs)

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
            self.coord.fence(tx)
            nodes = self.flow.apply(tx, openings, now)
        if nodes:
            self.coord.on_nodes_changed(nodes)

    def node_views(self, node_rows: Sequence[Row], alloc: dict[str, Row]) -> list[NodeView]:
        """The nodes as placement sees them, for tasks and pods alike. One malformed row (a node's GPU
        without an index, say) is skipped, logged and counted; it never stops the pass, which would stop
        all scheduling."""
        views = []
        for n in node_rows:
            try:
                views.append(self.node_view(n, alloc.get(n["id"])))
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                self._skip_row("node", str(n.get("id")), e)
        return views

    def _skip_row(self, kind: str, row_id: str, e: Exception) -> None:
        self.stats["schedule_rows_skipped"] += 1
        key = f"{kind}:{row_id}"
        if key not in self._bad_rows_logged:  # once per row, not on every pass
            if len(self._bad_rows_logged) >= 1000:
                self._bad_rows_logged.clear()
            self._bad_rows_logged.add(key)
            log.warning("scheduling pass: skipped %s %s, whose stored record is malformed: %s", kind, row_id, e)

    @staticmethod
    def node_view(n: Row, a: Row | None) -> NodeView:
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
    def task_view(t: Row) -> TaskView:
        sel = t["node_selector"] or {}
        if not isinstance(sel, dict) or not all(isinstance(v, str) for v in sel.values()):
            raise ValueError("node_selector is not a map of strings")
        return TaskView(t["id"], t["job_id"], t["queue"], int(t["priority"]), t["job_seq"],
                        Resources(float(t["cpu"]), int(t["memory"]), int(t["disk"]), int(t["gpu"])),
                        t["runtime"], sel, t.get("namespace", DEFAULT_NAMESPACE))

    def next_retry_in(self) -> float | None:
        now = time.time()
        with self.store.read() as tx:
            at = tx.next_ready_at(now)
        return None if at is None else max(at - now, 0.0)

    def refresh_pending(self) -> None:
        with self.store.read() as tx:
            self.coord.pending_tasks = tx.count_pending_tasks()
