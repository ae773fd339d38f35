"""One job per request, as users send them: `wrk` (a C load generator, so that the client is not what is
measured) over 16 keep-alive connections against a real `corral up --runtime process`.

Prints, per case, requests/s and the server process's CPU time per request (psutil, the process alone:
not the `sh` processes it starts). Cases:

- ``accept``: one-job ``POST /v1/jobs`` to a queue no worker serves (acceptance alone: parse, validate,
  group commit, answer);
- ``healthz``, ``get_job``: ``GET /healthz``, ``GET /v1/jobs/{id}``;
- ``tork``, ``nomadlite``, ``cloudai``: the dialects' submit routes, to a queue no worker serves where the
  dialect lets the job name one (Tork) or with the job's default queue otherwise (then the local worker
  runs them: see ``--e2e``);
- ``e2e`` (``--e2e N``): N ``echo hi`` jobs posted the same way (``hey -n N``: exactly N requests, which
  wrk cannot send) to the served queue, from the first request to the moment all N completed; with
  ``--celery``, Celery's one-``delay()``-per-task rate for the same N beside it, in the same run
  (bench/celery_side.py: Redis, two prefork workers).

Needs ``wrk`` and, for ``e2e``, ``hey`` on PATH (Debian: ``apt-get install wrk hey``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import httpx
import psutil

from bench.common import corral_up, count_jobs

JOB = {"name": "w", "tasks": [{"name": "t", "run": "echo hi"}]}
UNSERVED = {**JOB, "queue": "nobody"}
LUA_POST = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = os.getenv("WRK_BODY")
"""


def wrk(url: str, seconds: float, connections: int, script: str | None = None,
        env: dict[str, str] | None = None) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script or "")
    try:
        out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "-s", f.name, "--latency", url],
                             capture_output=True, text=True, env={**os.environ, **(env or {})}, check=True).stdout
    finally:
        os.unlink(f.name)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    n = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    return {"requests": n, "rate": rate, "non_2xx": int(bad.group(1)) if bad else 0,
            "p50_ms": float(p50.group(1)) * scale[p50.group(2)] if p50 else float("nan")}


def hey_post(url: str, n: int, connections: int, body: str) -> dict[str, float]:
    """``n`` POSTs of ``body`` over ``connections`` keep-alive connections (hey gives each connection n //
    connections of them: 2,992 for 3,000 over 16)."""
    out = subprocess.run(["hey", "-n", str(n), "-c", str(connections), "-m", "POST", "-T", "application/json",
                          "-d", body, url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    codes = {int(c): int(k) for c, k in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    return {"requests": sum(codes.values()), "rate": rate, "non_2xx": sum(k for c, k in codes.items() if c >= 300)}


def cpu_of(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def measure(server: psutil.Process, url: str, seconds: float, connections: int, script: str | None = None,
            env: dict[str, str] | None = None) -> dict[str, float]:
    before = cpu_of(server)
    out = wrk(url, seconds, connections, script, env)
    used = cpu_of(server) - before
    out["server_cpu_ms_per_request"] = round(1000 * used / max(out["requests"], 1), 3)
    out["server_cores"] = round(used / seconds, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-d", "--seconds", type=float, default=10.0, help="seconds per case (default 10)")
    ap.add_argument("-c", "--connections", type=int, default=16)
    ap.add_argument("--e2e", type=int, default=5000, help="jobs in the end-to-end case (0: skip it)")
    ap.add_argument("--cases", default="accept,healthz,get_job,tork,nomadlite,cloudai,e2e")
    ap.add_argument("--celery", action="store_true", help="with e2e: Celery's rate for the same jobs beside it")
    args = ap.parse_args()
    cases = args.cases.split(",")
    for tool, needed in (("wrk", set(cases) - {"e2e"}), ("hey", {"e2e"} & set(cases) if args.e2e else set())):
        if needed and shutil.which(tool) is None:
            sys.exit(f"{tool} is not on PATH (apt-get install {tool})")
    results: dict[str, Any] = {"connections": args.connections, "seconds": args.seconds, "nproc": os.cpu_count(),
                               "load_before": os.getloadavg()[0]}
    # The dialects' jobs are container tasks (nomad-lite's through CORRAL_NOMADLITE_IMAGE) that the process-only
    # local worker never runs: what is measured is acceptance alone, as for `accept`.
    os.environ.setdefault("CORRAL_NOMADLITE_IMAGE", "busybox")
    # CloudAI's submit route is rate limited per address (10/minute by default): measure the route, limiter
    # included, under a limit this client stays below.
    os.environ.setdefault("CORRAL_RATE_LIMIT_SUBMIT", "100000000/minute")
    with corral_up("--runtime", "process") as (url, proc):
        server = psutil.Process(proc.pid)
        client = httpx.Client(base_url=url, timeout=60)
        one = client.post("/v1/jobs", json=UNSERVED).json()["id"]
        posts = {"accept": ("/v1/jobs", UNSERVED),
                 "tork": ("/jobs", {"name": "w", "tasks": [{"name": "t", "run": "echo hi", "image": "busybox",
                                                             "queue": "nobody"}]}),
                 "nomadlite": ("/api/jobs", {"command": "echo hi"}),
                 "cloudai": ("/api/tasks", {"command": "echo hi", "docker_image": "busybox", "user_id": "u1"})}
        gets = {"healthz": "/healthz", "get_job": f"/v1/jobs/{one}"}
        for name in cases:
            if name in posts:
                path, job = posts[name]
                results[name] = measure(server, url + path, args.seconds, args.connections, LUA_POST,
                                        {"WRK_BODY": json.dumps(job)})
            elif name in gets:
                results[name] = measure(server, url + gets[name], args.seconds, args.connections)
            else:
                continue
            print(f"{name}: {results[name]}", file=sys.stderr)
    if "e2e" in cases and args.e2e:
        # A server of its own: jobs of a queue nobody serves, older than these, would stand before them.
        with corral_up("--runtime", "process") as (url, proc):
            server = psutil.Process(proc.pid)
            client = httpx.Client(base_url=url, timeout=60)
            before = cpu_of(server)
            t0 = time.monotonic()
            sent = hey_post(url + "/v1/jobs", args.e2e, args.connections, json.dumps(JOB))
            n = int(sent["requests"] - sent["non_2xx"])  # each 2xx is a job on disk
            deadline = time.monotonic() + 600
            while (done := count_jobs(client, "completed,failed")) < n:
                if time.monotonic() > deadline:
                    sys.exit(f"e2e: {done} of {n} jobs finished in 600 s")
                time.sleep(0.05)
            took = time.monotonic() - t0
            results["e2e"] = {"jobs": n, "seconds": round(took, 2), "rate": round(n / took, 1),
                              "submit_rate": sent["rate"], "non_2xx": sent["non_2xx"],
                              "stored": count_jobs(client),
                              "failed": count_jobs(client, "failed"),
                              "server_cpu_ms_per_job": round(1000 * (cpu_of(server) - before) / n, 3)}
            print(f"e2e: {results['e2e']}", file=sys.stderr)
        if args.celery:
            from bench.celery_side import run_celery
            results["celery"] = run_celery(args.e2e)
            print(f"celery: {results['celery']}", file=sys.stderr)
    results["load_after"] = os.getloadavg()[0]
    json.dump(results, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
