"""SQL for job webhooks and autoDelete (kept apart from sql.py). Functions take a ``Tx``.

``jobs.hook_marks`` holds what was delivered so far: ``{"v": n, "job": state, "tasks": {task_id: state}}``.
``v`` counts the updates, so that an update is a compare-and-set on it (PostgreSQL's ``json`` type has no
equality operator, so the JSON itself cannot be compared).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from corral.store import schema as s
from corral.store.sql import Row, Tx, chunks

_J, _T = s.jobs.c, s.tasks.c
# Everything of a job but its spec, which can be large and which the webhook loop reads once per job.
_JOB_COLS = [_J.seq, _J.id, _J.name, _J.state, _J.error, _J.task_count, _J.created_at, _J.started_at,
             _J.finished_at, _J.parent_job_id, _J.output, _J.hook_marks]
_TASK_COLS = [_T.id, _T.job_id, _T.parent_id, _T.position, _T.name, _T.spec, _T.state, _T.kind, _T.exit_code,
              _T.error, _T.output, _T.progress, _T.created_at, _T.started_at, _T.finished_at]


def _rows(result: Any) -> list[Row]:
    return [dict(r) for r in result.mappings()]


def _version() -> Any:
    return sa.func.coalesce(_J.hook_marks["v"].as_integer(), 0)


def jobs_awaiting_hooks(tx: Tx, after_seq: int, exclude: Iterable[str], limit: int) -> list[Row]:
    """Jobs whose webhooks are not done, in submission order after ``after_seq`` (a cursor, so that every
    such job gets its turn however many there are), leaving out ``exclude`` (those being delivered)."""
    q = sa.select(*_JOB_COLS).where(_J.hooks_done == sa.false(), _J.seq > after_seq)
    ex = list(exclude)
    if ex:
        q = q.where(_J.id.not_in(ex))
    return _rows(tx.c.execute(q.order_by(_J.seq).limit(limit)))


def job_awaiting_hooks(tx: Tx, job_id: str) -> Row | None:
    rows = _rows(tx.c.execute(sa.select(*_JOB_COLS).where(_J.id == job_id, _J.hooks_done == sa.false())))
    return rows[0] if rows else None


def job_specs(tx: Tx, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    return {i: spec for part in chunks(ids) for i, spec in tx.c.execute(sa.select(_J.id, _J.spec).where(
        _J.id.in_(part)))}


def task_states(tx: Tx, job_ids: Iterable[str]) -> dict[str, dict[str, str]]:
    """job id -> {task id: state}, for the given jobs."""
    ids = list(job_ids)
    out: dict[str, dict[str, str]] = {i: {} for i in ids}
    for part in chunks(ids):
        for tid, jid, state in tx.c.execute(sa.select(_T.id, _T.job_id, _T.state).where(_T.job_id.in_(part))):
            out[jid][tid] = state
    return out


def tasks_for_payload(tx: Tx, ids: Iterable[str]) -> dict[str, Row]:
    return {r["id"]: r for part in chunks(ids) for r in _rows(tx.c.execute(sa.select(*_TASK_COLS).where(
        _T.id.in_(part))))}


def save_marks(tx: Tx, job_id: str, version: int, marks: dict[str, Any], done: bool) -> bool:
    """Compare-and-set: store ``marks`` (whose "v" must be ``version`` + 1) while the stored ones are still
    at ``version``; with ``done``, delivery for the job is over. False when the job changed hands or is gone."""
    assert marks["v"] == version + 1
    q = (sa.update(s.jobs).where(_J.id == job_id, _J.hooks_done == sa.false(), _version() == version)
         .values(hook_marks=marks, hooks_done=done))
    return bool(tx.c.execute(q).rowcount == 1)


def restarted(tx: Tx, unfinished: Sequence[str], limit: int = 1000) -> list[str]:
    """Jobs whose webhooks were done and that run again (a restart)."""
    q = sa.select(_J.id).where(_J.hooks_done == sa.true(), _J.state.in_(list(unfinished))).limit(limit)
    return [r[0] for r in tx.c.execute(q)]


def reopen(tx: Tx, ids: Sequence[str], unfinished: Sequence[str]) -> int:
    """Deliver the changes of these (restarted) jobs again."""
    if not ids:
        return 0
    q = (sa.update(s.jobs).where(_J.id.in_(list(ids)), _J.hooks_done == sa.true(), _J.state.in_(list(unfinished)))
         .values(hooks_done=False))
    return int(tx.c.execute(q).rowcount)


def retired_jobs(tx: Tx, cutoff: float, terminal: Sequence[str], limit: int) -> list[str]:
    """Ids of jobs that finished before ``cutoff`` (oldest first; --retain), leaving out those whose
    webhooks are still being delivered."""
    q = (sa.select(_J.id)
         .where(_J.finished_at < cutoff, _J.state.in_(list(terminal)),
                sa.or_(_J.hooks_done.is_(None), _J.hooks_done == sa.true()))
         .order_by(_J.finished_at).limit(limit))  # along ix_jobs_finished, oldest first: no sort
    return [r[0] for r in tx.c.execute(q)]


def expired_jobs(tx: Tx, now: float, terminal: Sequence[str], limit: int) -> list[str]:
    """Ids of finished jobs whose autoDelete time has come (oldest first), leaving out those whose
    webhooks are still being delivered."""
    q = (sa.select(_J.id)
         .where(_J.auto_delete_after.is_not(None), _J.state.in_(list(terminal)), _J.finished_at.is_not(None),
                _J.finished_at + _J.auto_delete_after <= now,
                sa.or_(_J.hooks_done.is_(None), _J.hooks_done == sa.true()))
         # ``+ 0``: read by ix_jobs_autodelete (the jobs with an autoDelete time) and sorted, not along every
         # finished job's ix_jobs_finished entry for its order (160 ms a pass at 1,000,000 jobs on SQLite).
         .order_by(_J.finished_at + 0).limit(limit))
    return [r[0] for r in tx.c.execute(q)]
