"""Submit -> running latency of a single host-process task on an idle standalone (`corral up --runtime process`).

N sequential submissions of a one-task job `sleep 0.5` (long enough that the running state is observable);
each is waited for to the end before the next, so the standalone is idle at every submit. Latency =
executions[0].started_at - job created_at, both stamped on the server's machine (created_at by the
coordinator when the job is committed, started_at by the local worker when the process has been spawned).
Also the client-observed round trip of POST /v1/jobs. The issue's target: p50 under 50 ms.
"""

from __future__ import annotations

import argparse
import json
import time

import httpx

from bench.common import corral_up, summary, ts


def run(n: int = 100, sleep: float = 0.5) -> dict[str, object]:
    latency: list[float] = []
    rtt: list[float] = []
    job = {"name": "latency", "tasks": [{"run": f"sleep {sleep}"}]}
    with corral_up("--runtime", "process") as (url, _), httpx.Client(base_url=url, timeout=30) as c:
        c.post("/v1/jobs", json={"name": "warm-up", "tasks": [{"run": "true"}]}).raise_for_status()
        time.sleep(1)
        for _ in range(n):
            t = time.monotonic()
            r = c.post("/v1/jobs", json=job)
            rtt.append((time.monotonic() - t) * 1000)
            r.raise_for_status()
            jid = r.json()["id"]
            deadline = time.monotonic() + 30
            while True:
                j = c.get(f"/v1/jobs/{jid}").json()
                if j["state"] in ("completed", "failed", "cancelled"):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"job {jid} did not finish: {j['state']}")
                time.sleep(0.05)
            if j["state"] != "completed":
                raise RuntimeError(f"job {jid} ended {j['state']}: {j.get('error')}")
            ex = j["tasks"][0]["executions"][0]
            latency.append((ts(ex["started_at"]) - ts(j["created_at"])) * 1000)
    return {"submissions": n, "task": job["tasks"][0], "submit_to_running_ms": summary(latency),
            "submit_round_trip_ms": summary(rtt), "target_p50_ms": 50}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=100, help="sequential submissions (default 100)")
    ap.add_argument("--sleep", type=float, default=0.5, help="seconds each task sleeps (default 0.5)")
    args = ap.parse_args()
    print(json.dumps(run(args.n, args.sleep), indent=2))


if __name__ == "__main__":
    main()
