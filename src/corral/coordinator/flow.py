"""Workflows over the store: opening composite tasks, advancing a scope when its tasks end, finishing and
failing jobs, and the propagation of both through subjobs. Every change is a compare-and-set.

A *scope* is the list of tasks one level holds: a job's top-level tasks, or a composite task's children.
Tasks of a scope start in order; a scope lets ``width`` of them run at once (1 for a job's tasks and for
pre/post steps, the concurrency for ``each``, all for ``parallel``). When one ends, the next that waits
starts. When none is left unfinished, the composite completes (or, at the top, the job) and that, in turn,
advances the scope above it. A job whose tasks name ``depends_on`` advances by its graph instead.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from corral.auth import context
from corral.coordinator.policy import Policy, PolicyError
from corral.domain import expr, workflow
from corral.domain.ids import new_id
from corral.domain.resources import parse_duration
from corral.domain.spec import JobSpec, TaskSpec, dump_spec
from corral.domain.states import TERMINAL_JOB_STATES, JobState, TaskState
from corral.store import sealing
from corral.store.sql import ACTIVE, Row, Tx

log = logging.getLogger("corral.coordinator")
DONE_TASK = (TaskState.COMPLETED.value, TaskState.SKIPPED.value)
NON_TERMINAL_JOB = [s.value for s in JobState if s not in TERMINAL_JOB_STATES]
TERMINAL_JOB = frozenset(s.value for s in TERMINAL_JOB_STATES)
MAX_TASKS_PER_JOB = 10_000  # the default of --max-tasks-per-job: rows of one job across all its levels
PASS_BUDGET = 2.0  # seconds of evaluation per opening step; what is left waits for the next step
TASK_BUDGET = 2.0  # seconds all the expressions of one task may take together (each also has expr.TIME_BUDGET)
# When a task fails for good, the job's other running work stops, and its tasks that have not started end
# cancelled ("not run: ..."): nothing counts them as waiting work any more. A restart runs them again.
STOP = ("scheduled", "running")
UNSTARTED = ("pending",)


def task_row(job_id: str, pos: int, t: TaskSpec, queue: str, priority: int, now: float, ready: bool,
             parent_id: str | None = None, scope: dict[str, Any] | None = None,
             spec: dict[str, Any] | None = None) -> Row:
    """``spec``: the task's stored form when the caller has it already (its job's, dumped whole)."""
    res = t.resources.resolve()
    kind = workflow.kind_of(t)
    spec = dump_spec(t) if spec is None else spec
    return {
        # A name made from its composite's ('outer[3].item[12]') is cut to fit the column.
        "id": new_id(), "job_id": job_id, "position": pos, "name": str(t.name)[:200], "spec": spec,
        # A queue that is an expression is known once evaluated; until then the task counts in the job's.
        "queue": t.queue if t.queue and not expr.has_expr(t.queue) else queue, "priority": priority,
        "runtime": "docker" if t.image else "process",
        "cpu": res.cpu, "memory": res.memory, "disk": res.disk, "gpu": res.gpu,
        "node_selector": t.node_selector, "state": TaskState.PENDING.value,
        "ready_at": now if ready else None, "attempts": 0, "lost_count": 0, "created_at": now,
        "kind": kind, "parent_id": parent_id,
        # Evaluated tasks keep what was submitted, so that a restart evaluates it again.
        "template": {"spec": spec, "scope": scope} if kind == "template" or scope or workflow.needs_eval(t) else None,
    }


def job_row(spec: JobSpec, now: float, job_id: str, parent: Row | None = None, root: str | None = None,
            owner: tuple[str, str | None] | None = None) -> Row:
    """``parent``: the task an attached subjob runs for; ``root``: the job at the top of the tree a subjob
    (attached or detached) was spawned from, whose size limit it counts against; ``owner``: its namespace
    and creator (default: the caller of the request being served, corral.auth.context)."""
    namespace, created_by = owner or context.stamp()
    return {"namespace": namespace, "created_by": created_by,
            "id": job_id, "name": spec.name, "queue": spec.queue, "priority": spec.priority,
            "tags": spec.tags, "search": search_text(spec.name, spec.tags), "spec": dump_spec(spec),
            "state": JobState.PENDING.value, "task_count": len(spec.tasks), "created_at": now,
            "error": None, "started_at": None, "finished_at": None,
            "parent_job_id": parent["job_id"] if parent else None, "parent_task_id": parent["id"] if parent else None,
            "root_job_id": root,
            "auto_delete_after": None if spec.auto_delete is None else parse_duration(spec.auto_delete.after),
            "hook_marks": {} if spec.webhooks else None, "hooks_done": False if spec.webhooks else None}


def search_text(name: str, tags: Sequence[str]) -> str:
    return name.lower() + "\x1e\x1f" + "".join(t.lower() + "\x1f" for t in tags)


def job_rows(spec: JobSpec, now: float, job_id: str | None = None, parent: Row | None = None,
             root: str | None = None, owner: tuple[str, str | None] | None = None) -> tuple[Row, list[Row]]:
    """The rows of a new job and its tasks, for ``Tx.insert_jobs``."""
    job_id = job_id or new_id()
    job = job_row(spec, now, job_id, parent, root, owner)
    # A chain: only the first task is ready. A graph (depends_on): every task that waits for none.
    dag = spec.is_dag()
    stored = job["spec"]["tasks"]  # each task's stored form, as the job's holds it (not dumped twice)
    return job, [task_row(job_id, i, t, spec.queue, spec.priority, now, not t.depends_on if dag else i == 0,
                          spec=stored[i])
                 for i, t in enumerate(spec.tasks)]


def dag_ready(tasks: Sequence[Row]) -> tuple[list[str], bool]:
    """For the top-level tasks of one graph job: the ids of the waiting tasks whose dependencies have all
    completed, and whether every task has completed (or was skipped)."""
    done = {t["name"] for t in tasks if t["state"] in DONE_TASK}
    ready = [t["id"] for t in tasks if t["state"] == TaskState.PENDING.value and t["ready_at"] is None
             and all(d in done for d in (t["spec"] or {}).get("depends_on") or ())]
    return ready, len(done) == len(tasks)


@dataclass
class Opening:
    """What evaluating one ready task decided, written later if the task is still as it was read:
    skip it, make it a 'run' task (``values``), open it into ``children`` or a subjob (``job``), fail it or
    cancel it (``error``). ``size``: the task rows opening it adds."""

    row: Row
    action: str  # skip | evaluate | open | subjob | fail | cancel
    error: str | None = None
    values: Row | None = None
    children: list[Row] = field(default_factory=list)
    job: tuple[Row, list[Row]] | None = None
    detached: bool = False
    size: int = 0
    header: Row = field(default_factory=dict)  # a composite's evaluated name, var, queue: written as it opens


class Flow:
    """The workflow steps the coordinator runs inside its transactions. It holds no state: the steps that
    cancel work return the nodes that must stop it, for the coordinator to wake. Every task it opens or
    evaluates passes the operator's policy first (a task that does not fails, with the reason)."""

    def __init__(self, policy: Policy | None = None, max_tasks: int = MAX_TASKS_PER_JOB) -> None:
        self.policy = policy or Policy()
        self.max_tasks = max_tasks

    # -- context --------------------------------------------------------------------------------
    @staticmethod
    def context(tx: Tx, job: Row, scope: dict[str, Any] | None) -> dict[str, Any]:
        # A task with ``pre``/``post`` opens into a wrapper and its main task, both named by the same ``var``;
        # the wrapper records no output of its own, so a recorded output wins over none, whatever the order
        # the store returns the rows in (it has none: the index it reads along decides).
        outputs: dict[str, str] = {}
        for sp, out in tx.outputs_of_job(job["id"]):
            if sp.get("var") and (out is not None or sp["var"] not in outputs):
                outputs[sp["var"]] = out or ""
        return workflow.context(job["spec"], job, outputs, scope)

    # -- opening ready composite and template tasks ---------------------------------------------
    def open_ready(self, tx: Tx, now: float, limit: int = 500) -> set[str]:
        """Evaluate or open every ready task that is not a plain 'run', in one transaction (for callers that
        hold one; the scheduler uses ``read_ready``, ``decide`` and ``apply`` to evaluate outside it)."""
        return self.apply(tx, self.decide(*self.read_ready(tx, now, limit), now), now)

    def read_ready(self, tx: Tx, now: float, limit: int = 500) -> tuple[list[Row], dict[str, Row],
                                                                          dict[str, dict[str, Any]]]:
        """The ready tasks that are not a plain 'run', their jobs, and what the expressions of each job see."""
        rows = tx.ready_composites(now, limit)
        if not rows:
            return [], {}, {}
        jobs = {j["id"]: j for j in tx.jobs_by_ids({r["job_id"] for r in rows})}
        contexts = {j["id"]: self.context(tx, j, None) for j in jobs.values()
                    if j["state"] not in TERMINAL_JOB}
        return rows, jobs, contexts

    def decide(self, rows: list[Row], jobs: dict[str, Row], contexts: dict[str, dict[str, Any]], now: float,
               budget: float = PASS_BUDGET) -> list[Opening]:
        """Evaluate the ready tasks, holding no transaction: all of one task's expressions under one budget
        (``TASK_BUDGET``), and all of them for about ``budget`` seconds (the rest wait for the next pass).
        Any failure of one evaluation, MemoryError and RecursionError included, fails that task alone."""
        out: list[Opening] = []
        deadline = time.monotonic() + budget
        for r in rows:
            if out and time.monotonic() > deadline:
                break
            job = jobs.get(r["job_id"])
            if job is None or job["state"] in TERMINAL_JOB:
                state = job["state"] if job else "gone"
                out.append(Opening(r, "cancel", error=f"not run: the job is {state}"))
                continue
            scope = (r["template"] or {}).get("scope")
            ctx = {**contexts[r["job_id"]], **(scope or {})}
            spec = (r["template"] or {}).get("spec") or r["spec"]
            try:  # one deadline for all of the task's expressions: 1,000 slow env values cannot add up
                with expr.budget(TASK_BUDGET, f"evaluating task '{r['name']}'"):
                    out.append(self._decide(r, job, spec, ctx, scope, now))
            except (expr.ExprError, PolicyError) as e:
                out.append(Opening(r, "fail", error=str(e)))
            except Exception as e:  # noqa: BLE001 - whatever one evaluation raises fails its task, not the pass
                log.warning("task %s: its evaluation failed: %s: %s", r["id"], type(e).__name__, e)
                out.append(Opening(r, "fail", error=f"{r['name']}: the evaluation failed: {type(e).__name__}: "
                                                    f"{str(e)[:500]}"))
        return out

    def _decide(self, r: Row, job: Row, spec: dict[str, Any], ctx: dict[str, Any], scope: dict[str, Any] | None,
                now: float) -> Opening:
        if spec.get("if") is not None and not workflow.is_true(spec["if"], ctx, f"{r['name']}.if"):
            return Opening(r, "skip")
        if r["kind"] == "template":
            return Opening(r, "evaluate", values=self._evaluate(r, spec, ctx))
        header: Row = {}
        evaluated = workflow.render_header(spec, ctx, str(r["name"]))
        if evaluated != spec:
            spec = evaluated
            header = {"spec": spec, "name": str(spec.get("name") or r["name"])[:200],
                      "queue": spec.get("queue") or r["queue"]}
        name = str(header.get("name") or r["name"])
        if r["kind"] == "subjob":
            sub = workflow.render_subjob(spec["subjob"], ctx, (job["spec"] or {}).get("secrets") or {},
                                         f"{name}.subjob")
            detached = bool(sub.pop("detached", False))
            sub.setdefault("queue", job["spec"].get("queue", "default"))
            sub.setdefault("priority", job["spec"].get("priority", 0))
            sub_spec = JobSpec.model_validate(sub)
            self.policy.check(sub_spec)
            # Detached or not, it counts against the size limit of the tree it was spawned from.
            sub_job, sub_tasks = job_rows(sub_spec, now, parent=None if detached else r,
                                          root=job.get("root_job_id") or job["id"],
                                          owner=(job.get("namespace") or "default", job.get("created_by")))
            return Opening(r, "subjob", job=(sub_job, sub_tasks), detached=detached,
                           size=workflow.rows_of_job(sub_spec), header=header)
        kids, width = workflow.children(spec, r["kind"], name, ctx, scope)
        rows, size = [], 0
        each_rows: int | None = None  # an each's copies are one task: counted once
        first: TaskSpec | None = None  # and validated once (they differ only in their names)
        for i, (child, child_scope) in enumerate(kids):
            self.policy.check_task(child, f"{r['name']}[{i}]")
            if r["kind"] == "each" and first is not None:
                t = first.model_copy(update={"name": child.get("name")})
            else:
                t = first = TaskSpec.model_validate(child)
            if t.name is None:
                t.name = f"{r['name']}[{i}]"
            if r["kind"] != "each" or each_rows is None:
                each_rows = workflow.rows_of(t, {})
            size += each_rows
            if size > self.max_tasks:
                raise expr.ExprError(self._too_big(r, size))
            row = task_row(r["job_id"], i, t, r["queue"], r["priority"], now, i < width, r["id"], child_scope)
            row["job_seq"] = r["job_seq"]
            rows.append(row)
        return Opening(r, "open", children=rows, size=size, header=header)

    def _too_big(self, r: Row, size: int, have: int | None = None) -> str:
        held = "" if have is None else f" to the {have:,} it holds"
        return (f"task '{r['name']}' would add {size:,} tasks{held}: a job holds at most {self.max_tasks:,} "
                "tasks across all its levels (corral server --max-tasks-per-job)")

    def apply(self, tx: Tx, openings: Sequence[Opening], now: float) -> set[str]:
        """Write what ``decide`` found, for each task still pending as it was read (a compare-and-set on
        its state and ready_at: a cancel or restart in between wins). Returns the nodes that must stop
        work."""
        current = tx.pending_ready_at([o.row["id"] for o in openings], lock=True)
        nodes: set[str] = set()
        done: list[Row] = []
        evaluated: list[Row] = []
        for o in openings:
            r = o.row
            if r["id"] not in current or current[r["id"]] != r["ready_at"]:
                continue  # cancelled, restarted or opened since it was read
            if o.action in ("open", "subjob"):
                have = tx.count_tasks_of_jobs(tx.job_tree(r["job_id"]))
                if have + o.size > self.max_tasks:
                    o = Opening(r, "fail", error=self._too_big(r, o.size, have))
            if o.action == "cancel":
                tx.cas_task(r["id"], ["pending"], state=TaskState.CANCELLED.value, finished_at=now, reason=None,
                            error=o.error)
            elif o.action == "skip":
                if tx.cas_task(r["id"], ["pending"], state=TaskState.SKIPPED.value, finished_at=now,
                               reason=None, error=None):
                    done.append(r)
            elif o.action == "evaluate":
                assert o.values is not None
                evaluated.append(o.values)
            elif o.action == "open":
                done += self._open(tx, r, o.children, now, o.header)
            elif o.action == "subjob":
                assert o.job is not None
                done += self._open_subjob(tx, r, o.job, o.detached, now, o.header)
            elif tx.cas_task(r["id"], ["pending"], state=TaskState.FAILED.value, finished_at=now,
                             error=o.error, reason=None):
                nodes |= self.fail(tx, r, f"task '{r['name']}' failed: {o.error}", now)
        tx.cas_many("tasks", ["pending"], evaluated)  # one statement for all: an each opens many at once
        if done:
            self.advance(tx, done, now)
        return nodes

    def _evaluate(self, r: Row, spec: dict[str, Any], ctx: dict[str, Any]) -> Row:
        """The row change that makes a template a 'run' task with its expressions evaluated (and checked
        against the policy: what an expression gave is checked as what was submitted)."""
        rendered = workflow.render_task(spec, ctx, str(r["name"]))  # its size bounded while it renders
        try:  # what the expressions gave is held to every bound of a submitted task (sizes, text, image names)
            # (not its name, which no expression sets: one opened from a composite may be longer than a given one)
            TaskSpec.model_validate({k: v for k, v in rendered.items() if k != "name"})
        except ValueError as e:
            raise expr.ExprError(f"{r['name']}: the evaluated task is not valid: {str(e)[:2000]}") from None
        self.policy.check_task(rendered, str(r["name"]))
        # What an expression filled from a secret is sealed in the store like the secret itself.
        rendered = sealing.mark(rendered, [v for v in (ctx.get("secrets") or {}).values() if isinstance(v, str)])
        return {"id": r["id"], "kind": "run", "spec": rendered,
                "runtime": "docker" if rendered.get("image") else "process",
                "name": str(rendered.get("name") or r["name"])[:200], "queue": rendered.get("queue") or r["queue"]}

    @staticmethod
    def _open(tx: Tx, r: Row, rows: list[Row], now: float, header: Row) -> list[Row]:
        """Open a composite into its children; returns it when it finished at once (an empty each)."""
        if not tx.cas_task(r["id"], ["pending"], state=TaskState.RUNNING.value, started_at=now, reason=None,
                           **header):
            return []
        tx.jobs_to_state([r["job_id"]], ["pending", "scheduled"], state=JobState.RUNNING.value)
        tx.jobs_started({r["job_id"]: now})
        if not rows:  # each over an empty list
            tx.cas_task(r["id"], ["running"], state=TaskState.COMPLETED.value, finished_at=now)
            return [r]
        tx.insert_tasks(rows)
        return []

    @staticmethod
    def _open_subjob(tx: Tx, r: Row, sub: tuple[Row, list[Row]], detached: bool, now: float,
                     header: Row) -> list[Row]:
        sub_job, sub_tasks = sub
        if not tx.cas_task(r["id"], ["pending"], state=TaskState.RUNNING.value, started_at=now, reason=None,
                           subjob_id=sub_job["id"], **header):
            return []
        tx.insert_jobs([(sub_job, sub_tasks)])
        tx.jobs_to_state([r["job_id"]], ["pending", "scheduled"], state=JobState.RUNNING.value)
        tx.jobs_started({r["job_id"]: now})
        if detached:
            tx.cas_task(r["id"], ["running"], state=TaskState.COMPLETED.value, finished_at=now)
            return [r]
        return []

    # -- advancing ------------------------------------------------------------------------------
    def advance(self, tx: Tx, done: Sequence[Row], now: float) -> None:
        """Tasks completed or were skipped: start what waited for them, and finish every scope (and job)
        that has nothing left. ``done`` rows need id, job_id, parent_id, position and dag."""
        queue = list(done)
        while queue:
            batch, queue = queue, []
            finished_jobs: list[str] = []
            chain = [t for t in batch if t.get("parent_id") is None and not t.get("dag")]
            if chain:
                waiting = {(w["job_id"], w["position"]): w["id"]
                           for w in tx.waiting_tasks_of_jobs({t["job_id"] for t in chain})}
                nxt = []
                for t in chain:
                    n = waiting.get((t["job_id"], t["position"] + 1))
                    if n is not None:
                        nxt.append({"id": n, "ready_at": now})
                    else:
                        finished_jobs.append(t["job_id"])
                tx.cas_many("tasks", ["pending"], nxt)
            graphs = {t["job_id"] for t in batch if t.get("parent_id") is None and t.get("dag")}
            if graphs:
                by_job: dict[str, list[Row]] = {j: [] for j in graphs}
                for t in tx.tasks_of_jobs(graphs):
                    if t["parent_id"] is None:
                        by_job[t["job_id"]].append(t)
                nxt = []
                for job_id, tasks in by_job.items():
                    ready, complete = dag_ready(tasks)
                    nxt += [{"id": i, "ready_at": now} for i in ready]
                    if complete:
                        finished_jobs.append(job_id)
                tx.cas_many("tasks", ["pending"], nxt)
            scopes = Counter((t["job_id"], t["parent_id"]) for t in batch if t.get("parent_id") is not None)
            for (job_id, parent_id), k in scopes.items():
                nxt_ids = tx.next_waiting(job_id, parent_id, k)
                tx.cas_many("tasks", ["pending"], [{"id": i, "ready_at": now} for i in nxt_ids])
                if len(nxt_ids) < k and tx.count_unfinished(job_id, parent_id) == 0:
                    queue += self._complete_task(tx, parent_id, now, None)
            if finished_jobs:
                tx.jobs_to_state(finished_jobs, NON_TERMINAL_JOB, state=JobState.COMPLETED.value, finished_at=now)
                queue += self._after_jobs_completed(tx, finished_jobs, now)

    @staticmethod
    def _complete_task(tx: Tx, task_id: str, now: float, output: str | None) -> list[Row]:
        values: dict[str, Any] = {"state": TaskState.COMPLETED.value, "finished_at": now, "progress": 100.0}
        if output is not None:
            values["output"] = output
        if not tx.cas_task(task_id, ["running"], **values):
            return []
        return tx.tasks_by_ids([task_id], brief=True)

    def _after_jobs_completed(self, tx: Tx, job_ids: list[str], now: float) -> list[Row]:
        """Evaluate completed jobs' outputs, and complete the tasks that ran them as subjobs."""
        out: list[Row] = []
        for j in tx.jobs_with_followup(job_ids):
            if j["state"] != JobState.COMPLETED.value:
                continue
            value = None
            if j["spec"].get("output"):
                try:
                    value = expr.render(j["spec"]["output"], self.context(tx, j, None), "output")
                except expr.ExprError as e:
                    # Its tasks all completed: the job stays completed (a finished state is final), and
                    # says why it has no output.
                    tx.cas_job(j["id"], [JobState.COMPLETED.value], error=f"the job's output could not be "
                                                                           f"evaluated: {e}")
                else:
                    tx.cas_job(j["id"], [JobState.COMPLETED.value], output=value)
            if j["parent_task_id"]:
                out += self._complete_task(tx, j["parent_task_id"], now, value)
        return out

    # -- failing and cancelling -----------------------------------------------------------------
    def fail(self, tx: Tx, task: Row, error: str, now: float, state: str = "failed") -> set[str]:
        """A task of the job failed (or was cancelled or lost) for good: the composites above it fail,
        the job fails, its other running work stops, and a job that is a subjob fails its parent task.
        Returns the nodes that must stop work."""
        final = JobState.CANCELLED.value if state == "cancelled" else JobState.FAILED.value
        parent_id = task.get("parent_id")
        while parent_id is not None:
            tx.cas_task(parent_id, ["running"], state=TaskState.FAILED.value, finished_at=now, error=error)
            parent = tx.task(parent_id)
            parent_id = parent["parent_id"] if parent else None
        if not tx.cas_job(task["job_id"], NON_TERMINAL_JOB, state=final, finished_at=now, error=error):
            return set()
        nodes = self.cancel_tasks(tx, task["job_id"], now, f"stopped: {error}", STOP)
        tx.cas_tasks_of_job(task["job_id"], UNSTARTED, state=TaskState.CANCELLED.value, finished_at=now,
                            reason=None, error=f"not run: {error}")
        return nodes | self._subjob_ended(tx, task["job_id"], now)

    def jobs_ended(self, tx: Tx, job_ids: Sequence[str], now: float) -> set[str]:
        """Jobs that just failed or were cancelled: if any is a subjob, its parent task fails. Returns the
        nodes that must stop work."""
        nodes: set[str] = set()
        for j in tx.jobs_with_followup(job_ids):
            nodes |= self._subjob_ended(tx, j["id"], now)
        return nodes

    def _subjob_ended(self, tx: Tx, job_id: str, now: float) -> set[str]:
        job = tx.job(job_id)
        if job is None or not job["parent_task_id"] or job["state"] == JobState.COMPLETED.value:
            return set()
        parent = tx.task(job["parent_task_id"])
        if parent is None:
            return set()
        error = f"subjob '{job['name']}' {job['state']}: {job['error'] or ''}".rstrip(": ")
        if tx.cas_task(parent["id"], ["running"], state=TaskState.FAILED.value, finished_at=now, error=error):
            return self.fail(tx, parent, f"task '{parent['name']}' failed: {error}", now)
        return set()

    def cancel_tasks(self, tx: Tx, job_id: str, now: float, reason: str,
                     states: Sequence[str] = ("pending", "scheduled", "running")) -> set[str]:
        """Cancel the job's tasks in ``states``, their active executions, and the job's attached subjobs;
        returns the nodes that must stop them."""
        tx.cas_tasks_of_job(job_id, list(states), state=TaskState.CANCELLED.value, finished_at=now, error=reason)
        nodes: set[str] = set()
        for ex in tx.executions_of_job(job_id):
            if ex["state"] in ACTIVE and tx.cas_execution(ex["id"], ACTIVE, state="cancelled",
                                                          finished_at=now, error=reason):
                nodes.add(ex["node_id"])
        for sub in tx.child_jobs(job_id, NON_TERMINAL_JOB):
            if tx.cas_job(sub, NON_TERMINAL_JOB, state=JobState.CANCELLED.value, finished_at=now,
                          error=f"its parent job stopped: {reason}"):
                nodes |= self.cancel_tasks(tx, sub, now, reason)
        return nodes

    # -- restart --------------------------------------------------------------------------------
    @staticmethod
    def reset_for_restart(tx: Tx, tasks: list[Row], now: float) -> list[Row]:
        """Tasks opened by composites that did not complete go (they open again); evaluated tasks go back
        to what was submitted. Returns the job's top-level tasks, reset where they did not complete."""
        parent = {t["id"]: t["parent_id"] for t in tasks}
        by_id = {t["id"]: t for t in tasks}

        def root(tid: str) -> Row:
            while parent[tid] is not None:
                tid = parent[tid]
            return by_id[tid]

        drop = [t["id"] for t in tasks if t["parent_id"] is not None and root(t["id"])["state"] not in DONE_TASK]
        tx.delete_tasks(drop)
        top = [t for t in tasks if t["parent_id"] is None]
        for t in top:
            if t["state"] in DONE_TASK:
                continue
            values: dict[str, Any] = {}
            if t["template"]:
                values = {"spec": t["template"]["spec"], "kind": "template" if t["kind"] in ("run", "template")
                          else t["kind"]}
            tx.cas_task(t["id"], [s for s in (TaskState.FAILED, TaskState.CANCELLED, TaskState.LOST,
                                              TaskState.PENDING, TaskState.SKIPPED, TaskState.RUNNING)],
                        state=TaskState.PENDING.value, ready_at=None, attempts=0, lost_count=0, reason=None,
                        node_id=None, execution_id=None, exit_code=None, error=None, started_at=None,
                        finished_at=None, output=None, progress=None, subjob_id=None, **values)
            t.update(state=TaskState.PENDING.value, ready_at=None)
        return top
