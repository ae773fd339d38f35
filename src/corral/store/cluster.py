"""The store's queries about the coordinators sharing a database and their leadership lease.

``Tx`` (store/sql.py) takes these methods in as a mixin. The lease is one row (``leadership``, id 1) with
the leader's id, its expiry and the fencing epoch, raised at every change of leader. Times come from the
database's clock on PostgreSQL (``db_now``), so coordinators on machines whose clocks differ agree on
when a lease expires.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from corral.store import schema as s
from corral.store.rows import Row

_L, _C = s.leadership.c, s.coordinators.c
_REGISTER_LOCK = 0x436F6F72  # any constant: the key of the advisory lock a first registration holds


class ClusterQueries:
    c: Connection

    def db_now(self) -> float:
        """The database's clock (PostgreSQL), or this machine's (SQLite: one machine anyway)."""
        if self.c.dialect.name == "postgresql":
            return float(self.c.execute(sa.text("SELECT extract(epoch FROM clock_timestamp())")).scalar_one())
        return time.time()

    def notify(self, channel: str, payload: str) -> None:
        """PostgreSQL's NOTIFY on ``channel``, delivered to its listeners when this transaction commits."""
        self.c.execute(sa.text("SELECT pg_notify(:channel, :payload)"), {"channel": channel, "payload": payload})

    def lease(self, lock: bool = False) -> Row:
        """The leadership row; ``lock``: held until this transaction ends (PostgreSQL), so that the steps of
        the coordinators' elections take turns."""
        q = sa.select(s.leadership).where(_L.id == 1)
        if lock and self.c.dialect.name == "postgresql":
            q = q.with_for_update()
        return dict(self.c.execute(q).mappings().one())

    def lock_timeout(self, seconds: float) -> None:
        """Until this transaction ends, a lock not granted within ``seconds`` fails the statement
        (PostgreSQL)."""
        if self.c.dialect.name == "postgresql":
            self.c.execute(sa.text(f"SET LOCAL lock_timeout = {max(int(seconds * 1000), 1)}"))

    def end_stale_lease_holders(self, older_than: float) -> int:
        """Terminate the sessions whose transaction has held a lock on the lease for over ``older_than``
        seconds (PostgreSQL): a coordinator frozen inside one (SIGSTOP, a VM paused) must not keep the
        others from taking over. Its transaction is rolled back: that is its fencing. Returns how many."""
        if self.c.dialect.name != "postgresql":
            return 0
        q = sa.text("SELECT pg_terminate_backend(a.pid) FROM pg_stat_activity a "
                    "WHERE a.pid <> pg_backend_pid() AND a.xact_start < clock_timestamp() - make_interval(secs => :s) "
                    "AND a.pid IN (SELECT l.pid FROM pg_locks l WHERE l.relation = 'leadership'::regclass "
                    "AND l.granted)")
        return len(self.c.execute(q, {"s": older_than}).all())

    def set_lease(self, expected_epoch: int, values: Row) -> bool:
        """Compare-and-set of the lease: changed only while its epoch is still ``expected_epoch``."""
        q = sa.update(s.leadership).where(_L.id == 1, _L.epoch == expected_epoch).values(**values)
        return self.c.execute(q).rowcount == 1

    def fence(self, epoch: int) -> bool:
        """Whether ``epoch`` is still the current one. On PostgreSQL the lease row is share-locked until this
        transaction ends: a new leader's takeover waits for this write, or this write sees its epoch."""
        q = sa.select(_L.epoch).where(_L.id == 1)
        if self.c.dialect.name == "postgresql":
            q = q.with_for_update(read=True)
        return int(self.c.execute(q).scalar_one()) == epoch

    def request_transfer(self, target: str) -> None:
        self.c.execute(sa.update(s.leadership).where(_L.id == 1).values(transfer_to=target))

    def upsert_coordinator(self, coord_id: str, instance: str, address: str, started_at: float,
                           now: float) -> None:
        """Register a coordinator (a new one gets the next free small number) or renew its row."""
        q = sa.update(s.coordinators).where(_C.id == coord_id).values(address=address, last_seen=now,
                                                                     started_at=started_at, instance=instance)
        if self.c.execute(q).rowcount:
            return
        if self.c.dialect.name == "postgresql":  # first registrations take turns for the next number
            self.c.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _REGISTER_LOCK})
        nxt = self.c.execute(sa.select(sa.func.coalesce(sa.func.max(_C.node_no), 0) + 1)).scalar_one()
        self.c.execute(sa.insert(s.coordinators).values(id=coord_id, node_no=int(nxt), instance=instance,
                                                         address=address,
                                                         started_at=started_at, last_seen=now, draining=False))

    def coordinators(self) -> list[Row]:
        return [dict(r) for r in self.c.execute(sa.select(s.coordinators).order_by(_C.node_no)).mappings()]

    def coordinator(self, coord_id: str) -> Row | None:
        r = self.c.execute(sa.select(s.coordinators).where(_C.id == coord_id)).mappings().first()
        return dict(r) if r else None

    def set_coordinator_draining(self, coord_id: str, draining: bool) -> bool:
        q = sa.update(s.coordinators).where(_C.id == coord_id).values(draining=draining)
        return self.c.execute(q).rowcount == 1
