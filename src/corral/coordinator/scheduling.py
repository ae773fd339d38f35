"""The scheduling pass: open what is not placed as it is (templates, composites), place the ready tasks
with the pure ``scheduler.plan``, and commit each plan through one step (``commit``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from corral.auth.identity import DEFAULT_NAMESPACE
from corral.coordinator.flow import new_id
from corral.coordinator.part import Part
from corral.domain.quotas import Budgets
from corral.domain.resources import Resources
from corral.domain.states import JobState
from corral.scheduler import NodeView, TaskView, plan
from corral.scheduler.placement import Plan
from corral.store.quotas import quota_of
from corral.store.sql import Row, Tx

if TYPE_CHECKING:
    from corral.coordinator.service import Coordinator

log = logging.getLogger("corral.coordinator")
MAX_STEP = 1024  # tasks one step of a scheduling pass reads and places, at most (one write transaction)
WAITING_PAGES = 4  # steps a pass takes past tasks that cannot be placed now, looking for ones that can


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
        self._resume = 0  # where, past the waiting tasks, the last pass stopped looking (0: it saw them all)

    def schedule_once(self) -> int:
        """One pass: place what fits, record why the rest waits. Returns how many tasks were placed."""
        self.stats["schedule_passes"] += 1
        placed_total = 0
        opened = 0
        # Each step reads every ready node and what is allocated on it: a step that placed all it read takes
        # four times as many tasks next (up to MAX_STEP), and so does the next pass's first step, so that a
        # large backlog on a large cluster is not placed 64 tasks per read of 5,000 nodes. A step that left
        # tasks waiting sets it back to schedule_batch: a full cluster's passes stay small.
        # Tasks that cannot be placed now (a queue no node serves, more than any node has) must not hide the
        # ones behind them: a step that leaves tasks waiting is followed by one past them, up to WAITING_PAGES
        # per pass; the next pass reads the top again (what frees up goes first), then goes on from where
        # this one stopped, so that every ready task is looked at within a few passes.
        batch, offset, waiting_pages = self._step, 0, 0
        while True:
            now = time.time()
            with self.store.read() as tx:
                ready = tx.ready_tasks(now, batch, offset)
                if not ready:
                    if offset:
                        self._resume = 0  # looked at them all: the next pass starts from the top
                    return placed_total
                if opened < 20 and any(t["kind"] != "run" for t in ready):
                    # Composite and template tasks are opened (or evaluated) first, then the tasks are read
                    # again. They come in the same read as the tasks to place: plain jobs pay no extra query.
                    ready = []
                else:
                    ready = [t for t in ready if t["kind"] == "run"]
                    node_rows = tx.nodes("ready")
                    alloc = {a["node_id"]: a for a in tx.allocations()}
                    budgets = self.budgets(tx, {t["job_id"] for t in ready}, ready)
            if not ready:
                if opened >= 20:
                    return placed_total
                self.open_composites()
                opened += 1
                continue
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
            placed = self.commit(result, {t["id"]: t for t in ready}, now)
            placed_total += placed
            if len(ready) < batch:  # the last of the ready tasks
                self._resume = 0
                if result.reasons:
                    self._step = self.settings.schedule_batch
                return placed_total
            if result.reasons:  # some wait: look past them (a few steps a pass), in small steps
                self._step = batch = self.settings.schedule_batch
                offset += len(ready) - placed
                if waiting_pages == 0:
                    offset = max(offset, self._resume)
                waiting_pages += 1
                if waiting_pages >= WAITING_PAGES:
                    self._resume = offset
                    return placed_total
                continue
            self._step = batch = min(batch * 4, max(MAX_STEP, self.settings.schedule_batch))

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
            tx.set_reasons({tid: r for tid, r in result.reasons.items() if by_id[tid]["reason"] != r})
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
