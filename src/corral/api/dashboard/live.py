"""The dashboard's one push channel: Server-Sent Events, one stream per open page.

While any page is open, one background task per coordinator reads a small fingerprint of the store every
``poll`` seconds (the highest job sequence number, the unfinished jobs' states, the nodes' states and
drains, and for each job a page shows, its tasks' counts by state) and sends a named event to the streams
it concerns: ``jobs`` (a job was submitted, changed state or was deleted), ``nodes``, ``job`` (the job a
page shows changed). Pages re-fetch their part on the event (htmx's SSE extension); events carry no data,
so nothing a caller may not see travels on them. A job page's stream also carries ``log`` events: the job's
new output lines, read after the page's last line while the job runs (and until its last line was sent).

Reading the store (not hooks in the coordinator) sees the changes of every coordinator sharing it, like
the CloudAI telemetry hub. Bounded: at most ``max_streams`` open at once (a 503 after), each stream's
queue holds ``QUEUE_LIMIT`` events (a stream that falls behind is closed; the browser reconnects), a
comment every ``heartbeat`` seconds finds a closed connection, and a closed stream leaves nothing behind.
With no stream open, nothing runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from markupsafe import escape

from corral.api.dialects.telemetry import Subscriber
from corral.store import dashboard as queries
from corral.store.sql import Store, Tx

log = logging.getLogger("corral.dashboard")
ACTIVE = ("pending", "scheduled", "running")
TERMINAL = frozenset({"completed", "failed", "cancelled"})
QUEUE_LIMIT = 64
LOG_BATCH = 500  # lines a stream is sent per poll at most


def sse(event: str, data: str = "") -> str:
    lines = data.split("\n") if data else [""]
    return f"event: {event}\n" + "".join(f"data: {x}\n" for x in lines) + "\n"


def log_html(rows: list[dict[str, Any]], names: dict[str, str], prefix: bool) -> str:
    """Log lines as escaped HTML, one element a line."""
    out = []
    for r in rows:
        task = f'<span class="lt">{escape(names.get(r["task_id"], ""))}</span> ' if prefix else ""
        cls = "ln err" if r.get("stream") == "stderr" else "ln"
        out.append(f'<div class="{cls}" data-seq="{int(r["seq"])}">{task}{escape(r["line"])}</div>')
    return "".join(out)


class Stream(Subscriber):
    """One open page: its queue of serialised events, bounded as a telemetry subscriber's is."""

    def __init__(self, job_id: str | None = None, log_after: int | None = None,
                 names: dict[str, str] | None = None) -> None:
        super().__init__(QUEUE_LIMIT)
        self.job_id = job_id
        self.log_after = log_after  # a job page that follows the job's output: the last line it has
        self.log_done = False
        self.names: dict[str, str] = names or {}


@dataclass
class _Seen:
    max_seq: int = 0
    jobs: dict[int, str] = field(default_factory=dict)
    nodes: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    job_marks: dict[str, tuple[Any, ...]] = field(default_factory=dict)


class TooManyStreams(Exception):
    pass


