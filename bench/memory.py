"""Coordinator memory: RSS of the `corral up` process idle after start, and after storing 10,000 finished jobs.

A standalone on the process runtime; RSS (psutil) is taken a few seconds after it answers, then N one-task
`true` jobs are submitted in batches over POST /v1/jobs/batch, all are waited for to complete, and a second
later RSS is taken again (also the peak seen while they ran). Reports the SQLite database's size on disk
(corral.db with its -wal and -shm files).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import httpx
import psutil

from bench.common import corral_up, count_finished, count_state

MiB = 1024 * 1024


def _db_bytes(data_dir: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(data_dir.glob("*.db*")) if p.is_file()}


def run(n: int = 10_000, batch: int = 500, idle_wait: float = 3.0) -> dict[str, object]:
    with corral_up("--runtime", "process") as (url, proc), httpx.Client(base_url=url, timeout=60) as c:
        args = [str(a) for a in proc.args]  # type: ignore[union-attr]
        data_dir = Path(args[args.index("--data-dir") + 1])
        server = psutil.Process(proc.pid)
        time.sleep(idle_wait)
        idle = server.memory_info().rss
        idle_db = _db_bytes(data_dir)
        peak = idle
        t0 = time.monotonic()
        for i in range(0, n, batch):
            jobs = [{"name": f"m{j}", "tasks": [{"run": "true"}]} for j in range(i, min(i + batch, n))]
            c.post("/v1/jobs/batch", json={"jobs": jobs}).raise_for_status()
            peak = max(peak, server.memory_info().rss)
        while count_finished(c) < n:
            peak = max(peak, server.memory_info().rss)
            time.sleep(0.1)
        elapsed = time.monotonic() - t0
        done, failed = count_state(c, "completed"), count_state(c, "failed")
        time.sleep(1)
        loaded = server.memory_info().rss
        peak = max(peak, loaded)
        db = _db_bytes(data_dir)
    return {"rss_idle_mib": round(idle / MiB, 1), "jobs": n, "completed": done, "failed": failed,
            "run_s": round(elapsed, 1), "rss_after_jobs_mib": round(loaded / MiB, 1),
            "rss_peak_mib": round(peak / MiB, 1), "rss_growth_mib": round((loaded - idle) / MiB, 1),
            "db_idle_bytes": idle_db, "db_bytes": db, "db_total_mib": round(sum(db.values()) / MiB, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=10_000, help="finished jobs to store (default 10000)")
    ap.add_argument("--batch", type=int, default=500, help="jobs per POST /v1/jobs/batch (default 500)")
    args = ap.parse_args()
    print(json.dumps(run(args.n, args.batch), indent=2))


if __name__ == "__main__":
    main()
