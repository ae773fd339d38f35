"""Scheduled (cron) jobs: create, list, pause, resume, delete, and the firing pass.

Exactly once per tick, with any number of coordinators on one database: a tick is claimed by a
compare-and-set on the schedule's ``next_run_at`` (``WHERE next_run_at = :due AND state = 'active'``),
and the job is inserted in the same transaction as that claim. A coordinator that loses the race changes
no row and creates nothing; one that fails after the claim rolls the claim back with the job.

Missed ticks (every coordinator down, or a schedule paused and resumed) are not replayed in a burst: the
pass fires once, for the latest tick that is due, and moves ``next_run_at`` to the first tick after now.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from corral.auth import context
from corral.coordinator.errors import Conflict, Invalid, NotFound, Overloaded
from corral.coordinator.idempotency import HEADER, IdemKey, fingerprint
from corral.coordinator.service import Coordinator, job_rows
from corral.domain import schedule as cron
from corral.domain.ids import new_id
from corral.domain.spec import JobSpec, dump_spec
from corral.domain.states import JobState, TaskState
from corral.store.sql import Row

log = logging.getLogger("corral.coordinator")
ACTIVE, PAUSED = "active", "paused"


class Schedules:
    def __init__(self, coord: Coordinator) -> None:
        self.coord = coord
        self.store = coord.store

    def create(self, expr: str, spec: JobSpec, name: str | None = None, idem: IdemKey | None = None) -> Row:
        """``expr`` must be valid (``corral.domain.schedule.validate``); the API checks it first. With an
        idempotency key, a schedule already created with it (on the same route) is returned instead."""
        now = time.time()
        expr = cron.validate(expr)
        mark = fingerprint({"cron": expr, "name": name, "job": dump_spec(spec)}) if idem is not None else ""
        if idem is not None and (done := self.coord.replay(idem, mark, now)) is not None:
            return self._created(done, idem)
        self.coord.admit(spec)  # its size, the operator's policy and back-pressure, as for a job submitted now
        row = {"id": new_id(), "name": name or spec.name, "cron": expr, "spec": dump_spec(spec),
               "state": ACTIVE, "next_run_at": cron.next_after(expr, now), "last_run_at": None,
               "last_job_id": None, "created_at": now}
        row["namespace"], row["created_by"] = context.stamp()
        earlier = self.coord.insert_once(idem, mark, {"schedule": row["id"]}, now, lambda tx: tx.insert_schedule(row))
        if earlier is not None:
            assert idem is not None
            return self._created(earlier, idem)
        return row

    def _created(self, done: dict[str, Any], idem: IdemKey) -> Row:
        with self.store.read() as tx:
            row = tx.schedule(str(done.get("schedule")))
        if row is None:
            raise Conflict(f"{HEADER} '{idem.key}' was used for a schedule that is gone, or for a job; a new "
                           "request needs a new key")
        return row

    def all(self) -> list[Row]:
        with self.store.read() as tx:
            return tx.schedules()

    def get(self, schedule_id: str) -> Row:
        with self.store.read() as tx:
            row = tx.schedule(schedule_id)
        if row is None:
            raise NotFound(f"no schedule with id '{schedule_id}'")
        return row

    def pause(self, schedule_id: str) -> Row:
        return self._move(schedule_id, ACTIVE, PAUSED, {})

    def resume(self, schedule_id: str) -> Row:
        """Back to active; the next tick is counted from now, so ticks missed while paused never fire."""
        row = self.get(schedule_id)
        return self._move(schedule_id, PAUSED, ACTIVE, {"next_run_at": cron.next_after(row["cron"], time.time())})

    def _move(self, schedule_id: str, expected: str, to: str, values: dict[str, Any]) -> Row:
        with self.store.transaction() as tx:
            if not tx.cas_schedule(schedule_id, expected, state=to, **values):
                row = tx.schedule(schedule_id)
                if row is None:
                    raise NotFound(f"no schedule with id '{schedule_id}'")
                raise Conflict(f"schedule '{schedule_id}' is {row['state']}, not {expected}")
            row = tx.schedule(schedule_id)
        assert row is not None
        return row

    def delete(self, schedule_id: str) -> None:
        """Remove the schedule; the jobs it created stay."""
        with self.store.transaction() as tx:
            if not tx.delete_schedule(schedule_id):
                raise NotFound(f"no schedule with id '{schedule_id}'")

    def fire_due(self, now: float | None = None) -> list[str]:
        """One firing pass: a job for each due tick this coordinator wins. Returns the new jobs' ids."""
        now = time.time() if now is None else now
        with self.store.read() as tx:
            due = tx.due_schedules(now)
        fired: list[str] = []
        for sch in due:
            try:
                job_id = self._fire(sch, now)
            except Exception:
                log.exception("schedule %s: firing failed; trying again on the next pass", sch["id"])
                continue
            if job_id is not None:
                fired.append(job_id)
        if fired:
            self.coord.stats["jobs_submitted"] += len(fired)
            self.coord.kick()
        return fired

    def _fire(self, sch: Row, now: float) -> str | None:
        tick, nxt = cron.catch_up(sch["cron"], float(sch["next_run_at"]), now)
        spec = JobSpec.model_validate(sch["spec"])
        job, tasks = job_rows(spec, now, owner=(sch.get("namespace") or "default", sch.get("created_by")))
        adding = 0
        try:  # checked again: the policy, the limits and the load may have changed since it was created
            adding = self.coord.admit(spec)
            refused = None
        except Invalid as e:
            refused = f"refused by this server's policy: {e}"
        except Overloaded as e:
            refused = f"refused: the server is overloaded: {e}"
        if refused:
            # The tick still makes its job, failed with the reason, so that the refusal is seen.
            job.update(state=JobState.FAILED.value, error=refused, finished_at=now)
            for t in tasks:
                t.update(state=TaskState.CANCELLED.value, ready_at=None, finished_at=now, error=refused)
        with self.store.transaction() as tx:
            # The claim comes first: on SQLite it takes the write lock before anything is read.
            if not tx.claim_tick(sch["id"], sch["next_run_at"], tick, nxt, job["id"]):
                return None  # another coordinator fired this tick, or it was paused or deleted
            tx.insert_jobs([(job, tasks)])
        if refused:
            log.warning("schedule %s fired for %s: job %s %s", sch["id"], tick, job["id"], refused)
            return str(job["id"])
        self.coord.pending_tasks += adding
        log.info("schedule %s fired for %s: job %s", sch["id"], tick, job["id"])
        return str(job["id"])
