"""Soak: N jobs over M minutes through a real `corral up`, with extra workers killed (SIGKILL) and restarted
at random; then, from the tasks' own side effects, how many jobs were lost and how many ran twice, and the
server's RSS over time.

    .venv/bin/python -m bench.soak --jobs 10000 --minutes 5          # the short run recorded in docs/benchmarks.md
    .venv/bin/python -m bench.soak --jobs 100000 --minutes 30        # the full one: for a quiet machine

Each job is one host-process task that appends its own name to a file (``echo soak-17 >> runs.log``: an
O_APPEND write of one short line, whole). Jobs are submitted at an even rate over the minutes (in batches
of --batch); meanwhile every --kill-every seconds one of the --workers extra `corral worker` processes is
killed with SIGKILL and started again (same name and data dir, as a restarted machine would). At the end the
script waits for every job to finish (at most --drain seconds), then counts: a job is *lost* if it did not
complete, or completed with no line; it *ran twice* if its name is in the file more than once (a task that
was running on a killed worker, or had ended and was not yet reported, is adopted by the restarted worker,
see docs/operations.md "Worker restarts: adoption": this counts where that failed).
RSS: the `corral up` process (server and its local worker), sampled every 5 s; growth is the last sample
over the one at the end of the first quarter (after warm-up).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.common import corral_up, count_jobs


def start_worker(url: str, name: str, data: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "corral", "worker", "--server", url, "--name", name,
                             "--data-dir", os.path.join(data, name), "--runtime", "process", "--log-level", "error",
                             "--grace", "1s"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=2, help="extra workers, killed and restarted at random")
    ap.add_argument("--kill-every", type=float, default=10.0, help="seconds between kills")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--drain", type=float, default=600.0, help="seconds to wait for the last jobs")
    args = ap.parse_args()
    rng = random.Random(5)
    out: dict[str, Any] = {"jobs": args.jobs, "minutes": args.minutes, "workers": args.workers}
    with tempfile.TemporaryDirectory() as tmp, corral_up("--runtime", "process") as (url, proc):
        runs = os.path.join(tmp, "runs.log")
        server = psutil.Process(proc.pid)
        workers = {f"soak-w{i}": start_worker(url, f"soak-w{i}", tmp) for i in range(args.workers)}
        rss: list[tuple[float, float]] = []
        kills = 0
        t0 = time.monotonic()
        duration = args.minutes * 60
        sent = 0
        next_kill = t0 + args.kill_every
        next_rss = t0
        with httpx.Client(base_url=url, timeout=60) as c:
            while sent < args.jobs:
                now = time.monotonic()
                due = min(args.jobs, int(args.jobs * (now - t0) / duration) + args.batch)
                if due > sent:
                    n = min(args.batch, args.jobs - sent)
                    jobs = [{"name": f"soak-{i}", "tasks": [{"run": f"echo soak-{i} >> {runs}"}]}
                            for i in range(sent, sent + n)]
                    c.post("/v1/jobs/batch", json={"jobs": jobs}).raise_for_status()
                    sent += n
                if now >= next_kill:
                    name = rng.choice(sorted(workers))
                    os.killpg(workers[name].pid, signal.SIGKILL)
                    workers[name].wait()
                    workers[name] = start_worker(url, name, tmp)
                    kills += 1
                    next_kill = now + args.kill_every
                if now >= next_rss:
                    rss.append((round(now - t0, 1), round(server.memory_info().rss / 2**20, 1)))
                    next_rss = now + 5
                time.sleep(0.05)
            out["submit_s"] = round(time.monotonic() - t0, 1)
            deadline = time.monotonic() + args.drain
            while count_jobs(c, "completed,failed,cancelled") < args.jobs and time.monotonic() < deadline:
                if time.monotonic() >= next_rss:
                    rss.append((round(time.monotonic() - t0, 1), round(server.memory_info().rss / 2**20, 1)))
                    next_rss = time.monotonic() + 5
                time.sleep(0.5)
            out["total_s"] = round(time.monotonic() - t0, 1)
            completed = count_jobs(c, "completed")
        for w in workers.values():
            os.killpg(w.pid, signal.SIGTERM)
            w.wait(15)
        lines = collections.Counter(Path(runs).read_text().split() if os.path.exists(runs) else [])
    names = {f"soak-{i}" for i in range(args.jobs)}
    out.update({"kills": kills, "completed": completed, "lost": args.jobs - len(names & set(lines)),
                "not_completed": args.jobs - completed,
                "ran_twice": sum(1 for k, v in lines.items() if k in names and v > 1)})
    warm = rss[max(0, len(rss) // 4)][1] if rss else 0.0
    out["rss_mb"] = {"samples": rss, "after_warmup": warm, "last": rss[-1][1] if rss else 0.0,
                     "growth_after_warmup": round(rss[-1][1] / warm - 1, 3) if rss and warm else None}
    out["load_average"] = [round(x, 1) for x in os.getloadavg()]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
