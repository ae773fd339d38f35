"""The store on SQLAlchemy Core: SQLite (embedded, WAL) or PostgreSQL, one schema, readable SQL.

Every write goes through ``Store.transaction()``, which yields a ``Tx``. State changes are
compare-and-set: ``UPDATE ... WHERE id = :id AND state IN (:expected)``, and the caller learns from the
row count whether it won.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine

from corral.auth import context
from corral.store import quickread, textsearch
from corral.store import schema as s
from corral.store.audit import AuditQueries
from corral.store.auth import AuthQueries
from corral.store.cluster import ClusterQueries
from corral.store.pods import PLACED as POD_PLACED
from corral.store.pods import PodQueries
from corral.store.quotas import QuotaQueries
from corral.store.rows import CHUNK as CHUNK  # re-exported: callers import these from store.sql
from corral.store.rows import Row as Row
from corral.store.rows import chunks as chunks
from corral.store.rows import command_search
from corral.store.rows import rows as _rows
from corral.store.stacks import StackQueries

ACTIVE = ("scheduled", "running")
LIVE_NODE = ("ready", "draining")  # nodes that heartbeat: a draining node finishes its work first
COMPOSITE_KINDS = ("template", "parallel", "each", "subjob", "steps")  # tasks the coordinator opens itself
def _by_ids(table: sa.Table, cols: Sequence[Any] | None = None) -> Any:
    """SELECT ... WHERE id IN (:ids), with the list bound as one expanding parameter: cheaper than
    building an IN clause value by value on every call."""
    return sa.select(*(cols or [table])).where(table.c.id.in_(sa.bindparam("ids", expanding=True)))


_E, _T = s.executions.c, s.tasks.c
_EXECS = _by_ids(s.executions)
_EXECS_BRIEF = _by_ids(s.executions, [_E.id, _E.task_id, _E.job_id, _E.node_id, _E.state, _E.started_at,
                                      _E.container_id, _E.log_bytes])
_TASKS = _by_ids(s.tasks)
_LOG_BYTES = (sa.update(s.executions).where(_E.id == sa.bindparam("b_id"), _E.log_bytes == sa.bindparam("b_old"))
              .values(log_bytes=sa.bindparam("v")))
# "dag": the task is part of a job whose tasks name depends_on (every such task stores the key).
_DAG = _T.spec["depends_on"].as_string().is_not(None).label("dag")
_TASKS_BRIEF = _by_ids(s.tasks, [_T.id, _T.job_id, _T.position, _T.name, _T.state, _T.execution_id,
                                 _T.attempts, _T.lost_count, _T.parent_id, _DAG])
_JOB_SPECS = _by_ids(s.jobs, [s.jobs.c.id, s.jobs.c.spec])
_WAITING = sa.select(_T.id, _T.job_id, _T.position).where(
    _T.job_id.in_(sa.bindparam("ids", expanding=True)), _T.state == "pending", _T.ready_at.is_(None),
    _T.parent_id.is_(None))
# ``ready_at + 0``: a condition the index on (state, ready_at) cannot answer, so that SQLite's planner (which
# takes that range over an ordered read) walks ix_tasks_queue_order, where ready_at is checked in the index.
_ZERO: Any = sa.literal_column("0")
# One queue's ready tasks to place, in placement order: read along ix_tasks_queue_order (state, queue,
# priority DESC, job_seq, position, ready_at), which gives that order without a sort; ``ready_at`` is checked
# in the index. Composite tasks are opened by the coordinator first (``ready_composites``), not placed: the
# caller leaves them out (a condition on ``kind`` here would make SQLite read along ix_tasks_kind and sort).
_READY = (sa.select(_T.id, _T.job_id, _T.job_seq, _T.queue, _T.priority, _T.runtime, _T.attempts, _T.cpu,
                    _T.memory, _T.disk, _T.gpu, _T.node_selector, _T.reason, _T.kind)
          .where(_T.state == "pending", _T.queue == sa.bindparam("queue"), _T.parked == sa.false(),
                 _T.ready_at + _ZERO <= sa.bindparam("now"))
          .order_by(_T.priority.desc(), _T.job_seq, _T.position).limit(sa.bindparam("lim"))
          .offset(sa.bindparam("off")))
# Whether a composite task waits to be opened (ix_tasks_kind).
_COMPOSITE_READY = (sa.select(_T.id).where(_T.kind.in_(COMPOSITE_KINDS), _T.state == "pending",
                                           _T.ready_at <= sa.bindparam("now")).limit(1))
# The queues that hold pending tasks: a skip-scan of ix_tasks_queue_order, one index probe per queue (not a
# read of every pending task), on SQLite and PostgreSQL alike.
_PENDING_QUEUES = sa.text(
    "WITH RECURSIVE q(name) AS ("
    " SELECT (SELECT min(queue) FROM tasks WHERE state = 'pending')"
    " UNION ALL"
    " SELECT (SELECT min(queue) FROM tasks WHERE state = 'pending' AND queue > q.name) FROM q"
    " WHERE q.name IS NOT NULL)"
    " SELECT name FROM q WHERE name IS NOT NULL LIMIT :lim")
# The ready tasks of a queue that no ready node serves, not yet parked, parked with that reason: a queue's
# new tasks only (ix_tasks_queue_order), not its whole backlog on every pass.
# A composite task parked here is still opened (``ready_composites`` does not look at ``parked``), and
# opening it clears the flag, as every other change to a task row does.
_PARK_QUEUE = (sa.update(s.tasks).where(_T.state == "pending", _T.queue == sa.bindparam("b_queue"),
                                        _T.parked == sa.false(), _T.ready_at + _ZERO <= sa.bindparam("b_now"))
               .values(reason=sa.bindparam("v_r"), parked=True))
_UNPARKED = (sa.select(_T.id).where(_T.state == "pending", _T.queue == sa.bindparam("queue"),
                                    _T.parked == sa.false(), _T.ready_at + _ZERO <= sa.bindparam("now")).limit(1))
_NODES_IN_STATE = (sa.select(s.nodes).where(s.nodes.c.state == sa.bindparam("state"))
                   .order_by(s.nodes.c.name, s.nodes.c.id))
_PARK = (sa.update(s.tasks).where(_T.id == sa.bindparam("b_id"), _T.state == "pending")
         .values(reason=sa.bindparam("v_r"), parked=True))
_UNPARK = sa.update(s.tasks).where(_T.state == "pending", _T.parked == sa.true()).values(parked=False)
# Jobs that need more than a state change when they complete: an output to evaluate, or a parent task.
_JOB_FOLLOWUP = sa.select(s.jobs.c.id, s.jobs.c.parent_task_id, s.jobs.c.spec, s.jobs.c.name, s.jobs.c.state).where(
    s.jobs.c.id.in_(sa.bindparam("ids", expanding=True)),
    sa.or_(s.jobs.c.parent_task_id.is_not(None), s.jobs.c.spec["output"].as_string().is_not(None)))


# What a job's page reads (GET /v1/jobs/{id}), built once: building them cost more than running them.
_JOB = sa.select(s.jobs).where(s.jobs.c.id == sa.bindparam("id"))
_TASKS_PAGE = (sa.select(s.tasks).where(_T.job_id == sa.bindparam("job_id"), _T.seq > sa.bindparam("after"))
               .order_by(_T.seq).limit(sa.bindparam("lim")))
_TASK_STATES = (sa.select(_T.state, sa.func.count()).where(_T.job_id == sa.bindparam("job_id"))
                .group_by(_T.state))
# After every scheduling pass: built once.
_NEXT_READY = sa.select(sa.func.min(_T.ready_at)).where(_T.state == "pending", _T.ready_at > sa.bindparam("now"))


def _allocations_statement() -> Any:
    """Per node, what its active executions hold and what its placed pods hold (``kind`` task | pod): one
    round trip for the two, read by every scheduling pass."""
    e, p = s.executions.c, s.pods.c

    def sums(c: Any) -> list[Any]:
        return [sa.func.sum(c.cpu).label("cpu"), sa.func.sum(c.memory).label("memory"),
                sa.func.sum(c.disk).label("disk"), sa.func.sum(c.gpu).label("gpu"), sa.func.count().label("n")]

    tasks = (sa.select(sa.literal_column("'task'").label("kind"), e.node_id, *sums(e))
             .where(e.state.in_(ACTIVE)).group_by(e.node_id))
    pods = (sa.select(sa.literal_column("'pod'").label("kind"), p.node_id, *sums(p))
            .where(p.state.in_(POD_PLACED), p.node_id.is_not(None)).group_by(p.node_id))
    return sa.union_all(tasks, pods)


_ALLOCATIONS = _allocations_statement()
_EXECS_OF_TASKS = (sa.select(s.executions).where(_E.task_id.in_(sa.bindparam("ids", expanding=True)))
                   .order_by(_E.scheduled_at))


@functools.lru_cache(maxsize=64)
def _jobs_to_state_statement(expected: tuple[str, ...], keys: tuple[str, ...]) -> Any:
    j = s.jobs.c
    return (sa.update(s.jobs).where(j.id.in_(sa.bindparam("ids", expanding=True)), j.state.in_(expected))
            .values({k: sa.bindparam(f"v_{k}") for k in keys}))


_INSERT_TASKS = sa.insert(s.tasks)


@functools.lru_cache(maxsize=256)
def _cas_statement(table: str, expected: tuple[str, ...], keys: tuple[str, ...], on_execution: bool) -> Any:
    """Built once per shape: constructing statements costs more than running them on SQLite."""
    t = s.metadata.tables[table]
    # executemany cannot expand IN (...): spell the expected states out.
    conds = [t.c.id == sa.bindparam("b_id"), sa.or_(*(t.c.state == sa.literal(e) for e in expected))]
    if on_execution:
        conds.append(t.c.execution_id == sa.bindparam("b_exec"))
    return sa.update(t).where(*conds).values({k: sa.bindparam(f"v_{k}") for k in keys})


# Lists of jobs count their matches up to this many; past it, the answer says "at least" (docs/api.md):
# a count costs about COUNT_CAP / selectivity rows read (a tag on one job in 20: 20,000 rows).
COUNT_CAP = 1_000
# SQLite: a text filter with another filter reads along jobs_fts only if fewer jobs than this hold the text
# (counted up to it first; a few ms): past it, the other filter's index, as without jobs_fts.
FTS_PROBE = 5_000
# Jobs created after a time window from which on its page is read by created_at and sorted, rather than
# along the newest jobs (Tx._window_in_the_past)
WINDOW_WALK = 2_000


@dataclass(frozen=True)
class Window:
    """A filter on the jobs' creation time: from ``start`` (inclusive) to ``end``, inclusive if ``closed``;
    either may be None (no bound)."""

    start: float | None
    end: float | None
    closed: bool

    @property
    def unbounded(self) -> bool:
        return self.start is None and self.end is None

    def conds(self, col: Any) -> list[Any]:
        out: list[Any] = [] if self.start is None else [col >= self.start]
        if self.end is not None:
            out.append(col <= self.end if self.closed else col < self.end)
        return out

    def later(self, col: Any) -> Any:
        """What holds for the jobs created after the window (it has an end)."""
        return col > self.end if self.closed else col >= self.end


ANY_TIME = Window(None, None, closed=False)


# executemany cannot expand IN (...): the live states spelled out, as in _cas_statement.
_TOUCH = sa.update(s.nodes).where(s.nodes.c.id == sa.bindparam("b_id"),
                                  sa.or_(*(s.nodes.c.state == sa.literal(v) for v in LIVE_NODE)))
# Built once: a statement made per call is generated and cache-keyed again each time (SQLAlchemy memoizes
# the key on the statement object); heartbeats run these many times a second.
_TOUCH_USAGE = _TOUCH.values(last_heartbeat=sa.bindparam("v_ts"), usage=sa.bindparam("v_usage"))
_TOUCH_BARE = _TOUCH.values(last_heartbeat=sa.bindparam("v_ts"))


_LOG_COLS = "job_id, seq, task_id, execution_id, stream, line, ts"


@functools.lru_cache(maxsize=128)
def _tails_statement(jobs: int) -> Any:
    """Tx.tail_logs_of_jobs for this many jobs: written as text (built once per size; a SQLAlchemy construct
    of 100 arms cost more to build and to key than to run)."""
    newest = "ORDER BY seq DESC"
    arms = " UNION ALL ".join(
        f"SELECT {_LOG_COLS}, row_number() OVER ({newest}) AS rn, "
        f"sum(length(line) + 1) OVER ({newest} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS size "
        f"FROM (SELECT {_LOG_COLS} FROM logs WHERE job_id = :j{i} {newest} LIMIT :n) AS a{i}"
        for i in range(jobs))
    return sa.text(f"SELECT {_LOG_COLS} FROM ({arms}) AS u WHERE rn = 1 OR size <= :max_bytes "
                   "ORDER BY job_id, seq")


def _first_command(tasks: Sequence[Row]) -> str | None:
    """command_search of a new job: its first top-level task's command."""
    first = next((t for t in tasks if t["position"] == 0 and t.get("parent_id") is None), None)
    return command_search(first["spec"] or {}) if first else None


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"s": seq}).encode()).decode().rstrip("=")