class Live:
    def __init__(self, store: Store, poll: float = 0.5, max_streams: int = 200, heartbeat: float = 15.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.poll = poll
        self.max_streams = max_streams
        self.heartbeat = heartbeat
        self.clock = clock
        self.streams: set[Stream] = set()
        self.started_at = 0.0  # when the watcher took its baseline
        self.changed: dict[str, float] = {}  # event -> when it was last seen ("job:ID" for a job)
        self._task: asyncio.Task[None] | None = None

    # -- streams ------------------------------------------------------------------------------------
    def open(self, job_id: str | None = None, log_after: int | None = None, since: float | None = None,
             names: dict[str, str] | None = None) -> Stream:
        """A stream for a page rendered at ``since``: sent at once the events it may have missed."""
        if len(self.streams) >= self.max_streams:
            raise TooManyStreams(f"{len(self.streams)} dashboard streams are open, the most this server keeps")
        s = Stream(job_id=job_id, log_after=log_after, names=names or {})
        if since is not None:
            running = self._task is not None and not self._task.done()
            for ev in ("jobs", "nodes", *((f"job:{job_id}",) if job_id else ())):
                if not running or self.changed.get(ev, 0) > since or self.started_at > since:
                    s.push(sse(ev.split(":")[0]))
        self.streams.add(s)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="dashboard-live")
        return s

    def close(self, s: Stream) -> None:
        self.streams.discard(s)

    async def events(self, s: Stream) -> AsyncIterator[str]:
        """The stream's text: a reconnect delay, its events, a comment when idle; ends when dropped."""
        try:
            yield "retry: 2000\n\n"
            while True:
                try:
                    item = await asyncio.wait_for(s.next(), self.heartbeat)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if item is None:
                    return
                yield item
        finally:
            self.close(s)

    # -- the watcher --------------------------------------------------------------------------------
    async def _run(self) -> None:
        seen = _Seen()
        try:
            await asyncio.to_thread(self._step, seen, [], True)
        except Exception:
            log.exception("dashboard: the first read failed")
        self.started_at = self.clock()
        while self.streams:
            started = time.monotonic()
            followers = [s for s in self.streams if s.log_after is not None and not s.log_done]
            try:
                events, logs = await asyncio.to_thread(self._step, seen, followers, False)
            except Exception:
                log.exception("dashboard: reading the store failed; trying again")
                await asyncio.sleep(1.0)
                continue
            now = self.clock()
            for ev in events:
                self.changed[ev] = now
            for s in list(self.streams):
                for ev in events:
                    if ev in ("jobs", "nodes") or ev == f"job:{s.job_id}":
                        s.push(sse(ev.split(":")[0]))
                if s in logs and logs[s]:
                    s.push(sse("log", logs[s]))
            if len(self.changed) > 4 * self.max_streams:  # marks of jobs no page shows any more
                watched = {f"job:{s.job_id}" for s in self.streams}
                self.changed = {k: v for k, v in self.changed.items() if k in ("jobs", "nodes") or k in watched}
            await asyncio.sleep(max(self.poll - (time.monotonic() - started), 0.01))

    def _step(self, seen: _Seen, followers: list[Stream], baseline: bool) -> tuple[list[str], dict[Stream, str]]:
        events: list[str] = []
        with self.store.read() as tx:
            top, now = queries.job_marks(tx, ACTIVE, seen.max_seq)
            active = {seq: st for seq, st in now.items() if st in ACTIVE}
            if top != seen.max_seq or active != seen.jobs:
                events.append("jobs")
            seen.max_seq, seen.jobs = top, active
            nodes = {n["id"]: (n["state"], n.get("drain_requested_at")) for n in tx.nodes()}
            if nodes != seen.nodes:
                events.append("nodes")
            seen.nodes = nodes
            watched = {s.job_id for s in list(self.streams) if s.job_id}
            for job_id in watched:
                mark = self._job_mark(tx, job_id)
                if seen.job_marks.get(job_id) != mark:
                    if job_id in seen.job_marks or baseline:
                        events.append(f"job:{job_id}")
                    seen.job_marks[job_id] = mark
            for gone in set(seen.job_marks) - watched:
                del seen.job_marks[gone]
            logs = {s: self._logs(tx, s) for s in followers}
        return ([] if baseline else events), logs

    @staticmethod
    def _job_mark(tx: Tx, job_id: str) -> tuple[Any, ...]:
        job = tx.job(job_id)
        if job is None:
            return ("gone",)
        return (job["state"], tuple(sorted(tx.count_tasks_by_state(job_id).items())))

    @staticmethod
    def _logs(tx: Tx, s: Stream) -> str:
        assert s.job_id is not None and s.log_after is not None
        job = tx.job(s.job_id)
        rows = tx.logs(s.job_id, after_seq=s.log_after, limit=LOG_BATCH)
        if rows:
            s.log_after = int(rows[-1]["seq"])
        if job is None or (job["state"] in TERMINAL and len(rows) < LOG_BATCH):
            s.log_done = True  # a worker reports a task's end with or after its last lines
        return log_html(rows, s.names, len(set(s.names.values())) > 1)
