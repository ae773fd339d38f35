"""The coordinator: one object holding the store, the settings and what the parts share, and a facade over
the parts, each in its own module:

- jobs.py: job commands (submit and its admission, get, cancel, restart, delete; idempotency keys);
- nodes.py: the node protocol (register, authenticate, heartbeat, poll, report, drain, leave);
- scheduling.py: the scheduling pass and the one step that commits a placement;
- reaper.py: nodes that stopped heartbeating;
- leadership.py: which of the coordinators sharing a database leads, and the fencing epoch.

Nothing here speaks HTTP: the API routers, the in-process agent transport and the background loops all
call these methods. The wire types a worker sends (``NodeInfo``, ``Update``, ``LogLine``) live in
``domain/agentwire.py`` and are re-exported here for the callers that import them from this module.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from corral.coordinator import flow
from corral.coordinator.flow import Flow
from corral.coordinator.idempotency import IdemKey
from corral.coordinator.jobs import Jobs
from corral.coordinator.leadership import DEFAULT_LEASE, ClusterState, Leadership, Me, MemoryElection, StoreElection
from corral.coordinator.nodes import MAX_LOST_RESCHEDULES, Nodes, secret_hash
from corral.coordinator.policy import Policy
from corral.coordinator.reaper import Reaper
from corral.coordinator.scheduling import Scheduling
from corral.domain.agentwire import NODE_SECRET_HEADER, LogLine, NodeInfo, Update, cap_logs, truncation_marker
from corral.domain.spec import JobSpec
from corral.scheduler import NodeView, TaskView
from corral.scheduler.placement import Strategy
from corral.store.sql import Row, Store, Tx

__all__ = ["MAX_LOST_RESCHEDULES", "NODE_SECRET_HEADER", "Coordinator", "LogLine", "NodeInfo", "Settings", "Update",
           "cap_logs", "job_rows", "secret_hash", "truncation_marker"]

job_rows = flow.job_rows  # the rows of a new job and its tasks (used by the schedules too)


@dataclass
class Settings:
    strategy: Strategy = "spread"
    heartbeat_interval: float = 3.0
    node_ttl: float = 15.0  # a node that misses heartbeats this long is down
    schedule_batch: int = 64  # tasks read per step of a pass; more while all fit
    max_pending_tasks: int = 100_000  # backpressure: submissions beyond this are refused (503)
    max_tasks_per_job: int = flow.MAX_TASKS_PER_JOB  # task rows of one job across all levels (subjobs too)
    policy: Policy = field(default_factory=Policy)  # what jobs may reach on the host (bind mounts, volumes, ...)
    max_log_bytes: int = 10_000_000  # output stored per attempt of a task; past it, a marker and no more
    node_port_range: tuple[int, int] = (30000, 32767)  # node ports given to pods' published ports
    coordinator_id: str = ""  # this coordinator's id among those sharing the database (default: its address)
    address: str = ""  # the URL other coordinators and workers reach this one at
    leader_lease: float = DEFAULT_LEASE  # seconds a leader holds its lease without renewing it
    retain: float | None = None  # finished jobs are deleted this many seconds after they finished (--retain)



class Coordinator:
    def __init__(self, store: Store, settings: Settings | None = None) -> None:
        self.store = store
        self.settings = settings or Settings()
        self.started_at = time.time()
        self._kick = threading.Event()
        # Called with the ids of nodes that have new work or cancels waiting (wakes their long-polls).
        self.on_nodes_changed: Callable[[set[str]], None] = lambda ids: None
        self.on_kick: Callable[[], None] = lambda: None  # tells the other coordinators (their leader)
        # This coordinator's long-polls alone (after ``announce`` told the others).
        self.on_nodes_local: Callable[[set[str]], None] = lambda ids: None
        # Inside a write transaction: tell the other coordinators (PostgreSQL: NOTIFY, sent by the database
        # with the commit) which nodes it gives news to; False where there are no others to tell.
        self.announce: Callable[[Tx, set[str]], bool] = lambda tx, ids: False
        self.pending_tasks = 0  # refreshed from the store every second; raised by each submission
        self.flow = Flow(self.settings.policy, self.settings.max_tasks_per_job)
        self.stats = {"jobs_submitted": 0, "tasks_completed": 0, "tasks_failed": 0, "tasks_lost": 0,
                      "tasks_retried": 0, "schedule_passes": 0, "tasks_handed_back": 0,
                      "agent_reports_ignored": 0, "schedule_rows_skipped": 0}
        self.jobs = Jobs(self)
        self.nodes = Nodes(self)
        self.scheduling = Scheduling(self)
        self.reaper = Reaper(self)
        from corral.coordinator.pods import Pods  # pods build on this module: imported here, not above
        self.pods = Pods(self)
        address = self.settings.address or f"http://{socket.gethostname()}"
        me = Me(self.settings.coordinator_id or address, address, self.started_at)
        # One coordinator per SQLite database: the lease in memory. On PostgreSQL, in the database.
        election = MemoryElection() if store.is_sqlite else StoreElection(store)
        self.leadership = Leadership(election, me, self.settings.leader_lease, sole=store.is_sqlite)
        if store.is_sqlite:
            self.leadership.step()  # in memory: registers it at once

    # -- jobs (jobs.py) -------------------------------------------------------------------------
    def submit(self, spec: JobSpec, idem: IdemKey | None = None) -> Row:
        return self.jobs.submit(spec, idem)

    def submit_many(self, specs: Sequence[JobSpec], idem: IdemKey | None = None) -> list[Row]:
        return self.jobs.submit_many(specs, idem)

    async def submit_async(self, specs: Sequence[JobSpec], idem: IdemKey | None = None) -> list[Row]:
        """For the API's event loop: written by a group commit with the submissions made meanwhile."""
        return await self.jobs.submit_async(specs, idem)

    def admit(self, *specs: JobSpec) -> int:
        return self.jobs.admit(*specs)

    def check_size(self, spec: JobSpec) -> int:
        return self.jobs.check_size(spec)

    def check_policy(self, spec: JobSpec) -> None:
        self.jobs.check_policy(spec)

    def replay(self, idem: IdemKey, mark: str, now: float) -> dict[str, Any] | None:
        return self.jobs.replay(idem, mark, now)

    def insert_once(self, idem: IdemKey | None, mark: str, result: dict[str, Any], now: float,
                    insert: Callable[[Tx], None]) -> dict[str, Any] | None:
        return self.jobs.insert_once(idem, mark, result, now, insert)

    def record_key(self, tx: Tx, idem: IdemKey, mark: str, result: dict[str, Any], now: float) -> None:
        self.jobs.record_key(tx, idem, mark, result, now)

    def get_job(self, job_id: str) -> tuple[Row, list[Row], list[Row]]:
        return self.jobs.get_job(job_id)

    def get_job_page(self, job_id: str, limit: int, after_seq: int = 0) -> tuple[Row, list[Row], list[Row],
                                                                              dict[str, int], bool]:
        return self.jobs.get_job_page(job_id, limit, after_seq)

    async def job_page_soon(self, job_id: str, limit: int, after_seq: int = 0) -> tuple[
            Row, list[Row], list[Row], dict[str, int], bool]:
        return await self.jobs.job_page_soon(job_id, limit, after_seq)

    def job_row(self, job_id: str) -> Row:
        return self.jobs.job_row(job_id)

    def cancel(self, job_id: str, reason: str = "cancelled by user") -> Row:
        return self.jobs.cancel(job_id, reason)

    def restart(self, job_id: str) -> Row:
        return self.jobs.restart(job_id)

    def delete(self, job_id: str) -> None:
        self.jobs.delete(job_id)

    # -- agents (nodes.py) ----------------------------------------------------------------------
    def register(self, info: NodeInfo, running: Iterable[str] = (), secret: str | None = None) -> Row:
        return self.nodes.register(info, running, secret)

    def authenticate(self, node_id: str, secret: str | None) -> None:
        self.nodes.authenticate(node_id, secret)

    def drain(self, node_id: str, running: Iterable[str] = ()) -> list[str]:
        return self.nodes.drain(node_id, running)

    def leave(self, node_id: str) -> int:
        return self.nodes.leave(node_id)

    def admin_drain(self, node_id: str, deadline: float | None = None) -> Row:
        return self.nodes.admin_drain(node_id, deadline)

    def undrain(self, node_id: str) -> Row:
        return self.nodes.undrain(node_id)

    def heartbeat(self, node_id: str, running: Sequence[str], usage: dict[str, Any] | None = None) -> list[str]:
        return self.nodes.heartbeat(node_id, running, usage)

    def poll(self, node_id: str, known: Sequence[str]) -> tuple[list[Row], list[str]]:
        return self.nodes.poll(node_id, known)

    def report(self, node_id: str, updates: Sequence[Update], logs: Sequence[LogLine]) -> list[str]:
        return self.nodes.report(node_id, updates, logs)

    # -- the coordinators (leadership.py) ------------------------------------------------------
    def is_leader(self) -> bool:
        return self.leadership.is_leader()

    def fence(self, tx: Tx) -> None:
        """In a leader-only write: raise Fenced unless this coordinator leads under the current epoch."""
        self.leadership.fence(tx)

    def cluster_status(self) -> ClusterState:
        return self.leadership.state()

    def transfer_leadership(self, target: str | None = None) -> ClusterState:
        return self.leadership.transfer(target)

    def drain_coordinator(self, coord_id: str | None = None, draining: bool = True) -> ClusterState:
        """A draining coordinator takes no leadership, hands it over if it leads, and is not ready."""
        return self.leadership.set_draining(coord_id or self.leadership.me.id, draining)

    # -- background work (scheduling.py, reaper.py) --------------------------------------------
    def kick(self) -> None:
        """Ask for a scheduling pass soon (the leader's: on another coordinator, through ``on_kick``)."""
        self._kick.set()
        if not self.leadership.is_leader():
            self.on_kick()

    def kick_local(self) -> None:
        self._kick.set()

    def kicked(self) -> bool:
        """Whether a pass was asked for since the last ``wait_for_kick``."""
        return self._kick.is_set()

    def wait_for_kick(self, timeout: float) -> bool:
        """Waits up to ``timeout`` for a kick; whether one came."""
        kicked = self._kick.wait(timeout)
        self._kick.clear()
        return kicked

    def schedule_once(self) -> int:
        return self.scheduling.schedule_once()

    def open_composites(self) -> None:
        self.scheduling.open_composites()

    def next_retry_in(self) -> float | None:
        return self.scheduling.next_retry_in()

    def refresh_pending(self) -> None:
        self.scheduling.refresh_pending()

    def reap_once(self) -> int:
        return self.reaper.reap_once()

    @staticmethod
    def _node_view(n: Row, a: Row | None) -> NodeView:
        return Scheduling.node_view(n, a)

    @staticmethod
    def _task_view(t: Row) -> TaskView:
        return Scheduling.task_view(t)