MAX_CURSOR_SEQ = 10**18 - 1  # a cursor's sequence number at most (api/openapi.py's CURSOR_PATTERN: 34 characters)


def decode_cursor(cursor: str) -> int:
    """The sequence number of a cursor ``encode_cursor`` made (exactly such a cursor: ValueError otherwise)."""
    try:
        pad = "=" * (-len(cursor) % 4)
        seq = json.loads(base64.urlsafe_b64decode(cursor + pad))["s"]
    except Exception as e:
        raise ValueError("cursor is not one this server handed out") from e
    if type(seq) is not int or not 0 <= seq <= MAX_CURSOR_SEQ or encode_cursor(seq) != cursor:
        raise ValueError("cursor is not one this server handed out")
    return seq


class Tx(PodQueries, StackQueries, AuditQueries, AuthQueries, ClusterQueries, QuotaQueries):
    """One transaction. Methods return plain dicts; CAS methods return whether the row changed. The
    queries about pods are in store/pods.py, those about stacks in store/stacks.py, the audit log and join
    tokens in store/audit.py."""

    def __init__(self, conn: Connection, text_index: bool = False) -> None:
        self.c = conn
        self.text_index = text_index  # SQLite's jobs_fts can narrow the text filters (store.textsearch)

    # -- jobs ---------------------------------------------------------------------------------
    def insert_jobs(self, items: Sequence[tuple[Row, Sequence[Row]]]) -> None:
        """Many jobs and their tasks in two bulk statements."""
        if not items:
            return
        q = sa.insert(s.jobs).returning(s.jobs.c.id, s.jobs.c.seq, sort_by_parameter_order=True)
        seqs: dict[str, int] = {jid: seq for jid, seq in self.c.execute(q, [
            {**job, "command_search": _first_command(ts)} for job, ts in items])}
        for job, _ in items:
            job["seq"] = seqs[job["id"]]  # the caller's row gets the number the store gave it
        tasks = [{**t, "job_seq": seqs[job["id"]]} for job, ts in items for t in ts]
        self.c.execute(_INSERT_TASKS, tasks)

    def job(self, job_id: str) -> Row | None:
        """None also for a job the current caller may not see (corral.auth.context): a 404, not a 403."""
        r = self.c.execute(_JOB, {"id": job_id}).mappings().first()
        return dict(r) if r and context.sees(r["namespace"]) else None

    def jobs_by_ids(self, ids: Iterable[str]) -> list[Row]:
        return [r for part in chunks(ids) for r in _rows(self.c.execute(sa.select(s.jobs).where(
            s.jobs.c.id.in_(part)))) if context.sees(r["namespace"])]

    def cas_many(self, table: str, expected: Sequence[str], rows: Sequence[Row],
                 on_execution: bool = False) -> int:
        """Compare-and-set many rows of ``table`` at once: each row is ``{"id": ..., column: value}``,
        changed only while its state is in ``expected`` (and, for tasks with ``on_execution``, while it
        is still on the execution given as ``"_exec"``). Returns how many rows changed."""
        groups: dict[tuple[str, ...], list[Row]] = {}
        for r in rows:
            groups.setdefault(tuple(sorted(k for k in r if k not in ("id", "_exec"))), []).append(r)
        changed = 0
        for keys, group in groups.items():
            q = _cas_statement(table, tuple(expected), keys, on_execution)
            params = [{"b_id": r["id"], **({"b_exec": r["_exec"]} if on_execution else {}),
                       **{f"v_{k}": r[k] for k in keys}} for r in group]
            changed += self.c.execute(q, params).rowcount
        return changed

    def jobs_to_state(self, ids: Iterable[str], expected: Sequence[str], **values: Any) -> int:
        q = _jobs_to_state_statement(tuple(expected), tuple(sorted(values)))
        return sum(self.c.execute(q, {"ids": part, **{f"v_{k}": v for k, v in values.items()}}).rowcount
                   for part in chunks(ids))

    def jobs_started(self, started: dict[str, float]) -> None:
        if started:
            q = (sa.update(s.jobs).where(s.jobs.c.id == sa.bindparam("b_id"), s.jobs.c.started_at.is_(None))
                 .values(started_at=sa.bindparam("v_ts")))
            self.c.execute(q, [{"b_id": k, "v_ts": v} for k, v in started.items()])

    def _locked(self, q: Any, lock: bool) -> Any:
        # SQLite has one writer at a time already (the store's write lock); PostgreSQL locks the rows.
        return q.with_for_update() if lock and self.c.dialect.name == "postgresql" else q

    def cas_job(self, job_id: str, expected: Sequence[str], **values: Any) -> bool:
        q = sa.update(s.jobs).where(s.jobs.c.id == job_id, s.jobs.c.state.in_(expected)).values(**values)
        return self.c.execute(q).rowcount == 1

    def delete_job(self, job_id: str, terminal: Sequence[str]) -> bool:
        gone = self.c.execute(sa.delete(s.jobs).where(s.jobs.c.id == job_id, s.jobs.c.state.in_(terminal)))
        if gone.rowcount != 1:
            return False
        for t in (s.tasks, s.executions, s.logs, s.podling_tasks):
            self.c.execute(sa.delete(t).where(t.c.job_id == job_id))
        return True

    def delete_jobs(self, ids: Sequence[str], terminal: Sequence[str]) -> int:
        """delete_job for many jobs in one statement a table: those still finished go, with their rows."""
        if not ids:
            return 0
        gone = [r[0] for r in self.c.execute(sa.delete(s.jobs).where(s.jobs.c.id.in_(list(ids)),
                                                                      s.jobs.c.state.in_(list(terminal)))
                                             .returning(s.jobs.c.id))]
        if gone:
            for t in (s.tasks, s.executions, s.logs, s.podling_tasks):
                self.c.execute(sa.delete(t).where(t.c.job_id.in_(gone)))
        return len(gone)

    def list_jobs(self, *, state: str | None = None, queue: str | None = None, tag: str | None = None,
                  q: str | None = None, created_after: float | None = None,
                  created_before: float | None = None, before_seq: int | None = None,
                  id_prefix: str | None = None, limit: int = 50, offset: int = 0) -> tuple[list[Row], int]:
        conds: list[Any] = []
        if id_prefix:  # lowercase hex (checked by the caller): a range the unique index on id answers
            conds += [s.jobs.c.id >= id_prefix, s.jobs.c.id < id_prefix + "g"]
        if state:
            conds.append(s.jobs.c.state.in_(list(dict.fromkeys(state.split(",")))))  # each state once
        if queue:
            conds.append(s.jobs.c.queue == queue)
        texts: list[tuple[str, str]] = []
        if tag:
            texts.append(("search", f"\x1f{tag.lower()}\x1f"))
        if q:
            texts.append(("search", q.lower()))
        return self._page_of_jobs(conds, before_seq, offset, limit, texts=texts,
                                  window=Window(created_after, created_before, closed=False))

    def _page_of_jobs(self, conds: list[Any], before_seq: int | None, offset: int, limit: int,
                      texts: Sequence[tuple[str, str]] = (), window: Window = ANY_TIME) -> tuple[list[Row], int]:
        """Jobs matching ``conds``, newest first, from ``before_seq`` (a cursor) or ``offset``, and how many
        match in all (of those the current caller may see), counted up to ``COUNT_CAP + 1``: a larger
        number means "more than COUNT_CAP" (counting a million rows for every page costs more than the page).
        ``texts``: (column, substring) pairs the jobs must hold, searched with ``LIKE``; on SQLite, where
        jobs_fts is whole, those of three characters or more also narrow the jobs by it (the ``LIKE`` stays):
        always when nothing else filters (no other ``conds``: a state, a queue, a time window...), else only
        when the text is rarer than ``FTS_PROBE`` jobs (a common word and a rare state are read by the state's
        index, as before: along jobs_fts that read every job with the word). ``window``: the jobs' creation
        time (see ``Window``)."""
        others = bool(conds) or not window.unbounded
        conds = [*conds, *(getattr(s.jobs.c, col).contains(term, autoescape=True) for col, term in texts)]
        if (visible := context.visible()) is not None:
            conds = [*conds, s.jobs.c.namespace.in_(sorted(visible))]
        seq: Any = s.jobs.c.seq
        match = " AND ".join(textsearch.phrase(col, term) for col, term in texts if textsearch.usable(term))
        fts = textsearch.fts
        if match and self.text_index and (not others and visible is None or self.c.execute(
                sa.select(sa.func.count()).select_from(sa.select(fts.c.rowid).where(
                    fts.c[textsearch.TABLE].match(match)).limit(FTS_PROBE).subquery())).scalar_one() < FTS_PROBE):
            # Read along jobs_fts, newest rowid first (the order FTS5 gives without a sort, which a sort
            # by jobs.seq would not use), each match's job by its primary key; the cursor is a rowid range.
            conds = [*conds, fts.c.rowid == s.jobs.c.seq, fts.c[textsearch.TABLE].match(match)]
            seq = fts.c.rowid
        created = s.jobs.c.created_at
        window_conds = window.conds(created)
        some = sa.select(s.jobs.c.seq).where(*conds, *window_conds).limit(COUNT_CAP + 1).subquery()
        total = self.c.execute(sa.select(sa.func.count()).select_from(some)).scalar_one()
        # A time window is read one of two ways; the page is the same. A window that ends in the past, or
        # holds few jobs (COUNT_CAP at most): by created_at, its rows sorted, not along the newest jobs
        # backwards until the window is reached (the planners assume its rows are spread evenly; at a million
        # jobs a window two months back scanned 550,000 rows). A window that ends now or nearly (the last 30
        # days, say), or does not end, and holds many jobs: along the newest jobs, which reaches it at once;
        # its bounds are then written ``created_at + 0``, which no index answers, else the planners read the
        # whole window by the created_at index and sort it (735 ms for 30 days of a million jobs on SQLite).
        walk = window.unbounded or total > COUNT_CAP and not self._window_in_the_past(window)
        if walk:
            window_conds = window.conds(created + 0)
        conds = [*conds, *window_conds]
        page = [*conds, seq < before_seq] if before_seq is not None else conds
        if not walk:  # ``seq + 0`` orders the same but no index gives that order, so the created_at index is
            # the way in: the page's seqs first (index-only on ix_jobs_created_seq where conds allow), then its rows
            seqs = (sa.select(s.jobs.c.seq).where(*page).order_by((s.jobs.c.seq + 0).desc())
                    .offset(offset).limit(limit).subquery())
            q = sa.select(s.jobs).join(seqs, s.jobs.c.seq == seqs.c.seq).order_by(s.jobs.c.seq.desc())
        else:
            q = sa.select(s.jobs).where(*page).order_by(seq.desc()).offset(offset).limit(limit)
        return _rows(self.c.execute(q)), int(total)

    def _window_in_the_past(self, window: Window) -> bool:
        """Whether ``window`` ends and at least ``WINDOW_WALK`` jobs were created after it: then its page is
        read by created_at and sorted (see ``_page_of_jobs``). Either way the page is the same; this count
        reads at most ``WINDOW_WALK`` entries of the created_at index."""
        if window.end is None:
            return False
        some = sa.select(s.jobs.c.seq).where(window.later(s.jobs.c.created_at)).limit(WINDOW_WALK).subquery()
        return int(self.c.execute(sa.select(sa.func.count()).select_from(some)).scalar_one()) >= WINDOW_WALK

    def count_jobs_by_state(self, namespaces: Iterable[str] | None = None) -> dict[str, int]:
        """Jobs per state, of ``namespaces`` if given, else of those the current caller sees (a background
        thread: all)."""
        q = sa.select(s.jobs.c.state, sa.func.count()).group_by(s.jobs.c.state)
        if (visible := context.visible() if namespaces is None else namespaces) is not None:
            q = q.where(s.jobs.c.namespace.in_(sorted(visible)))
        return {st: int(n) for st, n in self.c.execute(q).all()}

    # -- tasks --------------------------------------------------------------------------------
    def tasks_of(self, job_id: str) -> list[Row]:
        return _rows(self.c.execute(
            sa.select(s.tasks).where(s.tasks.c.job_id == job_id).order_by(s.tasks.c.position)))

    def tasks_page(self, job_id: str, after_seq: int, limit: int) -> list[Row]:
        """The job's tasks in the order they were created (top-level ones first, in position order, then
        those composites opened), from after ``after_seq``."""
        return _rows(self.c.execute(_TASKS_PAGE, {"job_id": job_id, "after": after_seq, "lim": limit}))

    def count_tasks_by_state(self, job_id: str) -> dict[str, int]:
        return {st: int(n) for st, n in self.c.execute(_TASK_STATES, {"job_id": job_id}).all()}

    def executions_of_tasks(self, task_ids: Iterable[str]) -> list[Row]:
        return [r for part in chunks(task_ids) for r in _rows(self.c.execute(_EXECS_OF_TASKS, {"ids": part}))]

    def task(self, task_id: str) -> Row | None:
        r = self.c.execute(sa.select(s.tasks).where(s.tasks.c.id == task_id)).mappings().first()
        return dict(r) if r else None

    def tasks_by_ids(self, ids: Iterable[str], lock: bool = False, brief: bool = False) -> list[Row]:
        q = self._locked(_TASKS_BRIEF if brief else _TASKS, lock)
        return [r for part in chunks(ids) for r in _rows(self.c.execute(q, {"ids": part}))]

    def task_spec(self, task_id: str) -> dict[str, Any]:
        spec = self.c.execute(sa.select(s.tasks.c.spec).where(s.tasks.c.id == task_id)).scalar_one()
        return dict(spec)

    def job_specs(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        return {jid: dict(spec) for part in chunks(ids) for jid, spec in self.c.execute(_JOB_SPECS, {"ids": part})}

    def waiting_tasks_of_jobs(self, job_ids: Iterable[str]) -> list[Row]:
        """Pending tasks that wait for the task before them, in these jobs."""
        return [r for part in chunks(job_ids) for r in _rows(self.c.execute(_WAITING, {"ids": part}))]

    def cas_task(self, task_id: str, expected: Sequence[str], on_execution: str | None = None,
                 **values: Any) -> bool:
        """Move a task if it is in one of ``expected`` (and, when given, still on ``on_execution``)."""
        conds = [s.tasks.c.id == task_id, s.tasks.c.state.in_(expected)]
        if on_execution is not None:
            conds.append(s.tasks.c.execution_id == on_execution)
        return self.c.execute(sa.update(s.tasks).where(*conds).values(**values)).rowcount == 1

    def cas_tasks_of_job(self, job_id: str, expected: Sequence[str], **values: Any) -> list[str]:
        ids = [r[0] for r in self.c.execute(sa.select(s.tasks.c.id).where(
            s.tasks.c.job_id == job_id, s.tasks.c.state.in_(expected))).all()]
        for part in chunks(ids):
            self.c.execute(sa.update(s.tasks).where(s.tasks.c.id.in_(part), s.tasks.c.state.in_(expected))
                           .values(**values))
        return ids

    def assign_tasks(self, rows: Sequence[Row]) -> set[str]:
        """pending -> scheduled for many tasks (``{"id", "node_id", "execution_id"}``); returns the ids
        of the tasks that were still pending and so were assigned."""
        if not rows:
            return set()
        t = s.tasks.c
        q = (sa.update(s.tasks).where(t.id == sa.bindparam("b_id"), t.state == "pending")
             .values(state="scheduled", node_id=sa.bindparam("v_node"), execution_id=sa.bindparam("v_exec"),
                     reason=None, attempts=t.attempts + 1))
        n = self.c.execute(q, [{"b_id": r["id"], "v_node": r["node_id"], "v_exec": r["execution_id"]}
                               for r in rows]).rowcount
        if n == len(rows):
            return {r["id"] for r in rows}
        mine = {r["id"]: r["execution_id"] for r in rows}
        got = [r for part in chunks(mine) for r in self.c.execute(sa.select(t.id, t.execution_id).where(
            t.id.in_(part))).all()]
        return {tid for tid, ex in got if mine[tid] == ex}

    # -- workflows ----------------------------------------------------------------------------
    def ready_composites(self, now: float, limit: int) -> list[Row]:
        """Ready tasks that the coordinator opens or evaluates itself (kind other than 'run')."""
        q = (sa.select(s.tasks).where(_T.kind.in_(COMPOSITE_KINDS), _T.state == "pending",
                                           _T.ready_at <= now)
             .order_by(_T.priority.desc(), _T.job_seq, _T.position).limit(limit))
        return _rows(self.c.execute(q))

    def next_waiting(self, job_id: str, parent_id: str | None, n: int) -> list[str]:
        """Up to ``n`` tasks of one scope (the job's top, or a composite's children) that wait their turn."""
        where = _T.parent_id == parent_id if parent_id is not None else sa.and_(_T.job_id == job_id,
                                                                                 _T.parent_id.is_(None))
        q = (sa.select(_T.id).where(where, _T.state == "pending", _T.ready_at.is_(None))
             .order_by(_T.position).limit(n))
        return [r[0] for r in self.c.execute(q)]

    def count_unfinished(self, job_id: str, parent_id: str | None) -> int:
        where = _T.parent_id == parent_id if parent_id is not None else sa.and_(_T.job_id == job_id,
                                                                                 _T.parent_id.is_(None))
        q = sa.select(sa.func.count()).select_from(s.tasks).where(where, _T.state.not_in(("completed", "skipped")))
        return int(self.c.execute(q).scalar_one())

    def outputs_of_job(self, job_id: str) -> list[tuple[dict[str, Any], str | None]]:
        """(spec, output) of the job's completed tasks that keep their output under a name (``var``)."""
        q = sa.select(_T.spec, _T.output).where(_T.job_id == job_id, _T.state == "completed",
                                                _T.spec["var"].as_string().is_not(None))
        return [(dict(sp), out) for sp, out in self.c.execute(q)]

    def pending_ready_at(self, ids: Iterable[str], lock: bool = False) -> dict[str, float | None]:
        """``ready_at`` of those of these tasks that are still pending: what a decision taken outside the
        transaction compares against before it is written."""
        q = self._locked(sa.select(_T.id, _T.ready_at).where(_T.id.in_(sa.bindparam("ids", expanding=True)),
                                                            _T.state == "pending"), lock)
        return {i: r for part in chunks(ids) for i, r in self.c.execute(q, {"ids": part}).all()}

    def count_tasks_of_jobs(self, job_ids: Iterable[str]) -> int:
        return sum(int(self.c.execute(sa.select(sa.func.count()).select_from(s.tasks)
                                      .where(_T.job_id.in_(part))).scalar_one()) for part in chunks(job_ids))

    def job_tree(self, job_id: str) -> list[str]:
        """The jobs whose tasks count together against the size limit: the job at the top of the job's tree
        (its ``root_job_id``, or following parent_job_id up for rows made before it), and every job spawned
        below that one, attached or detached."""
        j = s.jobs.c
        root, seen = job_id, {job_id}
        while True:
            row = self.c.execute(sa.select(j.parent_job_id, j.root_job_id).where(j.id == root)).first()
            up = None if row is None else row.root_job_id or row.parent_job_id
            if up is None or up in seen:
                break
            seen.add(up)
            root = up
        tree, level = {root}, [root]
        while level:
            level = [r[0] for part in chunks(level) for r in self.c.execute(
                sa.select(j.id).where(j.parent_job_id.in_(part))).all() if r[0] not in tree]
            tree.update(level)
        tree.update(r[0] for r in self.c.execute(sa.select(j.id).where(j.root_job_id == root)).all())
        return [root, *(t for t in tree if t != root)]

    def insert_tasks(self, rows: Sequence[Row]) -> None:
        if rows:
            self.c.execute(_INSERT_TASKS, list(rows))

    def delete_tasks(self, ids: Sequence[str]) -> None:
        """Tasks opened from a composite that runs again: they go, with their attempts and output."""
        for part in chunks(ids):
            self.c.execute(sa.delete(s.logs).where(s.logs.c.task_id.in_(part)))
            self.c.execute(sa.delete(s.executions).where(s.executions.c.task_id.in_(part)))
            self.c.execute(sa.delete(s.tasks).where(_T.id.in_(part)))

    def jobs_with_followup(self, ids: Iterable[str]) -> list[Row]:
        return [r for part in chunks(ids) for r in _rows(self.c.execute(_JOB_FOLLOWUP, {"ids": part}))]

    def child_jobs(self, job_id: str, states: Sequence[str]) -> list[str]:
        q = sa.select(s.jobs.c.id).where(s.jobs.c.parent_job_id == job_id, s.jobs.c.state.in_(states))
        return [r[0] for r in self.c.execute(q)]

    def set_progress(self, rows: Sequence[Row]) -> None:
        """``{"id", "_exec", "progress"}``: only while the task is still on that execution."""
        if rows:
            q = (sa.update(s.tasks).where(_T.id == sa.bindparam("b_id"), _T.execution_id == sa.bindparam("b_exec"))
                 .values(progress=sa.bindparam("v")))
            self.c.execute(q, [{"b_id": r["id"], "b_exec": r["_exec"], "v": r["progress"]} for r in rows])

    def ready_tasks(self, queue: str, now: float, limit: int, offset: int = 0) -> list[Row]:
        """One queue's pending tasks that are not parked and whose time has come, by priority then age (of
        every kind: the caller places the 'run' ones);
        ``offset``: past that many of them (those that wait, as a scheduling pass looks further)."""
        return _rows(self.c.execute(_READY, {"queue": queue, "now": now, "lim": limit, "off": offset}))

    def composites_ready(self, now: float) -> bool:
        """Whether some composite or template task waits to be opened."""
        return self.c.execute(_COMPOSITE_READY, {"now": now}).first() is not None

    def pending_queues(self, limit: int = 10_000) -> list[str]:
        """The queues that hold pending tasks (ready or not), in name order."""
        return [r[0] for r in self.c.execute(_PENDING_QUEUES, {"lim": limit})]

    def unparked_queues(self, queues: Iterable[str], now: float) -> list[str]:
        """Those of these queues with a ready task that is not parked (one index probe each)."""
        return [q for q in queues if self.c.execute(_UNPARKED, {"queue": q, "now": now}).first() is not None]

    def park_queue(self, queue: str, now: float, reason: str) -> int:
        """Park the queue's ready tasks that are not parked yet, with this reason; how many."""
        return int(self.c.execute(_PARK_QUEUE, {"b_queue": queue, "b_now": now, "v_r": reason}).rowcount)

    def park_tasks(self, reasons: dict[str, str]) -> None:
        """Park these tasks (while still pending), each with its reason."""
        if reasons:
            self.c.execute(_PARK, [{"b_id": k, "v_r": v} for k, v in reasons.items()])

    def unpark_tasks(self) -> int:
        """Every parked task is read again by the next scheduling pass; how many."""
        return int(self.c.execute(_UNPARK).rowcount)

    def count_pending_tasks(self) -> int:
        q = sa.select(sa.func.count()).select_from(s.tasks).where(s.tasks.c.state == "pending")
        return int(self.c.execute(q).scalar_one())

    def next_ready_at(self, now: float) -> float | None:
        v = self.c.execute(_NEXT_READY, {"now": now}).scalar()
        return None if v is None else float(v)

    def set_reasons(self, reasons: dict[str, str | None]) -> None:
        if reasons:
            self.c.execute(sa.update(s.tasks).where(s.tasks.c.id == sa.bindparam("tid"),
                                                    s.tasks.c.state == "pending")
                           .values(reason=sa.bindparam("r")),
                           [{"tid": k, "r": v} for k, v in reasons.items()])

    def count_tasks_by_queue_state(self) -> list[tuple[str, str, int]]:
        q = (sa.select(s.tasks.c.queue, s.tasks.c.state, sa.func.count())
             .where(s.tasks.c.state.in_(("pending", "scheduled", "running")))
             .group_by(s.tasks.c.queue, s.tasks.c.state))
        return [(qn, st, int(n)) for qn, st, n in self.c.execute(q).all()]

    # -- executions ---------------------------------------------------------------------------
    def insert_executions(self, rows: Sequence[Row]) -> None:
        if rows:
            self.c.execute(sa.insert(s.executions), list(rows))

    def executions_of_job(self, job_id: str) -> list[Row]:
        return _rows(self.c.execute(sa.select(s.executions).where(s.executions.c.job_id == job_id)
                                    .order_by(s.executions.c.scheduled_at)))

    def executions_by_ids(self, ids: Iterable[str], lock: bool = False, brief: bool = False) -> list[Row]:
        """The executions; with ``lock``, their rows stay locked until the transaction ends; ``brief``
        leaves out what a state change does not need."""
        q = self._locked(_EXECS_BRIEF if brief else _EXECS, lock)
        return [r for part in chunks(ids) for r in _rows(self.c.execute(q, {"ids": part}))]

    def active_executions(self, node_id: str | None = None, state: str | None = None) -> list[Row]:
        conds: list[Any] = [s.executions.c.state.in_([state] if state else ACTIVE)]
        if node_id is not None:
            conds.append(s.executions.c.node_id == node_id)
        return _rows(self.c.execute(sa.select(s.executions).where(*conds)))

    def cas_execution(self, exec_id: str, expected: Sequence[str], **values: Any) -> bool:
        q = (sa.update(s.executions).where(s.executions.c.id == exec_id, s.executions.c.state.in_(expected))
             .values(**values))
        return self.c.execute(q).rowcount == 1

    def allocations(self) -> list[Row]:
        """Per node: resources held by its scheduled and running executions and its placed pods, and the
        GPUs in use. One query, and a second only while some execution holds GPUs."""
        out: list[Row] = []
        by_node: dict[str, Row] = {}
        pods: list[Row] = []
        for r in _rows(self.c.execute(_ALLOCATIONS)):
            kind = r.pop("kind")
            (out if kind == "task" else pods).append(r)
        gpus = any(r["gpu"] for r in out)
        used: dict[str, list[int]] = {}
        if gpus:
            e = s.executions.c
            for nid, gl in self.c.execute(sa.select(e.node_id, e.gpus).where(e.state.in_(ACTIVE), e.gpu > 0)):
                used.setdefault(nid, []).extend(gl or [])
        for r in out:
            r["gpus_used"] = used.get(r["node_id"], [])
            by_node[r["node_id"]] = r
        # Pods share a node's capacity with tasks: a placed pod holds its summed requests.
        for p in pods:
            mine = by_node.get(p["node_id"])
            if mine is None:
                out.append({**p, "n": 0, "pods": p["n"], "gpus_used": []})
            else:
                for k in ("cpu", "memory", "disk", "gpu"):
                    mine[k] = (mine[k] or 0) + (p[k] or 0)
                mine["pods"] = p["n"]
        return out

    # -- nodes --------------------------------------------------------------------------------
    def insert_node(self, row: Row) -> bool:
        """Add a node unless one with its id exists (a concurrent registration of the same id): whether
        it was added. On PostgreSQL, a concurrent insert not yet committed is waited for."""
        insert = pg_insert if self.c.dialect.name == "postgresql" else sqlite_insert
        q = (insert(s.nodes).values(**row).on_conflict_do_nothing(index_elements=[s.nodes.c.id])
             .returning(s.nodes.c.id))  # rowcount is not reliable here (psycopg: -1)
        return self.c.execute(q).first() is not None

    def update_node(self, row: Row) -> bool:
        """Bring back a node that exists (read with ``node_secret_hash(lock=True)``); its secret is never
        changed here."""
        values = {k: v for k, v in row.items() if k not in ("id", "secret_hash")}
        return self.c.execute(sa.update(s.nodes).where(s.nodes.c.id == row["id"]).values(**values)).rowcount == 1

    def node(self, node_id: str) -> Row | None:
        r = self.c.execute(sa.select(s.nodes).where(s.nodes.c.id == node_id)).mappings().first()
        return dict(r) if r else None

    def nodes(self, state: str | None = None) -> list[Row]:
        if state:  # every scheduling pass reads the ready nodes: a statement built once
            return _rows(self.c.execute(_NODES_IN_STATE, {"state": state}))
        return _rows(self.c.execute(sa.select(s.nodes).order_by(s.nodes.c.name, s.nodes.c.id)))

    def nodes_by_ids(self, ids: Iterable[str]) -> list[Row]:
        """These nodes only (a view of a few pods need not read every node of a large cluster)."""
        return [r for part in chunks(sorted(set(ids)))
                for r in _rows(self.c.execute(sa.select(s.nodes).where(s.nodes.c.id.in_(part))))]

    def touch_node(self, node_id: str, now: float, usage: dict[str, Any] | None = None) -> bool:
        values: dict[str, Any] = {"last_heartbeat": now}
        if usage is not None:
            values["usage"] = usage
        q = (sa.update(s.nodes).where(s.nodes.c.id == node_id, s.nodes.c.state.in_(LIVE_NODE))
             .values(**values))
        return self.c.execute(q).rowcount == 1

    def touch_nodes(self, beats: Sequence[tuple[str, float, dict[str, Any] | None]]) -> bool:
        """touch_node for many nodes in one statement (an executemany); whether every one was live."""
        with_usage = [{"b_id": i, "v_ts": t, "v_usage": u} for i, t, u in beats if u is not None]
        bare = [{"b_id": i, "v_ts": t} for i, t, u in beats if u is None]
        n = 0
        if with_usage:
            n += self.c.execute(_TOUCH_USAGE, with_usage).rowcount
        if bare:
            n += self.c.execute(_TOUCH_BARE, bare).rowcount
        return n == len(beats)

    def stale_nodes(self, cutoff: float) -> list[Row]:
        return _rows(self.c.execute(sa.select(s.nodes).where(s.nodes.c.state.in_(LIVE_NODE),
                                                             s.nodes.c.last_heartbeat < cutoff)))

    def node_secret_hash(self, node_id: str, lock: bool = False) -> tuple[bool, str | None]:
        """Whether the node exists, and the hash of its secret (with ``lock``, its row is locked on
        PostgreSQL until the transaction ends)."""
        q = self._locked(sa.select(s.nodes.c.secret_hash).where(s.nodes.c.id == node_id), lock)
        r = self.c.execute(q).first()
        return (False, None) if r is None else (True, r[0])

    def cas_node(self, node_id: str, expected: str, **values: Any) -> bool:
        q = sa.update(s.nodes).where(s.nodes.c.id == node_id, s.nodes.c.state == expected).values(**values)
        return self.c.execute(q).rowcount == 1

    # -- logs ---------------------------------------------------------------------------------
    def append_logs(self, rows: Sequence[Row]) -> None:
        if rows:
            self.c.execute(sa.insert(s.logs), list(rows))

    def add_log_bytes(self, counts: Sequence[tuple[str, int, int]]) -> int:
        """``(execution id, bytes before, bytes after)``: compare-and-set of each execution's stored log
        size. Returns how many changed."""
        if not counts:
            return 0
        return self.c.execute(_LOG_BYTES, [{"b_id": i, "b_old": old, "v": new} for i, old, new in counts]).rowcount

    def logs(self, job_id: str, *, after_seq: int = 0, limit: int = 10000) -> list[Row]:
        cols = [s.logs.c.seq, s.logs.c.task_id, s.logs.c.execution_id, s.logs.c.stream, s.logs.c.line,
                s.logs.c.ts]
        q = (sa.select(*cols).where(s.logs.c.job_id == job_id, s.logs.c.seq > after_seq)
             .order_by(s.logs.c.seq).limit(limit))
        return _rows(self.c.execute(q))

    def tail_logs(self, job_id: str, n: int, max_bytes: int, after_seq: int = 0, chunk: int = 1000) -> list[Row]:
        """The last ``n`` lines after ``after_seq``, oldest first, but no more than about ``max_bytes`` of
        text: read backwards a chunk at a time, so a tail of long lines never loads more than it sends."""
        cols = [s.logs.c.seq, s.logs.c.task_id, s.logs.c.execution_id, s.logs.c.stream, s.logs.c.line,
                s.logs.c.ts]
        out: list[Row] = []
        size, before = 0, None
        while len(out) < n:
            want = min(chunk, n - len(out))
            conds = [s.logs.c.job_id == job_id, s.logs.c.seq > after_seq]
            if before is not None:
                conds.append(s.logs.c.seq < before)
            part = _rows(self.c.execute(sa.select(*cols).where(*conds).order_by(s.logs.c.seq.desc()).limit(want)))
            for r in part:
                size += len(r["line"]) + 1
                if size > max_bytes and out:
                    return list(reversed(out))
                out.append(r)
            if len(part) < want:
                break
            before = part[-1]["seq"]
        return list(reversed(out))

    def tail_logs_of_jobs(self, job_ids: Iterable[str], n: int, max_bytes: int, per_query: int = 100
                          ) -> dict[str, list[Row]]:
        """``tail_logs`` of many jobs (a page of a list) in one statement per ``per_query`` jobs: for each job
        its last ``n`` lines (one arm of a UNION ALL, read backwards by ``ix_logs_job``), of which the newest
        up to about ``max_bytes`` of text (a running sum over them) are sent, oldest first."""
        out: dict[str, list[Row]] = {}
        for part in chunks(sorted(set(job_ids)), per_query):
            q = _tails_statement(len(part))
            params = {"n": n, "max_bytes": max_bytes, **{f"j{i}": jid for i, jid in enumerate(part)}}
            for r in _rows(self.c.execute(q, params)):
                out.setdefault(r.pop("job_id"), []).append(r)
        return out

    def _log_owner(self, job_id: str, owner: str | None) -> list[Any]:
        conds: list[Any] = [s.logs.c.job_id == job_id]
        if owner is not None:  # a task's lines (every attempt), or one execution's
            conds.append(sa.or_(s.logs.c.task_id == owner, s.logs.c.execution_id == owner))
        return conds

    def count_logs(self, job_id: str, owner: str | None = None) -> int:
        q = sa.select(sa.func.count()).select_from(s.logs).where(*self._log_owner(job_id, owner))
        return int(self.c.execute(q).scalar_one())

    def logs_newest_first(self, job_id: str, *, offset: int, limit: int, owner: str | None = None) -> list[Row]:
        """A page of a job's lines (or a task's, or an execution's: ``owner``), newest first."""
        q = (sa.select(s.logs.c.seq, s.logs.c.line, s.logs.c.ts).where(*self._log_owner(job_id, owner))
             .order_by(s.logs.c.seq.desc()).offset(offset).limit(limit))
        return _rows(self.c.execute(q))

    # -- reads for the API dialects (nomad-lite, CloudAI) -----------------------------------------
    def job_by_seq(self, seq: int) -> Row | None:
        r = self.c.execute(sa.select(s.jobs).where(s.jobs.c.seq == seq)).mappings().first()
        return dict(r) if r and context.sees(r["namespace"]) else None

    def jobs_by_seqs(self, seqs: Iterable[int]) -> list[Row]:
        out: list[Row] = []
        for part in chunks(sorted(set(seqs))):
            out += _rows(self.c.execute(sa.select(s.jobs).where(s.jobs.c.seq.in_(part))))
        return [r for r in out if context.sees(r["namespace"])]

    def tasks_of_jobs(self, job_ids: Iterable[str]) -> list[Row]:
        """Every task of these jobs, by job then position."""
        out: list[Row] = []
        for part in chunks(sorted(set(job_ids))):
            out += _rows(self.c.execute(sa.select(s.tasks).where(s.tasks.c.job_id.in_(part))
                                        .order_by(s.tasks.c.job_id, s.tasks.c.position)))
        return out

    def find_jobs(self, *, states: Sequence[str] | None = None, tag: str | None = None,
                  node_prefix: str | None = None, command: str | None = None,
                  created_from: float | None = None, created_to: float | None = None,
                  before_seq: int | None = None, offset: int = 0, limit: int = 100) -> tuple[list[Row], int]:
        """Jobs, newest first, and how many match in all. ``node_prefix``: an attempt of the job was placed
        on a node whose id starts so. ``command``: a case-insensitive substring of the first task's command
        (its script, or its argv list joined as a shell reads it: ``rows.command_search``). ``created_from``
        and ``created_to`` are both inclusive."""
        j, e = s.jobs.c, s.executions.c
        conds: list[Any] = []
        texts: list[tuple[str, str]] = []
        if states:
            conds.append(j.state.in_(list(dict.fromkeys(states))))
        if tag:
            texts.append(("search", f"\x1f{tag.lower()}\x1f"))
        if node_prefix:
            conds.append(sa.exists().where(e.job_id == j.id, e.node_id.startswith(node_prefix, autoescape=True)))
        if command:  # jobs.command_search (0019): a trigram index on PostgreSQL, jobs_fts on SQLite (0021)
            texts.append(("command_search", command.lower()))
        return self._page_of_jobs(conds, before_seq, offset, limit, texts=texts,
                                  window=Window(created_from, created_to, closed=True))

    def max_job_seq(self) -> int:
        return int(self.c.execute(sa.select(sa.func.coalesce(sa.func.max(s.jobs.c.seq), 0))).scalar_one())

    def job_states(self, states: Sequence[str], after_seq: int) -> list[tuple[int, str]]:
        """``(seq, state)`` of every job in one of ``states`` and of every job after ``after_seq``."""
        j = s.jobs.c
        q = sa.select(j.seq, j.state).where(sa.or_(j.state.in_(list(states)), j.seq > after_seq))
        return [(int(a), str(b)) for a, b in self.c.execute(q).all()]

    def state_change_count(self) -> int:
        """The state changes the store keeps a trace of: job submissions (the highest job sequence number)
        and job ends, and each execution's placement, start and end."""
        j, e = s.jobs.c, s.executions.c
        submitted, ended = self.c.execute(sa.select(sa.func.coalesce(sa.func.max(j.seq), 0),
                                                    sa.func.count(j.finished_at))).one()
        placed, started, done = self.c.execute(sa.select(sa.func.count(), sa.func.count(e.started_at),
                                                         sa.func.count(e.finished_at))).one()
        return int(submitted) + int(ended) + int(placed) + int(started) + int(done)

    def state_change_rows(self) -> tuple[list[Row], list[Row]]:
        """What ``state_change_count`` counts, row by row: every stored job (``seq``, ``id``, ``state``,
        ``created_at``, ``finished_at``) and every execution (``job_id``, ``node_id``, ``state``,
        ``exit_code``, ``scheduled_at``, ``started_at``, ``finished_at``). For nomad-lite's log view."""
        j, e = s.jobs.c, s.executions.c
        jobs = _rows(self.c.execute(sa.select(j.seq, j.id, j.state, j.created_at, j.finished_at).order_by(j.seq)))
        execs = _rows(self.c.execute(sa.select(e.job_id, e.node_id, e.state, e.exit_code, e.scheduled_at,
                                               e.started_at, e.finished_at)))
        return jobs, execs

    def queued_jobs_of_queue(self, queue: str) -> list[str]:
        """Jobs with a task waiting in ``queue`` for a node (pending and ready), for the Tork dialect."""
        t = s.tasks.c
        q = sa.select(t.job_id).where(t.queue == queue, t.state == "pending", t.ready_at.is_not(None)).distinct()
        return [str(r[0]) for r in self.c.execute(q).all()]

    # -- schedules ----------------------------------------------------------------------------
    def insert_schedule(self, row: Row) -> None:
        self.c.execute(sa.insert(s.schedules).values(**row))

    def schedule(self, schedule_id: str) -> Row | None:
        r = self.c.execute(sa.select(s.schedules).where(s.schedules.c.id == schedule_id)).mappings().first()
        return dict(r) if r and context.sees(r["namespace"]) else None

    def schedules(self) -> list[Row]:
        q = sa.select(s.schedules).order_by(s.schedules.c.created_at, s.schedules.c.id)
        if (visible := context.visible()) is not None:
            q = q.where(s.schedules.c.namespace.in_(sorted(visible)))
        return _rows(self.c.execute(q))

    def due_schedules(self, now: float, limit: int = 100) -> list[Row]:
        sc = s.schedules.c
        q = (sa.select(sc.id, sc.cron, sc.spec, sc.next_run_at, sc.namespace, sc.created_by)
             .where(sc.state == "active", sc.next_run_at <= now).order_by(sc.next_run_at).limit(limit))
        return _rows(self.c.execute(q))

    def claim_tick(self, schedule_id: str, due: float, fired: float, next_run_at: float, job_id: str) -> bool:
        """Compare-and-set: move an active schedule's ``next_run_at`` off ``due``. Exactly one caller
        wins a tick; only the winner creates its job, in the same transaction."""
        sc = s.schedules.c
        q = (sa.update(s.schedules).where(sc.id == schedule_id, sc.next_run_at == due, sc.state == "active")
             .values(next_run_at=next_run_at, last_run_at=fired, last_job_id=job_id))
        return self.c.execute(q).rowcount == 1

    def cas_schedule(self, schedule_id: str, expected: str, **values: Any) -> bool:
        sc = s.schedules.c
        q = sa.update(s.schedules).where(sc.id == schedule_id, sc.state == expected).values(**values)
        return self.c.execute(q).rowcount == 1

    def delete_schedule(self, schedule_id: str) -> bool:
        q = sa.delete(s.schedules).where(s.schedules.c.id == schedule_id)
        return self.c.execute(q).rowcount == 1

    # -- services -----------------------------------------------------------------------------
    def insert_service(self, row: Row) -> bool:
        """Add a service unless its namespace has one of that name (or its id is taken): whether it was
        added."""
        insert = pg_insert if self.c.dialect.name == "postgresql" else sqlite_insert
        q = insert(s.services).values(**row).on_conflict_do_nothing().returning(s.services.c.id)
        return self.c.execute(q).first() is not None

    def service(self, service_id: str) -> Row | None:
        r = self.c.execute(sa.select(s.services).where(s.services.c.id == service_id)).mappings().first()
        return dict(r) if r and context.sees(r["namespace"]) else None

    def services(self, namespace: str | None = None, type_: str | None = None, after_seq: int = 0,
                 limit: int = 1000) -> list[Row]:
        """Services in creation order, a page at a time (``after_seq``: the last ``seq`` seen)."""
        sv = s.services.c
        q = sa.select(s.services).where(sv.seq > after_seq).order_by(sv.seq).limit(limit)
        if namespace is not None:
            q = q.where(sv.namespace == namespace)
        if (visible := context.visible()) is not None:
            q = q.where(sv.namespace.in_(sorted(visible)))
        if type_ is not None:
            q = q.where(sv.type == type_)
        return _rows(self.c.execute(q))

    def cas_service(self, service_id: str, version: int, **values: Any) -> bool:
        """Compare-and-set on the service's version: changed only if nobody changed it since it was read."""
        sv = s.services.c
        q = (sa.update(s.services).where(sv.id == service_id, sv.version == version)
             .values(version=version + 1, **values))
        return self.c.execute(q).rowcount == 1

    def delete_service(self, service_id: str) -> bool:
        """Remove the service, then the node ports it holds (in that order: the row's lock, taken first,
        makes a concurrent ``lock_services`` wait, then find the service gone)."""
        gone = self.c.execute(sa.delete(s.services).where(s.services.c.id == service_id)).rowcount == 1
        self.release_service_ports(service_id)
        return gone

    def set_service_spec(self, service_id: str, spec: dict[str, Any]) -> None:
        """The spec of a service this transaction has just compare-and-set (and so locked)."""
        self.c.execute(sa.update(s.services).where(s.services.c.id == service_id).values(spec=spec))

    def lock_services(self, ids: Iterable[str]) -> dict[str, Row]:
        """The services among ``ids`` that still exist, locked (on PostgreSQL) until the transaction ends:
        a node port held for one of them then matches its current spec and cannot outlive it."""
        sv = s.services.c
        out: dict[str, Row] = {}
        for part in chunks(sorted(set(ids))):
            q = self._locked(sa.select(sv.id, sv.spec).where(sv.id.in_(part)).order_by(sv.id), True)
            out.update({str(i): {"id": i, "spec": spec} for i, spec in self.c.execute(q)})
        return out

    # Node ports of NodePort services: a row per node and port in node_ports (kind 'service', pod_id
    # holding the service's id, container the port's name, container_port the service's port).
    def node_ports_taken(self, low: int, high: int) -> set[int]:
        """Ports of [low, high] held on any node, by a pod or a service."""
        n = s.node_ports.c
        q = sa.select(n.port).where(n.port >= low, n.port <= high).distinct()
        return {int(r[0]) for r in self.c.execute(q)}

    def live_node_ids(self) -> list[str]:
        q = sa.select(s.nodes.c.id).where(s.nodes.c.state.in_(LIVE_NODE))
        return [str(r[0]) for r in self.c.execute(q)]

    def hold_node_ports(self, rows: Sequence[Row]) -> int:
        """Insert node port rows, skipping any whose (node, port, protocol) is taken: how many were added
        (the primary key makes each one a compare-and-set)."""
        insert = pg_insert if self.c.dialect.name == "postgresql" else sqlite_insert
        added = 0
        for row in rows:  # one statement each: RETURNING tells, where rowcount may not (psycopg: -1)
            q = insert(s.node_ports).values(**row).on_conflict_do_nothing().returning(s.node_ports.c.port)
            added += self.c.execute(q).first() is not None
        return added

    def service_ports_on(self, node_id: str) -> list[Row]:
        """The node ports that services hold on this node."""
        n = s.node_ports.c
        q = sa.select(n.pod_id, n.port, n.container, n.container_port).where(
            n.node_id == node_id, n.kind == "service")
        return _rows(self.c.execute(q))

    def release_service_ports(self, service_id: str, ports: Iterable[int] | None = None) -> int:
        n = s.node_ports.c
        q = sa.delete(s.node_ports).where(n.pod_id == service_id, n.kind == "service")
        if ports is not None:
            q = q.where(n.port.in_(list(ports)))
        return int(self.c.execute(q).rowcount)

    def ready_pods(self, namespaces: Iterable[str]) -> list[Row]:
        """The running and ready pods of these namespaces, each with ``ports``: the ports it publishes on
        its node ([{container, containerPort, protocol, hostPort, name}]), for services' endpoints."""
        p, n = s.pods.c, s.node_ports.c
        pods: list[Row] = []
        for part in chunks(set(namespaces)):
            pods += _rows(self.c.execute(sa.select(p.id, p.namespace, p.labels, p.state, p.ready, p.node_id,
                                                   p.spec).where(p.namespace.in_(part), p.state == "running",
                                                                 p.ready.is_(True))))
        by_id = {r["id"]: r for r in pods}
        for r in pods:
            r["ports"] = []
        for part in chunks(by_id):
            q = sa.select(n.pod_id, n.container, n.container_port, n.protocol, n.port).where(
                n.pod_id.in_(part), n.kind != "service")
            for pod_id, container, cport, protocol, port in self.c.execute(q):
                by_id[pod_id]["ports"].append({"container": container, "containerPort": cport,
                                               "protocol": protocol, "hostPort": port})
        for r in pods:  # a named target port: the name is in the pod's spec
            names = {(c.get("name"), cp.get("containerPort")): cp.get("name")
                     for c in (r.pop("spec") or {}).get("containers") or () for cp in c.get("ports") or ()}
            for port in r["ports"]:
                port["name"] = names.get((port["container"], port["containerPort"]))
        return pods


    # -- idempotency keys ----------------------------------------------------------------------
    def idempotency(self, scope: str, key: str, since: float) -> Row | None:
        """The submission made with ``key`` on ``scope`` no earlier than ``since``, if any."""
        k = s.idempotency_keys.c
        r = self.c.execute(sa.select(s.idempotency_keys).where(
            k.scope == scope, k.key == key, k.created_at >= since)).mappings().first()
        return dict(r) if r else None

    def insert_idempotency(self, row: Row, expired_before: float) -> None:
        """Record a submission's key (an expired record of the same key goes first). Raises DuplicateKey
        when the key is taken: the transaction must then be rolled back."""
        k = s.idempotency_keys.c
        self.c.execute(sa.delete(s.idempotency_keys).where(
            k.scope == row["scope"], k.key == row["key"], k.created_at < expired_before))
        try:
            self.c.execute(sa.insert(s.idempotency_keys).values(**row))
        except sa.exc.IntegrityError as e:
            raise DuplicateKey(row["scope"], row["key"]) from e

    def purge_idempotency(self, expired_before: float) -> int:
        q = sa.delete(s.idempotency_keys).where(s.idempotency_keys.c.created_at < expired_before)
        return int(self.c.execute(q).rowcount)

    # -- Podling tasks (api/dialects/podling.py) -------------------------------------------------
    def insert_podling_task(self, row: Row) -> None:
        """Name a job with a Podling task id. Raises DuplicateKey when the id is taken (the primary key
        makes it a compare-and-set): the transaction must then be rolled back."""
        try:
            self.c.execute(sa.insert(s.podling_tasks).values(**row))
        except sa.exc.IntegrityError as e:
            raise DuplicateKey("podling_tasks", row["id"]) from e

    def podling_task(self, task_id: str) -> Row | None:
        r = self.c.execute(sa.select(s.podling_tasks).where(s.podling_tasks.c.id == task_id)).mappings().first()
        return dict(r) if r else None

    def podling_tasks(self, limit: int, before_seq: int | None = None) -> list[Row]:
        """Podling tasks (id, job_id, seq, created_at), newest first, in pages before ``before_seq``."""
        p = s.podling_tasks.c
        q = sa.select(s.podling_tasks).order_by(p.seq.desc()).limit(limit)
        if before_seq is not None:
            q = q.where(p.seq < before_seq)
        return _rows(self.c.execute(q))

    def podling_ids_of_jobs(self, job_ids: Iterable[str]) -> dict[str, str]:
        p = s.podling_tasks.c
        return {job: tid for part in chunks(job_ids)
                for tid, job in self.c.execute(sa.select(p.id, p.job_id).where(p.job_id.in_(part)))}

    def delete_podling_tasks(self, ids: Iterable[str]) -> int:
        p = s.podling_tasks.c
        return sum(int(self.c.execute(sa.delete(s.podling_tasks).where(p.id.in_(part))).rowcount)
                   for part in chunks(ids))

    def delete_node(self, node_id: str, states: Sequence[str]) -> bool:
        """Remove a node that is in one of ``states`` and runs nothing (Podling's prune)."""
        busy = sa.select(s.executions.c.id).where(s.executions.c.node_id == node_id,
                                                  s.executions.c.state.in_(ACTIVE)).exists()
        q = sa.delete(s.nodes).where(s.nodes.c.id == node_id, s.nodes.c.state.in_(states), ~busy)
        return self.c.execute(q).rowcount == 1


class QuickTx(Tx):
    """A read on SQLite for one job's page (Store.read_soon): the job, a page of its tasks, their
    executions and its tasks per state are read on the driver's own connection (store/quickread.py);
    everything else as in ``Tx``."""

    def __init__(self, conn: Connection, text_index: bool = False) -> None:
        super().__init__(conn, text_index)
        self._raw: Any = conn.connection.driver_connection
        self._dialect = conn.dialect

    def job(self, job_id: str) -> Row | None:
        found = quickread.job(self._raw, self._dialect, job_id)
        return found if found and context.sees(found["namespace"]) else None

    def tasks_page(self, job_id: str, after_seq: int, limit: int) -> list[Row]:
        return quickread.tasks_page(self._raw, self._dialect, job_id, after_seq, limit)

    def count_tasks_by_state(self, job_id: str) -> dict[str, int]:
        return {st: int(n) for st, n in self._raw.execute(quickread.TASK_STATES, (job_id,))}

    def executions_of_tasks(self, task_ids: Iterable[str]) -> list[Row]:
        return [r for part in chunks(task_ids) for r in quickread.executions_of(self._raw, self._dialect, part)]


T = TypeVar("T")
# How long a read on the caller's thread (Store.read_soon) waits for SQLite's locks before it goes to a
# worker thread instead: a WAL reader waits only in rare moments (a checkpoint that resets the log, recovery).
INLINE_BUSY_MS = 20


class DuplicateKey(Exception):
    """Another submission holds this idempotency key (a concurrent duplicate, most likely)."""


class Store:
    """Opens the database, brings its schema up to date, and hands out transactions."""

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._sync = "FULL"  # SQLite's synchronous setting outside durable transactions (PostgreSQL: n/a)
        self._files: tuple[str, ...] = ()  # SQLite: what a durable commit syncs (Store._sync_log)
        if self.is_sqlite:
            path = sa.engine.make_url(url).database or ""  # the file, without a query string
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = sa.create_engine(url, connect_args={"check_same_thread": False,
                                                                      "timeout": 30})
            event.listen(self.engine, "connect", _sqlite_pragmas)
            self._sync = _sqlite_sync()
            if path and path != ":memory:" and not path.startswith("file:"):
                # OFF: checkpoints do not sync either, so the database file is synced too
                self._files = (path + "-wal",) + ((path,) if self._sync == "OFF" else ())
        else:
            # A coordinator cut off by the network in the middle of a transaction keeps its row locks until
            # PostgreSQL notices it is gone (hours, with default TCP keepalives), and every other coordinator
            # waits on them. Its transactions are short: one left idle this long is ended by the server.
            self.engine = sa.create_engine(_pg_url(url), pool_size=10, max_overflow=20, pool_pre_ping=True,
                                           connect_args={"options": f"-c idle_in_transaction_session_timeout="
                                                                    f"{IDLE_IN_TRANSACTION_MS}"})
        # SQLite allows one writer at a time: take turns in-process instead of spinning on SQLITE_BUSY.
        self._write_lock = threading.Lock() if self.is_sqlite else None
        if migrate:
            from corral.store.migrate import upgrade
            upgrade(self.engine)
        # SQLite: the text filters' index (0021), checked (and rebuilt, by the store that migrates) at start
        self.text_index = False
        if self.is_sqlite:
            with self.engine.begin() as conn:
                self.text_index = textsearch.ensure(conn, repair=migrate)
        # SQLite: the connection of Store.read_soon, and who holds it
        self._inline: Connection | None = None
        self._inline_lock = threading.Lock()

    @contextmanager
    def transaction(self, durable: bool = False) -> Iterator[Tx]:
        """A write transaction. ``durable``: its commit returns only once it is on disk, through a power
        loss too (what is acknowledged as created: submissions). PostgreSQL syncs every commit already; on
        SQLite, whose other commits survive a crash of the process but may lose their last moments to a
        power loss (WAL, ``synchronous=NORMAL``), the log is synced after this commit, and with it every
        commit before it; that sync is made after the write lock is released, so that the next writer (a
        scheduling pass, the next group of submissions) does not wait for the disk."""
        if self._write_lock is not None:
            with self._write_lock, self.engine.begin() as conn:
                yield Tx(conn, self.text_index)
            if durable and self._sync not in ("FULL", "EXTRA"):
                self._sync_log()  # after the lock: the next writer goes on while this one waits for the disk
        else:
            with self.engine.begin() as conn:
                yield Tx(conn, self.text_index)

    def _sync_log(self) -> None:
        """Put SQLite's write-ahead log on disk, and with it every commit written to it so far. A commit no
        longer in the log is on disk already: SQLite syncs the log before a checkpoint copies it into the
        database, and the database before the log is reused (WAL mode, ``synchronous=NORMAL``; with OFF
        the database file is synced here as well)."""
        for name in self._files:
            try:
                fd = os.open(name, os.O_RDONLY)
            except FileNotFoundError:  # the log, checkpointed and removed as the last connection closed
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    @contextmanager
    def read(self) -> Iterator[Tx]:
        """A read-only view; on SQLite it does not wait for writers (WAL)."""
        with self.engine.connect() as conn:
            yield Tx(conn, self.text_index)

    async def read_soon(self, fn: Callable[[Tx], T]) -> T:
        """``fn`` on a read-only view, for a request that reads a few indexed rows (one job's page). On SQLite it
        runs right here, on the event loop, through a connection kept for that: a WAL reader does not wait
        for writers, and a hand-over to a worker thread and back costs several times the read itself (the
        loop and the pool's threads taking turns at the GIL). That connection waits for SQLite's locks
        ``INLINE_BUSY_MS`` at most; when it is busy, or in use by another thread, ``fn`` runs in a worker
        thread as any read does. On PostgreSQL (a network round trip per statement) always in a worker
        thread. ``fn`` must be a read: it may run twice."""
        if self.is_sqlite and self._inline_lock.acquire(blocking=False):
            try:
                return self._read_inline(fn)
            except sa.exc.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e):
                    raise
            finally:
                self._inline_lock.release()
        return await anyio.to_thread.run_sync(self._read_with, fn)

    def _read_inline(self, fn: Callable[[Tx], T]) -> T:
        conn = self._inline
        if conn is None or conn.closed or conn.invalidated:
            conn = self._inline = self.engine.connect()
            conn.exec_driver_sql(f"PRAGMA busy_timeout={INLINE_BUSY_MS}")
            conn.commit()
        try:
            return fn(QuickTx(conn, self.text_index))
        finally:
            conn.rollback()  # ends the read: the log's checkpoints are not held back by it

    def _read_with(self, fn: Callable[[Tx], T]) -> T:
        with self.engine.connect() as conn:
            return fn(QuickTx(conn, self.text_index) if self.is_sqlite else Tx(conn, self.text_index))

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return True
        except Exception:
            return False

    def close(self) -> None:
        with self._inline_lock:
            if self._inline is not None:
                self._inline.close()
                self._inline = None
        self.engine.dispose()


IDLE_IN_TRANSACTION_MS = 10_000  # PostgreSQL ends a coordinator's session left idle in a transaction this long


def _pg_url(url: str) -> str:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _sqlite_sync() -> str:
    import os
    value = os.environ.get("CORRAL_SQLITE_SYNC", "NORMAL").strip().upper()
    if value not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ValueError(f"CORRAL_SQLITE_SYNC={value!r}: one of OFF, NORMAL, FULL, EXTRA")
    return value


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # In WAL mode NORMAL keeps every committed transaction through a crash of the process
    # (kill -9); only a power loss may drop the last few. CORRAL_SQLITE_SYNC=FULL for that too.
    # Submissions are synced whatever this says (Store.transaction(durable=True)).
    cur.execute(f"PRAGMA synchronous={_sqlite_sync()}")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
