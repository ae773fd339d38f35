"""What a scheduling pass costs with a large backlog that cannot be placed (issue 13): N pending one-task
jobs for a queue no node serves and N whose node_selector no node matches (or, with ``--waiting``, 2N
one-core jobs that wait for room), submitted in process, one 2-core node; then a late job for the served
queue. Prints, as JSON: the time and CPU of the
first pass (which places the late job, or not) and the median of the next passes, and the query plans of
the scheduler's read on the engine.

    .venv/bin/python -m bench.backlog_pass -n 100000                       # SQLite, in a temporary file
    .venv/bin/python -m bench.backlog_pass -n 100000 --pg postgresql://corral:corral@127.0.0.1:5432/corral_test
    PYTHONPATH=/work/main/src .venv/bin/python -m bench.backlog_pass -n 100000   # the same against other code
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from corral.coordinator.service import Coordinator, NodeInfo
from corral.domain.spec import JobSpec
from corral.store.sql import Store


def _insert_backlog(coord: Coordinator, n: int, waiting: bool) -> None:
    unserved = JobSpec.model_validate({"queue": "nobody", "tasks": [{"run": "x"}]})
    nowhere = JobSpec.model_validate({"tasks": [{"run": "x", "node_selector": {"zone": "mars"}}]})
    full = JobSpec.model_validate({"tasks": [{"run": "x", "resources": {"cpu": 1}}]})
    for spec in ((full, full) if waiting else (unserved, nowhere)):
        for i in range(0, n, 1000):
            coord.submit_many([spec] * min(1000, n - i))


def _plans(store: Store) -> dict[str, Any]:
    """EXPLAIN of a queue's read, as the scheduler sends it (with the engine's own syntax)."""
    from corral.store import sql as q

    ready = getattr(q, "_READY", None)
    if ready is None:
        return {}
    with store.engine.connect() as c:
        pg = c.dialect.name == "postgresql"
        compiled = ready.compile(dialect=c.dialect)
        p = compiled.construct_params({"queue": "default", "now": time.time(), "lim": 64, "off": 0})
        try:
            if pg:
                rows = c.exec_driver_sql("EXPLAIN " + str(compiled), p).all()
            else:
                rows = c.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled),
                                         tuple(p[k] for k in compiled.positiontup or [])).all()
        except Exception as e:  # another commit's statement may take other parameters
            return {"error": str(e).splitlines()[0]}
        return {"ready": [" ".join(str(x) for x in r) for r in rows]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=100_000, help="jobs in each of the two unplaceable kinds")
    ap.add_argument("--passes", type=int, default=10)
    ap.add_argument("--pg", help="a PostgreSQL database URL (its tables are dropped first)")
    ap.add_argument("--waiting", action="store_true",
                    help="instead, 2N one-core jobs waiting for room on the 2-core node (read on every pass)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = a.pg or f"sqlite:///{Path(tmp) / 'b.db'}"
        if a.pg:
            eng = sa.create_engine(a.pg.replace("postgresql://", "postgresql+psycopg://", 1))
            with eng.begin() as c:
                c.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
            eng.dispose()
        store = Store(url)
        coord = Coordinator(store)
        coord.register(NodeInfo(name="n", hostname="n", version="b", cpu=2, memory=2**34, disk=0,
                                runtimes=["process"]))
        t = time.perf_counter()
        _insert_backlog(coord, a.n, a.waiting)
        kind = "waiting" if a.waiting else "unplaceable"
        print(f"inserted {2 * a.n} {kind} jobs in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        coord.schedule_once()  # the reasons of the backlog are written once
        late = coord.submit(JobSpec.model_validate({"tasks": [{"run": "late", "name": str(uuid.uuid4())}]}))
        c, w = time.process_time(), time.perf_counter()
        placed = coord.schedule_once()
        first = {"wall_ms": round((time.perf_counter() - w) * 1000, 1),
                 "cpu_ms": round((time.process_time() - c) * 1000, 1), "placed": placed,
                 "late_job": coord.get_job(late["id"])[0]["state"]}
        walls, cpus = [], []
        for _ in range(a.passes):
            c, w = time.process_time(), time.perf_counter()
            coord.schedule_once()
            walls.append((time.perf_counter() - w) * 1000)
            cpus.append((time.process_time() - c) * 1000)
        out = {"engine": store.engine.dialect.name, "backlog": 2 * a.n,
               "kind": "waiting for room" if a.waiting else "unplaceable", "first_pass": first,
               "next_passes_ms": {"wall_median": round(statistics.median(walls), 2),
                                  "cpu_median": round(statistics.median(cpus), 2), "max": round(max(walls), 2)},
               "plans": _plans(store)}
        store.close()
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
