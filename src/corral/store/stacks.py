"""The store's queries about the Stacks API's stacks and batch-delete jobs.

``Tx`` (store/sql.py) takes these methods in as a mixin. A stack is deleted by deleting its row, a
compare-and-set: whoever deletes it (a user, a batch job, the TTL pass of any coordinator) stops its pod,
and only one of them does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from corral.store import schema as s
from corral.store.rows import Row

_S, _J = s.stacks.c, s.stack_batch_jobs.c
# Any constant: the key of the advisory lock that makes a quota check and the insert after it one step.
_QUOTA_LOCK = 0x5374616B


class StackQueries:
    c: Connection

    # -- stacks ------------------------------------------------------------------------------------
    def lock_stack_quota(self) -> None:
        """Until this transaction ends, no other takes the quota lock (PostgreSQL; SQLite has one writer)."""
        if self.c.dialect.name == "postgresql":
            self.c.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _QUOTA_LOCK})

    def stack_totals(self) -> tuple[int, int, int]:
        """(millicores, bytes, stacks) held by all stacks."""
        r = self.c.execute(sa.select(sa.func.coalesce(sa.func.sum(_S.cpu_milli), 0),
                                     sa.func.coalesce(sa.func.sum(_S.memory_bytes), 0),
                                     sa.func.count())).one()
        return int(r[0]), int(r[1]), int(r[2])

    def insert_stack(self, row: Row) -> None:
        self.c.execute(sa.insert(s.stacks).values(**row))

    def stack(self, stack_id: str) -> Row | None:
        r = self.c.execute(sa.select(s.stacks).where(_S.id == stack_id)).mappings().first()
        return dict(r) if r else None

    def existing_stacks(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` (at most a few hundred) are stacks."""
        if not ids:
            return set()
        return {r[0] for r in self.c.execute(sa.select(_S.id).where(_S.id.in_(list(ids))))}

    def all_stacks(self, limit: int = 100_000) -> list[Row]:
        return [dict(r) for r in self.c.execute(sa.select(s.stacks).order_by(_S.seq).limit(limit)).mappings()]

    def delete_stack(self, stack_id: str, expired_before: float | None = None) -> bool:
        """Delete the row (only if it expired before ``expired_before``, when given); False if another did."""
        q = sa.delete(s.stacks).where(_S.id == stack_id)
        if expired_before is not None:
            q = q.where(_S.ttl_expires_at <= expired_before)
        return self.c.execute(q).rowcount == 1

    def expired_stacks(self, now: float, limit: int = 100) -> list[str]:
        q = sa.select(_S.id).where(_S.ttl_expires_at <= now).order_by(_S.ttl_expires_at).limit(limit)
        return [r[0] for r in self.c.execute(q)]

    def next_stack_expiry(self) -> float | None:
        r = self.c.execute(sa.select(sa.func.min(_S.ttl_expires_at))).scalar()
        return None if r is None else float(r)

    # -- batch-delete jobs ----------------------------------------------------------------------------
    def insert_batch_job(self, row: Row) -> None:
        self.c.execute(sa.insert(s.stack_batch_jobs).values(**row))

    def batch_job(self, job_id: str, lock: bool = False) -> Row | None:
        """A job; ``lock``: its row stays locked until the transaction ends (PostgreSQL; SQLite has one
        writer at a time)."""
        q = sa.select(s.stack_batch_jobs).where(_J.id == job_id)
        if lock and self.c.dialect.name == "postgresql":
            q = q.with_for_update()
        r = self.c.execute(q).mappings().first()
        return dict(r) if r else None

    def unfinished_batch_jobs(self, limit: int = 10) -> list[Row]:
        q = (sa.select(s.stack_batch_jobs).where(_J.status.in_(("queued", "running"))).order_by(_J.seq)
             .limit(limit))
        return [dict(r) for r in self.c.execute(q).mappings()]

    def cas_batch_job(self, job_id: str, expected: Sequence[str], at_done: int | None = None,
                      **values: Any) -> bool:
        """Update a job still in one of ``expected`` (and, when ``at_done`` is given, at that progress)."""
        q = sa.update(s.stack_batch_jobs).where(_J.id == job_id, _J.status.in_(tuple(expected)))
        if at_done is not None:
            q = q.where(_J.done == at_done)
        return self.c.execute(q.values(**values)).rowcount == 1
