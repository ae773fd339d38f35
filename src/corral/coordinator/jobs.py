"""Job commands: submit (with its admission checks and idempotency keys), get, cancel, restart, delete.

Each public method is one transaction over the store; every state change a compare-and-set.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from corral.coordinator.errors import Conflict, Invalid, NotFound, Overloaded
from corral.coordinator.flow import DONE_TASK, dag_ready, job_rows
from corral.coordinator.idempotency import HEADER as IDEM_HEADER
from corral.coordinator.idempotency import TTL as IDEM_TTL
from corral.coordinator.idempotency import IdemKey, fingerprint
from corral.coordinator.part import Part
from corral.coordinator.policy import PolicyError
from corral.domain import workflow
from corral.domain.spec import JobSpec, dump_spec
from corral.domain.states import TERMINAL_JOB_STATES, JobState, job_sources
from corral.store.sql import DuplicateKey, Row, Tx

if TYPE_CHECKING:
    from corral.coordinator.service import Coordinator

TERMINAL_JOB = [s.value for s in TERMINAL_JOB_STATES]


class Jobs(Part):
    """What a user does with jobs."""

    def __init__(self, coord: Coordinator) -> None:
        super().__init__(coord)
        self._purged_at = 0.0  # when expired idempotency keys were last deleted

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
        self.coord.pending_tasks += adding
        self.coord.kick()
        return [job for job, _ in items]

    def admit(self, *specs: JobSpec) -> int:
        """The one validation every way a job enters goes through before it is created (submitted now,
        a schedule created, a schedule's tick fired): its size (``check_size``), the operator's policy
        (``check_policy``), both ``Invalid``, and back-pressure (``Overloaded``). Returns the task rows the
        jobs add."""
        adding = sum(self.check_size(spec) for spec in specs)
        limit = self.settings.max_pending_tasks
        if self.coord.pending_tasks + adding > limit:
            # Backpressure: refuse before accepting what cannot be held, rather than after.
            raise Overloaded(f"{self.coord.pending_tasks} tasks are waiting, and this server holds at most {limit}: "
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
        self.coord.on_nodes_changed(nodes)
        self.coord.kick()
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
        self.coord.kick()
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
