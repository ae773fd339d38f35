"""autoDelete: a finished job whose spec says ``autoDelete: {after: 1h}`` is deleted, with its tasks,
executions and logs, once ``after`` has passed since it finished.

Called by the reaper loop once a second; each pass deletes at most ``limit`` jobs, oldest first, in small
transactions. A job whose webhooks are still being delivered waits for them, so its last state change is
not lost to the deletion: ``after`` is the earliest time, not an exact one.
"""

from __future__ import annotations

import logging
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
