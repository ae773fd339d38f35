"""Job commands: submit (with its admission checks and idempotency keys), get, cancel, restart, delete.

Each public method is one transaction over the store; every state change a compare-and-set.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from corral.auth import context
from corral.coordinator.errors import Conflict, Invalid, NotFound, Overloaded
from corral.coordinator.flow import DONE_TASK, dag_ready, job_rows
from corral.coordinator.idempotency import HEADER as IDEM_HEADER
from corral.coordinator.idempotency import TTL as IDEM_TTL
from corral.coordinator.idempotency import IdemKey, fingerprint
from corral.coordinator.part import Part
from corral.coordinator.policy import PolicyError, escalations_of
from corral.domain import workflow
from corral.domain.spec import JobSpec, dump_spec
from corral.domain.states import TERMINAL_JOB_STATES, JobState, job_sources
from corral.store.sql import DuplicateKey, Row, Tx

if TYPE_CHECKING:
    from corral.coordinator.service import Coordinator

TERMINAL_JOB = [s.value for s in TERMINAL_JOB_STATES]
GROUP_MAX_JOBS = 1000  # jobs one group commit writes at most (a batch request may bring that many alone)


@dataclass
class _Waiting:
    """Submissions waiting for the next group commit: their rows, the task rows they add, their future."""

    items: list[tuple[Row, list[Row]]]
    adding: int
    future: asyncio.Future[None] = field(repr=False)


class GroupCommit:
    """Concurrent submissions share one transaction and one sync of the store's log (group commit).

    A submission waits in the event loop's queue; one writer at a time takes everything queued (up to
    ``GROUP_MAX_JOBS`` jobs), writes it in one durable transaction in a worker thread, and answers every
    submission in it only after the commit. While it writes, the next group gathers: the busier the
    server, the bigger the groups, and one thread hop, one commit and one scheduler kick serve them all.
    A group that fails is written again one submission at a time, so one bad submission fails alone."""

    def __init__(self, jobs: Jobs) -> None:
        self._jobs = jobs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: list[_Waiting] = []
        self._writer: asyncio.Task[None] | None = None

    async def add(self, items: list[tuple[Row, list[Row]]], adding: int) -> None:
        """Returns once ``items`` are committed (raises what writing them raised)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # the first call, or a new event loop (tests): start afresh
            self._loop, self._queue, self._writer = loop, [], None
        waiting = _Waiting(items, adding, loop.create_future())
        self._queue.append(waiting)
        if self._writer is None:
            self._writer = loop.create_task(self._write())
        await waiting.future

    async def _write(self) -> None:
        try:
            while self._queue:
                group: list[_Waiting] = []
                size = 0
                while self._queue and (not group or size + len(self._queue[0].items) <= GROUP_MAX_JOBS):
                    size += len(self._queue[0].items)
                    group.append(self._queue.pop(0))
                try:
                    errors = await asyncio.to_thread(self._jobs.commit_group, [(w.items, w.adding) for w in group])
                except BaseException as e:  # cancelled with the loop: nobody is answered with a success
                    errors = [e] * len(group)
                    if not isinstance(e, Exception):
                        for w in group:
                            w.future.cancel()
                        raise
                for w, err in zip(group, errors, strict=True):
                    if w.future.done():  # its client went away: it was written all the same
                        continue
                    if err is None:
                        w.future.set_result(None)
                    else:
                        w.future.set_exception(err)
        finally:
            self._writer = None


class Jobs(Part):
    """What a user does with jobs."""

    def __init__(self, coord: Coordinator) -> None:
        super().__init__(coord)
        self._purged_at = 0.0  # when expired idempotency keys were last deleted
        self.group = GroupCommit(self)

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

    async def submit_async(self, specs: Sequence[JobSpec], idem: IdemKey | None = None) -> list[Row]:
        """``submit_many`` for the API's event loop: the jobs are written by the next group commit (with
        other submissions made meanwhile), and returned once committed. A submission with an idempotency
        key takes ``submit_many``'s path (its key is looked up and written with its jobs)."""
        if idem is not None:
            return await asyncio.to_thread(self.submit_many, specs, idem)
        adding = self.admit(*specs)
        now = time.time()
        items = [job_rows(spec, now) for spec in specs]
        await self.group.add(items, adding)
        return [job for job, _ in items]

    def commit_group(self, group: Sequence[tuple[list[tuple[Row, list[Row]]], int]]) -> list[BaseException | None]:
        """Write the jobs of several submissions (their rows, the task rows each adds) in one durable
        transaction; if that fails, each submission in a transaction of its own. Returns, per submission,
        None (written) or what writing it raised. Kicks the scheduler once."""
        errors: list[BaseException | None] = [None] * len(group)
        try:
            with self.store.transaction(durable=True) as tx:
                tx.insert_jobs([item for items, _ in group for item in items])
        except Exception as e:
            if len(group) == 1:
                errors = [e]
            else:
                for i, (items, _) in enumerate(group):
                    try:
                        with self.store.transaction(durable=True) as tx:
                            tx.insert_jobs(items)
                    except Exception as e1:
                        errors[i] = e1
        done = [(items, adding) for (items, adding), err in zip(group, errors, strict=True) if err is None]
        if done:
            self.stats["jobs_submitted"] += sum(len(items) for items, _ in done)
            self.coord.pending_tasks += sum(adding for _, adding in done)
            self.coord.kick()
        return errors

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
            with self.store.transaction(durable=True) as tx:
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
            self.settings.policy.check(spec, context.admin())
        except PolicyError as e:
            raise Invalid(str(e)) from None
        if kinds := escalations_of(spec):
            context.note_escalation(kinds)

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
            return job_page(tx, job_id, limit, after_seq)

    async def job_page_soon(self, job_id: str, limit: int, after_seq: int = 0) -> tuple[Row, list[Row], list[Row],
                                                                                     dict[str, int], bool]:
        """``get_job_page`` for the event loop, with the published ports of its running tasks attached
        (Store.read_soon: on SQLite without a thread hop)."""
        def read(tx: Tx) -> tuple[Row, list[Row], list[Row], dict[str, int], bool]:
            page = job_page(tx, job_id, limit, after_seq)
            self.coord.nodes.attach_task_ports(page[1], page[2], tx)
            return page
        return await self.store.read_soon(read)

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
                self.settings.policy.check_stored(job["spec"], context.admin())
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


def job_page(tx: Tx, job_id: str, limit: int, after_seq: int) -> tuple[Row, list[Row], list[Row], dict[str, int],
                                                                      bool]:
    """A job, ``limit`` of its tasks after ``after_seq``, their executions, its tasks per state, and whether
    more tasks follow; NotFound for a job that is not there (or not the caller's to see)."""
    job = tx.job(job_id)
    if job is None:
        raise NotFound(f"no job with id '{job_id}'")
    tasks = tx.tasks_page(job_id, after_seq, limit + 1)
    more = len(tasks) > limit
    tasks = tasks[:limit]
    return job, tasks, tx.executions_of_tasks(t["id"] for t in tasks), tx.count_tasks_by_state(job_id), more
