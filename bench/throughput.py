"""Throughput: N one-task jobs of `sh -c 'echo hi'` on the process runtime, standalone.

Measures from the first submit to the last completion, in tasks per second. Submissions go over the
native HTTP API (batches of 250 per request, as a client with many jobs would send them). With --celery,
runs the same work through Celery with Redis and two prefork workers, side by side.
"""

from __future__ import annotations

import argparse
import json
import time

import httpx
import psutil

from bench.common import corral_up, count_finished, count_state

TASK: dict[str, object] = {"run": "echo hi"}
# One cheap request per poll: the server shares the machine's two cores with this client, so polling fast and
# often would slow down what it measures. The finish is seen at most this late (0.5% of a 10 s run).
POLL_S = 0.05


def run_corral(n: int, batch: int, cpu: float | None = None) -> dict[str, float]:
    with corral_up("--runtime", "process") as (url, proc), httpx.Client(base_url=url, timeout=60) as c:
        server = psutil.Process(proc.pid)
        cpu0 = sum(server.cpu_times()[:2])
        t0 = time.monotonic()
        for i in range(0, n, batch):
            task = {**TASK, "resources": {"cpu": cpu}} if cpu is not None else TASK
            jobs = [{"name": f"t{j}", "tasks": [task]} for j in range(i, min(i + batch, n))]
            r = c.post("/v1/jobs/batch", json={"jobs": jobs})
            r.raise_for_status()
        t_submitted = time.monotonic() - t0
        while count_finished(c) < n:
            time.sleep(POLL_S)
        elapsed = time.monotonic() - t0
        cpu = sum(server.cpu_times()[:2]) - cpu0
        done, failed = count_state(c, "completed"), count_state(c, "failed")
        return {"tasks": n, "completed": done, "failed": failed, "submit_s": round(t_submitted, 3),
                "elapsed_s": round(elapsed, 3), "tasks_per_s": round(n / elapsed, 1),
                "server_cpu_s": round(cpu, 2), "server_cores_busy": round(cpu / elapsed, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--celery", action="store_true", help="also run Celery+Redis side by side")
    ap.add_argument("--cpu", type=float, default=None,
                    help="CPU each task reserves (default: Corral's 0.05 core, 40 at a time on 2 cores)")
    args = ap.parse_args()
    out: dict[str, object] = {"corral": run_corral(args.n, args.batch, args.cpu)}
    if args.celery:
        from bench.celery_side import run_celery
        out["celery"] = run_celery(args.n)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
