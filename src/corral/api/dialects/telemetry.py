"""CloudAI's telemetry stream: one watcher per coordinator, fanned out to every WebSocket subscriber.

While anyone is subscribed, one background task reads the store every ``CORRAL_TELEMETRY_POLL`` seconds
(0.3 by default) and compares what it reads with what it read before: jobs that started or ended,
workers that registered or went down. Each change becomes one message, serialised once and queued to
every subscriber. Every ``CORRAL_TELEMETRY_INTERVAL`` seconds (5 by default) a ``telemetry_update``
carries the workers, the tasks and the cluster's totals. A subscriber that falls 256 messages behind is
disconnected rather than buffered without end. With no subscriber, nothing runs.

Reading the store (not hooks in the coordinator) sees changes made through every coordinator sharing it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from corral.api.dialects.cloudai_views import (
    STATUS,
    TERMINAL,
    cluster_status,
    progress,
    task_id,
    task_views,
    worker_views,
)
from corral.api.timefmt import rfc3339
from corral.domain.nodes import safe_node
from corral.store.sql import Row, Store, Tx

log = logging.getLogger("corral.telemetry")
ACTIVE = ("pending", "scheduled", "running")
QUEUE_LIMIT = 256
MAX_TASKS = 500  # tasks in one telemetry_update: those placed on workers first, then the newest queued


def message(kind: str, data: dict[str, Any]) -> str:
    return json.dumps({"type": kind, "timestamp": rfc3339(time.time()), "data": data}, separators=(",", ":"))


@dataclass
class Watcher:
    """What the last read saw; ``poll`` returns the messages for what changed since."""

    jobs: dict[int, str] = field(default_factory=dict)  # unfinished jobs: seq -> state
    max_seq: int = 0
    nodes: dict[str, tuple[str, float]] = field(default_factory=dict)  # id -> (state, registered_at)
    finished: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_TASKS))

    def baseline(self, tx: Tx) -> None:
        self.max_seq = tx.max_job_seq()
        self.jobs = dict(tx.job_states(ACTIVE, self.max_seq))
        self.nodes = {n["id"]: (n["state"], n["registered_at"]) for n in tx.nodes()}

    def poll(self, tx: Tx) -> list[str]:
        out = self._workers(tx)
        now = dict(tx.job_states(ACTIVE, self.max_seq))
        # Only a start or an end makes a message: moves between pending and scheduled need no read.
        changed = [seq for seq, st in now.items() if self.jobs.get(seq) != st and st not in ("pending", "scheduled")]
        changed += [seq for seq in self.jobs if seq not in now]  # ended since (or deleted)
        if changed:
            jobs = sorted(tx.jobs_by_seqs(changed), key=lambda j: j["seq"])
            views = {v["task_id"]: v for v in task_views(tx, jobs)}
            for j in jobs:
                out += self._job(j, views[task_id(j["seq"])])
        self.max_seq = max([self.max_seq, *now])
        self.jobs = {seq: st for seq, st in now.items() if st in ACTIVE}
        return out

    def _job(self, job: Row, view: dict[str, Any]) -> list[str]:
        before = self.jobs.get(job["seq"])  # None: new, or back from a restart
        state = job["state"]
        out = []
        if before != "running" and (state == "running" or (state in TERMINAL and job["started_at"])):
            out.append(message("task_started", {
                "task_id": view["task_id"], "status": "running", "worker_id": view["worker_id"],
                "user_id": view["user_id"], "started_at": view["started_at"]}))
        if state in TERMINAL:
            data = {"task_id": view["task_id"], "status": STATUS[state], "worker_id": view["worker_id"],
                    "user_id": view["user_id"], "started_at": view["started_at"],
                    "completed_at": view["completed_at"], "exit_code": view["exit_code"],
                    "error": view["error"], "progress": progress(state)}
            self.finished.append(data)
            out.append(message("task_completed", data))
        return out

    def _workers(self, tx: Tx) -> list[str]:
        out = []
        seen = {}
        for n in map(safe_node, tx.nodes()):  # a malformed stored row still makes a message
            seen[n["id"]] = (n["state"], n["registered_at"])
            before = self.nodes.get(n["id"])
            if n["state"] == "ready" and (before is None or before != seen[n["id"]]):
                out.append(message("worker_registered", {
                    "worker_id": n["id"], "worker_ip": n["hostname"], "name": n["name"],
                    "registered_at": rfc3339(n["registered_at"])}))
            elif n["state"] != "ready" and before is not None and before[0] == "ready":
                out.append(message("worker_disconnected", {
                    "worker_id": n["id"], "worker_ip": n["hostname"], "name": n["name"],
                    "last_heartbeat": int(n["last_heartbeat"])}))
        for nid, (state, _) in self.nodes.items():
            if nid not in seen and state == "ready":
                out.append(message("worker_disconnected", {"worker_id": nid, "last_heartbeat": None}))
        self.nodes = seen
        return out


def snapshot(tx: Tx, finished: Sequence[dict[str, Any]] = ()) -> str:
    """A telemetry_update: the workers, the unfinished tasks (and those that ended since the last one),
    the cluster's totals."""
    workers = worker_views(tx)
    placed, _ = tx.find_jobs(states=["scheduled", "running"], limit=MAX_TASKS)
    queued, _ = tx.find_jobs(states=["pending"], limit=max(MAX_TASKS - len(placed), 0))
    tasks = [{"task_id": v["task_id"], "status": v["status"], "worker_id": v["worker_id"],
              "user_id": v["user_id"], "progress": v["progress"]}
             for v in task_views(tx, placed + queued)]
    done = {t["task_id"] for t in tasks}
    tasks += [{k: f[k] for k in ("task_id", "status", "worker_id", "user_id", "progress")}
              for f in finished if f["task_id"] not in done][: max(MAX_TASKS - len(tasks), 0)]
    status = cluster_status(tx, workers)
    return message("telemetry_update", {
        "workers": [{"worker_id": w["worker_id"], "name": w["name"], "cpu_usage": w["cpu_usage"],
                     "memory_usage": w["memory_usage"], "active_tasks": w["active_tasks"],
                     "last_heartbeat": w["last_heartbeat"], "is_active": w["is_active"]} for w in workers],
        "tasks": tasks,
        "cluster": {k: status[k] for k in ("total_workers", "active_workers", "available_cpu",
                                           "available_memory", "available_storage", "available_gpu",
                                           "running_tasks", "queued_tasks")},
    })


