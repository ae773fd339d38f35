"""`each` throughput: one job whose task is an `each` over N items (default 1,000) with a concurrency of C
(default 50), each item an `echo` host process with the item in its command (so every item is evaluated
from its expression). Measured on a real `corral up --runtime process`, from the POST to the job's
completion, as items per second. The issue's target: 500 tasks/s or more.

Side by side in the same run (with --celery): Celery 5 + Redis running the same N `echo` commands through
subprocess as one `group` with 2 prefork workers (the alternative a Python user would pick; it has no
per-job concurrency limit, so its figure is an upper bound for this shape).
"""

from __future__ import annotations

import argparse
import json
import time

import httpx

from bench.common import corral_up


def run_each(n: int, concurrency: int) -> dict[str, float]:
    job = {"name": "each-bench", "tasks": [{"name": "fan", "each": {
        "list": f"{{{{ sequence(0, {n}) }}}}", "concurrency": concurrency,
        "task": {"run": "echo item {{ item.value }}"}}}]}
    with corral_up("--runtime", "process") as (url, _), httpx.Client(base_url=url, timeout=60) as c:
        warm = c.post("/v1/jobs", json={"name": "warm", "tasks": [{"run": "true"}]}).json()["id"]
        while c.get(f"/v1/jobs/{warm}").json()["state"] != "completed":
            time.sleep(0.05)
        t0 = time.monotonic()
        jid = c.post("/v1/jobs", json=job).json()["id"]
        while True:
            state = _state(c, jid)
            if state in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.05)
        took = time.monotonic() - t0
        if state != "completed":
            raise RuntimeError(f"the each job ended {state}")
        body = c.get(f"/v1/jobs/{jid}").json()
        kids = [t for t in body["tasks"] if t["parent_id"]]
        if len(kids) != n or any(t["state"] != "completed" for t in kids):
            raise RuntimeError("not every item completed")
    return {"items": n, "concurrency": concurrency, "seconds": round(took, 3), "tasks_per_s": round(n / took, 1)}


def _state(c: httpx.Client, jid: str) -> str:
    # The job listing answers without the 1,000 tasks: cheap to poll while the server is busy.
    r = c.get("/v1/jobs", params={"limit": 1}).json()["items"]
    top = next((j for j in r if j["id"] == jid), None)
    return str(top["state"]) if top else str(c.get(f"/v1/jobs/{jid}").json()["state"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=1000, help="items (default 1000)")
    ap.add_argument("-c", "--concurrency", type=int, default=50, help="each.concurrency (default 50)")
    ap.add_argument("--runs", type=int, default=3, help="repeat and report each run (default 3)")
    ap.add_argument("--celery", action="store_true", help="also run Celery + Redis on the same N commands")
    args = ap.parse_args()
    out: dict[str, object] = {"corral_each": [run_each(args.n, args.concurrency) for _ in range(args.runs)]}
    if args.celery:
        from bench.celery_side import run_celery

        out["celery_group"] = run_celery(args.n)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
