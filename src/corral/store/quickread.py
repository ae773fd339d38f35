"""One job's page read on SQLite's own driver connection (``QuickTx``, for ``Store.read_soon``).

``GET /v1/jobs/{id}`` is four indexed reads. Through SQLAlchemy each one walks its statement for the
compiled-cache key, builds a result object and its row mappings: about 0.5 ms of the request's 1.4 ms of
CPU, against 0.1 ms for the same reads on the driver (docs/benchmarks.md, "One job per request"). Here
each read is SQL written once from the schema's own columns, run on the ``sqlite3`` connection, its values
passed through the columns' own result processors (JSON decoded, sealed secrets unsealed, booleans), so a
row is the dict ``Tx`` returns for it (tests/unit/test_store_sqlite_paths.py compares them).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from corral.store import schema as s
from corral.store.rows import Row

Processor = Callable[[Any], Any]


class Query:
    """A SELECT of all of ``table``'s columns, and what turns its rows into the store's dicts; ``rows`` is
    given the rest of the statement (WHERE, ORDER BY, LIMIT, with ``?`` parameters)."""

    def __init__(self, table: sa.Table) -> None:
        self.table = table
        self.keys = [c.name for c in table.c]
        self._head: str | None = None  # SELECT ... FROM ..., made for the dialect on the first read
        self._procs: list[tuple[int, Processor]] = []

    def _prepare(self, dialect: sa.Dialect) -> str:
        quote = dialect.identifier_preparer.quote
        self._procs = [(i, p) for i, c in enumerate(self.table.c)
                       if (p := c.type.result_processor(dialect, None)) is not None]
        self._head = f"SELECT {', '.join(quote(k) for k in self.keys)} FROM {quote(self.table.name)} "
        return self._head

    def rows(self, conn: sqlite3.Connection, dialect: sa.Dialect, rest: str, params: Sequence[Any]) -> list[Row]:
        sql = (self._head or self._prepare(dialect)) + rest
        out = []
        keys, procs = self.keys, self._procs
        for values in conn.execute(sql, params):
            if procs:
                values = list(values)
                for i, p in procs:
                    values[i] = p(values[i])
            out.append(dict(zip(keys, values, strict=True)))
        return out


JOBS, TASKS, EXECUTIONS = Query(s.jobs), Query(s.tasks), Query(s.executions)
TASK_STATES = "SELECT state, count(*) FROM tasks WHERE job_id = ? GROUP BY state"


def job(conn: sqlite3.Connection, dialect: sa.Dialect, job_id: str) -> Row | None:
    found = JOBS.rows(conn, dialect, "WHERE id = ?", (job_id,))
    return found[0] if found else None


def tasks_page(conn: sqlite3.Connection, dialect: sa.Dialect, job_id: str, after_seq: int, limit: int) -> list[Row]:
    return TASKS.rows(conn, dialect, "WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?", (job_id, after_seq, limit))


def executions_of(conn: sqlite3.Connection, dialect: sa.Dialect, task_ids: Sequence[str]) -> list[Row]:
    marks = ", ".join("?" * len(task_ids))
    return EXECUTIONS.rows(conn, dialect, f"WHERE task_id IN ({marks}) ORDER BY scheduled_at", task_ids)
