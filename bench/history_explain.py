"""The plans of the history queries on a filled store (bench/history.py's): EXPLAIN (ANALYZE, BUFFERS) on
PostgreSQL, EXPLAIN QUERY PLAN on SQLite, of each statement the store runs for a one-day window two months
back, nomad-lite's command filter (selective and common), nomad-lite's list with its log tails, and
``GET /v1/jobs/{id}``'s reads.

    .venv/bin/python -m bench.history_explain postgresql+psycopg://corral:corral@127.0.0.1:5432/<filled db>
    .venv/bin/python -m bench.history_explain sqlite:////path/to/filled.db
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from corral.store.sql import Store, Tx

DAY = 86400.0


def main() -> None:
    store = Store(sys.argv[1], migrate=False)
    engine = store.engine
    pg = engine.dialect.name == "postgresql"
    with engine.connect() as c:
        first = float(c.execute(sa.text("SELECT min(created_at) FROM jobs")).scalar_one())
        job_id = str(c.execute(sa.text("SELECT id FROM jobs ORDER BY seq LIMIT 1 OFFSET 123456")).scalar_one())
        task_id = str(c.execute(sa.text("SELECT id FROM tasks WHERE job_id = :j"), {"j": job_id}).scalar_one())
    day = first + 2 * DAY  # two months back in a 60-day store
    captured: list[tuple[str, Any]] = []

    def grab(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        captured.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", grab)

    def explain(label: str, fn: Callable[[Tx], object]) -> None:
        captured.clear()
        with store.read() as tx:
            t0 = time.perf_counter()
            fn(tx)
            ms = (time.perf_counter() - t0) * 1000
        todo = list(captured)
        print(f"=== {label} ({ms:.1f} ms in process, {len(todo)} statements)")
        with engine.connect() as c:
            for statement, params in todo:
                prefix = "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " if pg else "EXPLAIN QUERY PLAN "
                print("--", " ".join(statement.split())[:200])
                for r in c.exec_driver_sql(prefix + statement, params).all():
                    print("   ", r[0] if pg else r[-1])

    explain("one-day window two months back",
            lambda tx: tx.list_jobs(created_after=day, created_before=day + DAY, limit=51))
    explain("nomad-lite window", lambda tx: tx.find_jobs(created_from=day, created_to=day + DAY, limit=51))
    explain("nomad-lite command=needle", lambda tx: tx.find_jobs(command="needle", limit=51))
    explain("nomad-lite command=hello (every job)", lambda tx: tx.find_jobs(command="hello", limit=51))
    explain("nomad-lite status=failed, and the page's log tails", lambda tx: tx.tail_logs_of_jobs(
        [r["id"] for r in tx.find_jobs(states=["failed"], limit=51)[0]], 1000, 256 * 1024))
    explain("GET /v1/jobs/{id}'s reads", lambda tx: (tx.job(job_id), tx.tasks_page(job_id, 0, 100),
                                                     tx.count_tasks_by_state(job_id),
                                                     tx.executions_of_tasks([task_id])))
    store.close()


if __name__ == "__main__":
    main()
