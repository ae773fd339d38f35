"""Leadership among the coordinators sharing a database: a lease with a fencing epoch.

Any number of coordinators serve the API; one of them, the leader, runs the loops that must not run twice
(scheduling passes and their commits, the reaper, TTL expiry, retention, webhook delivery, cron). The lease
is a row renewed with a timeout (``leadership``); every change of leader raises its epoch, and the one step
that commits a placement (``Scheduling.commit``) checks its epoch in the same transaction (``fence``): a
leader that was paused and wakes up after another took over cannot place work.

The port is ``Election``, with two implementations over the same pure rule (``decide``):
``MemoryElection`` (in-process: one coordinator on SQLite, and the unit tests) and ``StoreElection`` (the
``leadership`` and ``coordinators`` tables, on PostgreSQL). ``Leadership`` runs the election's steps in a
thread and answers ``is_leader()`` from what the last step won, never for longer than the lease it renewed.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import sqlalchemy as sa

from corral.coordinator.errors import Conflict, NotFound
from corral.store.sql import Row, Store, Tx

log = logging.getLogger("corral.coordinator")

DEFAULT_LEASE = 2.0  # seconds a leader holds its lease without renewing it


class LeaseBusy(Exception):
    """A step could not lock the lease in time: tried again at the next step."""


class Fenced(Exception):
    """A write only the leader may make, refused: a newer leader exists."""


@dataclass(frozen=True)
class Member:
    id: str
    node_no: int
    address: str
    started_at: float
    last_seen: float
    draining: bool
    alive: bool
    role: str  # leader | follower


@dataclass(frozen=True)
class ClusterState:
    me: str
    leader_id: str | None  # None while no lease is held
    epoch: int
    now: float
    members: list[Member] = field(default_factory=list)

    def member(self, coord_id: str) -> Member | None:
        return next((m for m in self.members if m.id == coord_id), None)

    def view(self) -> dict[str, Any]:
        """What ``GET /v1/cluster`` answers."""
        return {"me": self.me, "leader_id": self.leader_id, "epoch": self.epoch,
                "coordinators": [{"id": m.id, "node_no": m.node_no, "address": m.address, "role": m.role,
                                  "alive": m.alive, "draining": m.draining, "last_seen": m.last_seen,
                                  "started_at": m.started_at} for m in self.members]}


# -- the rule, pure -------------------------------------------------------------------------------
def alive(last_seen: float, now: float, lease: float) -> bool:
    """A coordinator renews its row at every step (a sixth of the lease): silent for two leases, it is gone."""
    return now - last_seen <= 2 * lease


def successor(coordinators: Sequence[Row], me: str, now: float, lease: float) -> str | None:
    """The coordinator a draining leader hands over to: alive, not draining, the lowest number."""
    ok = [c for c in coordinators if c["id"] != me and not c["draining"] and alive(c["last_seen"], now, lease)]
    return min(ok, key=lambda c: c["node_no"])["id"] if ok else None


def decide(lease_row: Row, me: str, instance: str, now: float, ttl: float, draining: bool, heir: str | None,
           instances: Mapping[str, str]) -> Row | None:
    """What coordinator ``me`` (this run of it: ``instance``) writes to the lease at one step of the election,
    or None to leave it.

    The leader renews it, or hands it over (to the coordinator a transfer names, or, while it drains, to
    ``heir``; ``instances`` gives the run of each coordinator, which the lease names as its holder) with a
    new epoch; anyone not draining takes a lease that has expired, with a new epoch. A coordinator that
    restarted is not the holder of the lease its previous run held: it waits for it to expire, so two
    processes given one id never lead under one epoch."""
    epoch = int(lease_row["epoch"])
    held = lease_row["leader_id"] is not None and lease_row["expires_at"] > now
    if held and lease_row["leader_id"] == me and lease_row["holder"] == instance:
        target = lease_row["transfer_to"]
        if target in (None, me) or target not in instances:
            target = heir if draining else None
        if target is not None and target in instances:
            return {"leader_id": target, "holder": instances[target], "epoch": epoch + 1, "expires_at": now + ttl,
                    "transfer_to": None, "changed_at": now}
        return {"expires_at": now + ttl, "transfer_to": None}
    if not held and not draining:
        return {"leader_id": me, "holder": instance, "epoch": epoch + 1, "expires_at": now + ttl,
                "transfer_to": None, "changed_at": now}
    return None


def state_of(lease_row: Row, coordinators: Sequence[Row], me: str, now: float, lease: float) -> ClusterState:
    held = lease_row["leader_id"] is not None and lease_row["expires_at"] > now
    leader = lease_row["leader_id"] if held else None
    members = [Member(c["id"], int(c["node_no"]), c["address"], c["started_at"], c["last_seen"],
                      bool(c["draining"]), alive(c["last_seen"], now, lease),
                      "leader" if c["id"] == leader else "follower") for c in coordinators]
    return ClusterState(me, leader, int(lease_row["epoch"]), now, members)


# -- the port ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Me:
    id: str
    address: str
    started_at: float
    instance: str = field(default_factory=lambda: uuid.uuid4().hex)  # this run of the process


class Election(Protocol):
    def step(self, me: Me, ttl: float) -> int:
        """Register or renew ``me``, then campaign, renew or hand over; returns the epoch ``me`` holds after
        the step, 0 if it does not lead."""
        ...

    def fence(self, tx: Tx, epoch: int) -> None:
        """Raise Fenced, inside a write transaction, unless ``epoch`` is still the current one."""
        ...

    def state(self, me: str, lease: float) -> ClusterState: ...
    def resign(self, epoch: int) -> None:
        """Give up the lease held under ``epoch`` (a coordinator stopping in good order)."""
        ...

    def request_transfer(self, target: str) -> None: ...
    def set_draining(self, coord_id: str, draining: bool) -> bool: ...


class MemoryElection:
    """The lease and the registry in memory: one coordinator per process (SQLite), or several sharing one
    instance in a unit test. ``clock`` is injectable for the tests."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.lease: Row = {"leader_id": None, "holder": None, "epoch": 0, "expires_at": 0.0, "transfer_to": None,
                           "changed_at": 0.0}
        self.coords: dict[str, Row] = {}
        self._lock = threading.Lock()

    def step(self, me: Me, ttl: float) -> int:
        with self._lock:
            now = self.clock()
            row = self.coords.setdefault(me.id, {"id": me.id, "node_no": len(self.coords) + 1,
                                                 "draining": False})
            row.update(address=me.address, started_at=me.started_at, last_seen=now, instance=me.instance)
            heir = successor(list(self.coords.values()), me.id, now, ttl) if row["draining"] else None
            values = decide(self.lease, me.id, me.instance, now, ttl, row["draining"], heir,
                            {c["id"]: c["instance"] for c in self.coords.values()})
            if values:
                self.lease.update(values)
            mine = (self.lease["leader_id"] == me.id and self.lease["holder"] == me.instance
                    and self.lease["expires_at"] > now)
            return int(self.lease["epoch"]) if mine else 0

    def fence(self, tx: Tx, epoch: int) -> None:
        if epoch != self.lease["epoch"]:
            raise Fenced(f"epoch {epoch} is not the current one ({self.lease['epoch']})")

    def state(self, me: str, lease: float) -> ClusterState:
        with self._lock:
            return state_of(dict(self.lease), [dict(c) for c in self.coords.values()], me, self.clock(), lease)

    def resign(self, epoch: int) -> None:
        with self._lock:
            if self.lease["epoch"] == epoch:
                self.lease["expires_at"] = 0.0

    def request_transfer(self, target: str) -> None:
        with self._lock:
            self.lease["transfer_to"] = target

    def set_draining(self, coord_id: str, draining: bool) -> bool:
        with self._lock:
            row = self.coords.get(coord_id)
            if row is None:
                return False
            row["draining"] = draining
            return True


