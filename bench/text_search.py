"""SQLite's text filters with and without jobs_fts (migration 0021), in process, on a store bench/history.py
filled: each query through the store's own Tx, the index's path and the LIKE-only path interleaved (A, B, A,
B) on one connection, so both see the same page cache and the same load; milliseconds per call.

    .venv/bin/python -m bench.text_search sqlite:////tmp/h.db --rounds 5
    .venv/bin/python -m bench.text_search sqlite:////tmp/copy.db --inserts 300   # what the triggers cost

``--inserts N``: instead, one-job transactions (synced, as a submission is) N at a time with the triggers
and with them dropped, three times each, interleaved. The jobs written without them are not in jobs_fts:
the next store to open the file rebuilds it (use a copy).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from bench.common import summary
from corral.coordinator.flow import job_rows
from corral.domain.spec import JobSpec
from corral.store import sql, textsearch
from corral.store.sql import Store

QUERIES: dict[str, Callable[[sql.Tx], Any]] = {
    "q selective (needle)": lambda tx: tx.list_jobs(q="needle"),
    "q common (alpha, 1 in 8)": lambda tx: tx.list_jobs(q="alpha"),
    "q + state (kappa, failed)": lambda tx: tx.list_jobs(q="kappa", state="failed"),
    "q + state none (alpha, pending)": lambda tx: tx.list_jobs(q="alpha", state="pending"),
    "q selective + state (needle, failed)": lambda tx: tx.list_jobs(q="needle", state="failed"),
    "q short (zz: no index)": lambda tx: tx.list_jobs(q="zz"),
    "tag (1 in 20)": lambda tx: tx.list_jobs(tag="team-7"),
    "tag + q selective": lambda tx: tx.list_jobs(tag="team-7", q="needle"),
    "command selective (needle)": lambda tx: tx.find_jobs(command="needle", limit=50),
    "command every job (hello)": lambda tx: tx.find_jobs(command="hello", limit=50),
    "command + cursor halfway": lambda tx: tx.find_jobs(command="hello", limit=50, before_seq=tx.max_job_seq() // 2),
}


def inserts(url: str, n: int) -> dict[str, Any]:
    """One-job transactions a second, with jobs_fts's triggers and without."""
    engine = sa.create_engine(url)

    @sa.event.listens_for(engine, "connect")
    def pragmas(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA journal_mode=WAL")
        dbapi_conn.execute("PRAGMA synchronous=FULL")
    spec = JobSpec.model_validate({"name": "submit", "queue": "nobody", "tasks": [
        {"name": "t", "image": "busybox", "run": "true"}]})

    def rate() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            with engine.begin() as c:
                sql.Tx(c).insert_jobs([job_rows(spec, time.time())])
        return round(n / (time.perf_counter() - t0), 1)
    out: dict[str, list[float]] = {"triggers": [], "none": []}
    for _ in range(3):
        out["triggers"].append(rate())
        with engine.begin() as c:
            for name in textsearch.TRIGGERS:
                c.execute(sa.text(f"DROP TRIGGER {name}"))
        out["none"].append(rate())
        with engine.begin() as c:
            for name, body in textsearch.TRIGGERS.items():
                c.execute(sa.text(f"CREATE TRIGGER {name} {body}"))
    engine.dispose()
    return {**out, "mean": {k: round(statistics.mean(v), 1) for k, v in out.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url", help="a SQLite store filled by bench/history.py (migrated to 0021 at open)")
    ap.add_argument("--rounds", type=int, default=5, help="calls of each query on each path")
    ap.add_argument("--inserts", type=int, default=0, help="measure one-job inserts with and without the "
                    "triggers instead, this many a measure (on a copy: see above)")
    args = ap.parse_args()
    if args.inserts:
        print(json.dumps({"load_average": os.getloadavg(), "inserts_per_s": inserts(args.url, args.inserts)}))
        return
    store = Store(args.url)
    assert store.text_index, "this store has no jobs_fts"
    out: dict[str, dict[str, Any]] = {}
    with store.engine.connect() as conn:
        for name, run in QUERIES.items():
            times: dict[str, list[float]] = {"index": [], "like": []}
            answers = {}
            for _ in range(args.rounds):
                for path in ("index", "like"):
                    tx = sql.Tx(conn, text_index=path == "index")
                    t0 = time.perf_counter()
                    rows, total = run(tx)
                    times[path].append((time.perf_counter() - t0) * 1000)
                    answers[path] = ([r["seq"] for r in rows], total)
            assert answers["index"] == answers["like"], name
            out[name] = {p: summary(t) for p, t in times.items()}
            out[name]["matches"] = answers["index"][1]
            print(f"  {name}: index p50 {out[name]['index']['p50']} ms, like p50 {out[name]['like']['p50']} ms "
                  f"({answers['index'][1]} counted)", flush=True)
    store.close()
    print(json.dumps({"load_average": os.getloadavg(), "results": out}, indent=1))


if __name__ == "__main__":
    main()
