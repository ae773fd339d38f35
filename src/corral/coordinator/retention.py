"""autoDelete: a finished job whose spec says ``autoDelete: {after: 1h}`` is deleted, with its tasks,
executions and logs, once ``after`` has passed since it finished.

Called by the reaper loop once a second; each pass deletes at most ``limit`` jobs, oldest first, in small
transactions. A job whose webhooks are still being delivered waits for them, so its last state change is
not lost to the deletion: ``after`` is the earliest time, not an exact one.

--retain (``delete_retired``): every job finished longer ago than the server's retention is deleted the
same way, by a loop of its own on the leader (corral.coordinator.loops), paced so that a large backlog does
not stall the API.
"""

from __future__ import annotations

import logging
import threading
import time

from corral.domain.states import TERMINAL_JOB_STATES
from corral.store import hooks as sql
from corral.store.sql import Store, chunks

log = logging.getLogger("corral.coordinator")
TERMINAL = sorted(s.value for s in TERMINAL_JOB_STATES)
BATCH = 100  # jobs per transaction


def delete_expired(store: Store, now: float | None = None, limit: int = 500) -> int:
    """Delete finished jobs past their autoDelete time; returns how many went."""
    now = time.time() if now is None else now
    with store.read() as tx:
        ids = sql.expired_jobs(tx, now, TERMINAL, limit)
    deleted = 0
    for part in chunks(ids, BATCH):
        with store.transaction() as tx:
            # delete_job checks again that the job is finished: one restarted meanwhile stays.
            deleted += sum(tx.delete_job(job_id, TERMINAL) for job_id in part)
    if deleted:
        log.info("autoDelete: deleted %d finished job(s)", deleted)
    return deleted


def delete_retired(store: Store, retain: float, stop: threading.Event, now: float | None = None,
                   limit: int = 5000, batch: int = BATCH) -> int:
    """--retain: delete the jobs that finished more than ``retain`` seconds ago (oldest first), ``batch`` jobs
    a transaction and at most ``limit`` a pass. After each batch it waits as long as the batch took, so that
    a backlog (the first start with --retain on a long history) is worked off at no more than half of one
    core's time and of the database's writes, and the API and the scheduling loop keep theirs. Returns how
    many jobs went."""
    cutoff = (time.time() if now is None else now) - retain
    deleted = 0
    while deleted < limit and not stop.is_set():
        t0 = time.monotonic()
        with store.read() as tx:
            ids = sql.retired_jobs(tx, cutoff, TERMINAL, min(batch, limit - deleted))
        if not ids:
            break
        with store.transaction() as tx:
            deleted += tx.delete_jobs(ids, TERMINAL)  # checks again that each is finished
        if len(ids) < batch:
            break
        stop.wait(time.monotonic() - t0)
    if deleted:
        log.info("retention: deleted %d job(s) finished more than %.0f s ago", deleted, retain)
    return deleted