def _decide(lease_row: Row, coords: Sequence[Row], me: Me, now: float, ttl: float) -> Row | None:
    mine = next((c for c in coords if c["id"] == me.id), None)
    draining = bool(mine and mine["draining"])
    heir = successor(coords, me.id, now, ttl) if draining else None
    return decide(lease_row, me.id, me.instance, now, ttl, draining, heir, {c["id"]: c["instance"] for c in coords})


class StoreElection:
    """The lease and the registry in the store's ``leadership`` and ``coordinators`` tables (PostgreSQL:
    the coordinators' steps take turns on the lease row's lock; times are the database's)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def step(self, me: Me, ttl: float) -> int:
        try:
            return self._step(me, ttl)
        except sa.exc.OperationalError as e:
            if "lock timeout" not in str(e) and "LockNotAvailable" not in type(e.orig).__name__:
                raise
        # Another session holds the lease row (a coordinator inside a step or a fenced write). If the lease
        # has expired, that session belongs to a coordinator that stopped in the middle: end it.
        with self.store.transaction() as tx:
            lease_row, now = tx.lease(), tx.db_now()
            if lease_row["expires_at"] <= now:
                n = tx.end_stale_lease_holders(ttl)
                if n:
                    log.warning("ended %d database session(s) of a coordinator frozen while holding the lease", n)
        raise LeaseBusy("the lease row is locked by another session")

    def _step(self, me: Me, ttl: float) -> int:
        # The registration, and a look at the lease without locking it: a follower that has nothing to
        # write (most steps) never holds the lease row, which the leader's fenced writes share-lock.
        with self.store.transaction() as tx:
            now = tx.db_now()
            tx.upsert_coordinator(me.id, me.instance, me.address, me.started_at, now)
            coords = tx.coordinators()
            lease_row = tx.lease()
        if _decide(lease_row, coords, me, now, ttl) is not None:
            with self.store.transaction() as tx:  # a write is due: decide again under the row's lock
                tx.lock_timeout(ttl / 4)
                lease_row = tx.lease(lock=True)
                now = tx.db_now()
                values = _decide(lease_row, coords, me, now, ttl)
                if values and tx.set_lease(int(lease_row["epoch"]), values):
                    lease_row.update(values)
        held = (lease_row["leader_id"] == me.id and lease_row["holder"] == me.instance
                and lease_row["expires_at"] > now)
        return int(lease_row["epoch"]) if held else 0

    def fence(self, tx: Tx, epoch: int) -> None:
        if not tx.fence(epoch):
            raise Fenced(f"epoch {epoch} is no longer the current one: another coordinator leads")

    def state(self, me: str, lease: float) -> ClusterState:
        with self.store.read() as tx:
            now = tx.db_now()
            return state_of(tx.lease(), tx.coordinators(), me, now, lease)

    def resign(self, epoch: int) -> None:
        with self.store.transaction() as tx:
            tx.set_lease(epoch, {"expires_at": 0.0})

    def request_transfer(self, target: str) -> None:
        with self.store.transaction() as tx:
            tx.request_transfer(target)

    def set_draining(self, coord_id: str, draining: bool) -> bool:
        with self.store.transaction() as tx:
            return tx.set_coordinator_draining(coord_id, draining)


# -- the runner -------------------------------------------------------------------------------------
TRANSFER_WAIT = 2.0  # seconds a transfer may take


class Leadership:
    """Runs the election's steps in a thread (every sixth of the lease) and says whether this coordinator
    leads. ``on_elected`` is called (from the thread) when it starts leading."""

    def __init__(self, election: Election, me: Me, lease: float = DEFAULT_LEASE, sole: bool = False) -> None:
        """``sole``: the only coordinator there can be (SQLite): it leads from the start, whether or not the
        steps run (a Coordinator used without its loops, as the tests and tools do), and is never fenced."""
        self.sole = sole
        self.election = election
        self.me = me
        self.lease = lease
        self.on_elected: Callable[[], None] = lambda: None
        self._epoch = 0
        self._until = 0.0  # monotonic time past which the lease last renewed may have expired
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.stepped = threading.Event()  # set after the first step (readiness)
        self._announced = 0  # the epoch last logged as won

    @property
    def epoch(self) -> int:
        """The epoch this coordinator leads under, 0 if it does not lead."""
        if self.sole:
            return self._epoch or 1
        if self._thread is None and not self._held():
            self.step()  # used without its thread (tests, tools): campaign when asked
        return self._held()

    def _held(self) -> int:
        return self._epoch if time.monotonic() < self._until else 0

    def is_leader(self) -> bool:
        return self.epoch > 0

    def fence(self, tx: Tx) -> None:
        """Inside a leader-only write: refuse it (Fenced) unless this coordinator leads under the current
        epoch. A paused leader that wakes up after another took over fails here."""
        if self.sole:
            return
        epoch = self.epoch
        if epoch == 0:
            raise Fenced("this coordinator does not lead")
        self.election.fence(tx, epoch)

    def lost(self) -> None:
        """A fenced write told us another leads: stop at once, and look again."""
        self._epoch, self._until = 0, 0.0
        self._wake.set()

    def step(self) -> None:
        t0 = time.monotonic()
        was = self._held() > 0
        try:
            epoch = self.election.step(self.me, self.lease)
        except Exception as e:
            if isinstance(e, LeaseBusy):
                log.info("leadership step: %s; trying again", e)
            else:
                log.exception("leadership step failed; trying again")
            epoch = 0 if time.monotonic() >= self._until else self._epoch
            if epoch == 0:
                self._epoch, self._until = 0, 0.0
            return
        finally:
            self.stepped.set()
        if epoch:
            # Never trust the lease past what this step renewed, measured from before it was asked for.
            self._epoch, self._until = epoch, t0 + self.lease * 0.9
        else:
            self._epoch, self._until = 0, 0.0
        if epoch and not was:
            if epoch != self._announced:
                log.log(logging.INFO if self.sole else logging.WARNING, "coordinator %s leads (epoch %d)",
                        self.me.id, epoch)
                self._announced = epoch
            self.on_elected()
        elif self._announced and not epoch:
            log.warning("coordinator %s no longer leads", self.me.id)
            self._announced = 0

    def state(self) -> ClusterState:
        return self.election.state(self.me.id, self.lease)

    def transfer(self, target: str | None) -> ClusterState:
        """Hand the leadership to ``target`` (or to any other live coordinator that is not draining), and
        wait until it leads; Conflict if there is none to hand to or it did not take over in time."""
        st = self.state()
        if target is None:
            heirs = [m for m in st.members if m.id != st.leader_id and m.alive and not m.draining]
            if not heirs:
                raise Conflict("no other live coordinator that is not draining to transfer the leadership to")
            target = min(heirs, key=lambda m: m.node_no).id
        else:
            m = st.member(target)
            if m is None:
                raise NotFound(f"no coordinator with id '{target}'")
            if not m.alive:
                raise Conflict(f"coordinator '{target}' is not alive")
            if m.draining:
                raise Conflict(f"coordinator '{target}' is draining")
        if st.leader_id == target:
            return st
        self.election.request_transfer(target)
        self._wake.set()
        deadline = time.monotonic() + TRANSFER_WAIT
        while time.monotonic() < deadline:
            time.sleep(0.05)
            st = self.state()
            if st.leader_id == target:
                return st
        raise Conflict(f"coordinator '{target}' did not take the leadership within {TRANSFER_WAIT:g}s")

    def set_draining(self, coord_id: str, draining: bool) -> ClusterState:
        if not self.election.set_draining(coord_id, draining):
            raise NotFound(f"no coordinator with id '{coord_id}'")
        self._wake.set()
        return self.state()

    def draining(self) -> bool:
        m = self.state().member(self.me.id)
        return bool(m and m.draining)

    def start(self) -> None:
        self.step()
        self._thread = threading.Thread(target=self._run, name="corral-leadership", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        epoch = self._held()
        self._epoch, self._until = 0, 0.0
        if epoch:  # another coordinator takes over at once instead of when the lease runs out
            try:
                self.election.resign(epoch)
            except Exception as e:
                log.warning("could not give up the leadership: %s", type(e).__name__)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.lease / 6)
            self._wake.clear()
            if self._stop.is_set():
                return
            self.step()
