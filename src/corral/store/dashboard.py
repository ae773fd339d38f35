"""The dashboard's overview queries (corral.api.dashboard): counts a page shows, each one indexed query,
each limited to the namespaces the current caller sees (corral.auth.context)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from corral.auth import context
from corral.store import schema as s
from corral.store.sql import Tx


def _visible(conds: list[Any]) -> list[Any]:
    if (visible := context.visible()) is not None:
        return [*conds, s.jobs.c.namespace.in_(sorted(visible))]
    return conds


def jobs_by_state(tx: Tx) -> dict[str, int]:
    q = sa.select(s.jobs.c.state, sa.func.count()).where(*_visible([])).group_by(s.jobs.c.state)
    return {str(st): int(n) for st, n in tx.c.execute(q).all()}


def jobs_created_since(tx: Tx, since: float, bucket: float) -> list[tuple[int, str, int]]:
    """``(bucket index, state now, jobs)`` of the jobs created since ``since``, by ``bucket`` seconds."""
    b = sa.cast((s.jobs.c.created_at - since) / bucket, sa.Integer).label("b")
    q = (sa.select(b, s.jobs.c.state, sa.func.count()).where(*_visible([s.jobs.c.created_at >= since]))
         .group_by(b, s.jobs.c.state))
    return [(int(i), str(st), int(n)) for i, st, n in tx.c.execute(q).all()]


def jobs_finished_since(tx: Tx, since: float, created_since: float) -> int:
    """Jobs that ended since ``since``, of those created since ``created_since`` (the index on the creation
    time bounds the read)."""
    q = sa.select(sa.func.count()).select_from(s.jobs).where(
        *_visible([s.jobs.c.created_at >= created_since, s.jobs.c.finished_at >= since]))
    return int(tx.c.execute(q).scalar_one())


def pending_reasons(tx: Tx, limit: int = 20) -> list[tuple[str, int]]:
    """Why ready tasks wait, grouped: the most common reasons first."""
    t = s.tasks.c
    conds: list[Any] = [t.state == "pending", t.ready_at.is_not(None)]
    frm: Any = s.tasks
    if context.visible() is not None:
        frm = s.tasks.join(s.jobs, s.jobs.c.id == t.job_id)
        conds = _visible(conds)
    reason = sa.func.coalesce(t.reason, "waiting in queue")
    q = (sa.select(reason, sa.func.count()).select_from(frm).where(*conds).group_by(reason)
         .order_by(sa.func.count().desc()).limit(limit))
    return [(str(r), int(n)) for r, n in tx.c.execute(q).all()]


def job_marks(tx: Tx, states: tuple[str, ...], after_seq: int) -> tuple[int, dict[int, str]]:
    """The highest job number, and ``{seq: state}`` of the jobs in ``states`` or after ``after_seq``: two
    indexed reads (the state index, the primary key), not one whose OR reads every job. Every namespace (the
    dashboard's watcher has no caller; its events carry no data)."""
    j = s.jobs.c
    top = int(tx.c.execute(sa.select(sa.func.coalesce(sa.func.max(j.seq), 0))).scalar_one())
    rows = tx.c.execute(sa.union_all(sa.select(j.seq, j.state).where(j.state.in_(states)),
                                     sa.select(j.seq, j.state).where(j.seq > after_seq))).all()
    return top, {int(a): str(b) for a, b in rows}