def for_namespaces(tx: Tx, text: str, namespaces: frozenset[str]) -> str | None:
    """One message as a caller limited to ``namespaces`` sees it (None: nothing for it): a
    telemetry_update keeps the tasks of those namespaces and counts only theirs; a task event passes only
    if its task is theirs; worker messages pass as they are."""
    msg = json.loads(text)
    data = msg.get("data") or {}
    if msg.get("type") == "telemetry_update":
        seqs = [_seq(t.get("task_id")) for t in data.get("tasks", [])]
        mine = _visible_seqs(tx, [q for q in seqs if q is not None], namespaces)
        data["tasks"] = [t for t, q in zip(data.get("tasks", []), seqs, strict=True) if q in mine]
        counts = tx.count_jobs_by_state(namespaces)
        data.setdefault("cluster", {}).update(running_tasks=counts.get("running", 0),
                                              queued_tasks=counts.get("pending", 0) + counts.get("scheduled", 0))
        return json.dumps(msg, separators=(",", ":"))
    if "task_id" in data:
        seq = _seq(data["task_id"])
        return text if seq is not None and _visible_seqs(tx, [seq], namespaces) else None
    return text


def _seq(tid: Any) -> int | None:
    v = str(tid or "")
    return int(v[5:]) if v.startswith("task-") and v[5:].isdigit() else None


def _visible_seqs(tx: Tx, seqs: list[int], namespaces: frozenset[str]) -> set[int]:
    return {j["seq"] for j in tx.jobs_by_seqs(seqs) if j["namespace"] in namespaces} if seqs else set()


class Subscriber:
    """One connection's queue of serialised messages."""

    def __init__(self, limit: int = QUEUE_LIMIT) -> None:
        self.items: deque[str] = deque()
        self.limit = limit
        self.ready = asyncio.Event()
        self.dropped = False

    def push(self, text: str) -> None:
        if len(self.items) >= self.limit:
            self.dropped = True  # too slow: it is closed rather than buffered without end
        else:
            self.items.append(text)
        self.ready.set()

    async def next(self) -> str | None:
        while not self.items and not self.dropped:
            self.ready.clear()
            await self.ready.wait()
        return None if self.dropped else self.items.popleft()


def _seconds(name: str, default: float) -> float:
    try:
        return max(float(os.environ.get(name, default)), 0.05)
    except ValueError:
        log.warning("%s is not a number of seconds; using %s", name, default)
        return default


class Hub:
    def __init__(self, store: Store, interval: float | None = None, poll: float | None = None) -> None:
        self.store = store
        self.interval = interval or _seconds("CORRAL_TELEMETRY_INTERVAL", 5.0)
        self.poll = poll or _seconds("CORRAL_TELEMETRY_POLL", 0.3)
        self.subscribers: set[Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._watcher = Watcher()
        self._snapshot: tuple[float, str] | None = None  # (monotonic time, text) of the latest update
        self._reading: asyncio.Future[str] | None = None

    def subscribe(self) -> Subscriber:
        sub = Subscriber()
        self.subscribers.add(sub)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="cloudai-telemetry")
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    def broadcast(self, text: str) -> None:
        for sub in self.subscribers:
            sub.push(text)

    async def current(self) -> str:
        """A telemetry_update for a new subscriber: one read shared by those that connect together."""
        now = time.monotonic()
        if self._snapshot is not None and now - self._snapshot[0] < 1.0:
            return self._snapshot[1]
        if self._reading is None or self._reading.done():
            self._reading = asyncio.ensure_future(asyncio.to_thread(self._read_snapshot))
        text = await asyncio.shield(self._reading)
        self._snapshot = (now, text)
        return text

    def _read_snapshot(self) -> str:
        with self.store.read() as tx:
            return snapshot(tx, list(self._watcher.finished))

    def _step(self, watcher: Watcher, update: bool) -> tuple[list[str], str | None]:
        with self.store.read() as tx:
            events = watcher.poll(tx)
            if not update:
                return events, None
            text = snapshot(tx, list(watcher.finished))
            watcher.finished.clear()
            return events, text

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        watcher = self._watcher = Watcher()
        try:
            await asyncio.to_thread(self._baseline, watcher)
        except Exception:
            log.exception("telemetry: the first read failed")
        next_update = loop.time() + self.interval
        while self.subscribers:
            started = loop.time()
            due = started >= next_update
            try:
                events, update = await asyncio.to_thread(self._step, watcher, due)
            except Exception:
                log.exception("telemetry: reading the store failed; trying again")
                await asyncio.sleep(1.0)
                continue
            for text in events:
                self.broadcast(text)
            if update is not None:
                self.broadcast(update)
                self._snapshot = (time.monotonic(), update)
                next_update = max(next_update + self.interval, loop.time() + self.interval / 2)
            await asyncio.sleep(max(self.poll - (loop.time() - started), 0.01))

    def _baseline(self, watcher: Watcher) -> None:
        with self.store.read() as tx:
            watcher.baseline(tx)
