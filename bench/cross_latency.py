"""Submit -> running through a coordinator other than the worker's, beside the same-coordinator case.

Three `corral server` processes (c0, c1, c2) on a fresh database of the given PostgreSQL server and one worker
(host processes) long-polling c1 alone. Jobs (one task, `sleep 0.2`) are submitted one at a time, each waited
for to the end (the cluster is idle at every submit), in four cases that differ in who takes the submission
and who leads (runs the scheduling passes):

    same         submit to c1, c1 leads       (everything on the worker's coordinator)
    cross        submit to c0, c0 leads       (the submit's coordinator places; NOTIFY wakes c1's long-poll)
    cross-wlead  submit to c0, c1 leads       (NOTIFY kicks the leader c1, which wakes its own long-poll)
    cross-third  submit to c0, c2 leads       (NOTIFY kicks c2; c2's NOTIFY wakes c1's long-poll)

The cases are interleaved in rounds of `--block` jobs (same, cross, cross-wlead, cross-third, same, ...), so
that a machine busy with other work weighs on every case alike. Latency = the execution's started_at (stamped
by the worker once the process is spawned) - the job's created_at (stamped by the coordinator at submit);
both clocks are this machine's. The issue's target: p50 under 50 ms across coordinators.

    .venv/bin/python -m bench.cross_latency --pg postgresql://corral:corral@127.0.0.1:5432/corral_test
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from bench.common import summary, ts
from bench.failover import Coord, wait

CASES = {"same": (1, 1), "cross": (0, 0), "cross-wlead": (0, 1), "cross-third": (0, 2)}  # (submit via, leader)


class Bench:
    def __init__(self, db: str, tmp: Path, lease: float) -> None:
        self.tmp = tmp
        self.cs = [Coord(i, db, tmp, lease) for i in range(3)]
        self.worker: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        for c in self.cs:
            c.start()
        wait(lambda: all(c.up() for c in self.cs), 60, "the coordinators")
        log = (self.tmp / "worker.log").open("ab")
        self.worker = subprocess.Popen([sys.executable, "-m", "corral", "worker", "--server", self.cs[1].url,
                                        "--runtime", "process", "--cpus", "4", "--data-dir", str(self.tmp / "w"),
                                        "--name", "w", "--log-level", "warning", "--grace", "1s"],
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait(lambda: [n for n in self.cs[0].client.get("/v1/nodes").json()["items"] if n["state"] == "ready"],
             30, "the worker")
        wait(lambda: self.cs[0].client.get("/v1/cluster").json()["leader_id"], 10, "a leader")

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.terminate()
            try:
                self.worker.wait(10)
            except subprocess.TimeoutExpired:
                self.worker.kill()
        for c in self.cs:
            c.stop()

    def lead(self, i: int) -> None:
        c = self.cs[0].client
        if c.get("/v1/cluster").json()["leader_id"] != f"c{i}":
            c.post("/v1/cluster/transfer", json={"target": f"c{i}"}).raise_for_status()
        # every coordinator knows it (a follower learns it at its next step): no kick goes astray
        wait(lambda: all(x.client.get("/v1/cluster").json()["leader_id"] == f"c{i}" for x in self.cs), 5,
             "all coordinators to see the leader")
        time.sleep(self.cs[0].lease / 3)  # each coordinator's own step has run since (is_leader() is its own)

    def one(self, via: int, sleep: float) -> float:
        c = self.cs[via].client
        r = c.post("/v1/jobs", json={"name": "cross-latency", "tasks": [{"run": f"sleep {sleep}"}]})
        r.raise_for_status()
        jid = r.json()["id"]
        j = wait(lambda: (j := c.get(f"/v1/jobs/{jid}").json())["state"] in ("completed", "failed") and j,
                 30, "a job", 0.05)
        if j["state"] != "completed":
            raise RuntimeError(f"job {jid} ended {j['state']}")
        return (ts(j["tasks"][0]["executions"][0]["started_at"]) - ts(j["created_at"])) * 1000

    def run(self, n: int, block: int, sleep: float, cases: list[str]) -> dict[str, Any]:
        got: dict[str, list[float]] = {k: [] for k in cases}
        self.one(1, 0)  # warm-up
        while any(len(v) < n for v in got.values()):
            for k in cases:
                via, leader = CASES[k]
                self.lead(leader)
                for _ in range(min(block, n - len(got[k]))):
                    got[k].append(self.one(via, sleep))
        return {k: summary(v) for k, v in got.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pg", default=os.environ.get("CORRAL_TEST_PG_URL"),
                    help="a PostgreSQL URL to create the bench's database on [env CORRAL_TEST_PG_URL]")
    ap.add_argument("-n", type=int, default=40, help="jobs per case (default 40)")
    ap.add_argument("--block", type=int, default=10, help="jobs per case in a row (default 10)")
    ap.add_argument("--sleep", type=float, default=0.2, help="seconds each task sleeps (default 0.2)")
    ap.add_argument("--lease", type=float, default=2.0, help="--leader-lease of each coordinator (default 2)")
    ap.add_argument("--cases", default=",".join(CASES), help=f"which cases, in order (default {','.join(CASES)})")
    args = ap.parse_args()
    if not args.pg:
        ap.error("--pg is required")
    cases = [c for c in args.cases.split(",") if c]
    if bad := [c for c in cases if c not in CASES]:
        ap.error(f"unknown case(s) {bad}: known are {list(CASES)}")
    name = f"corral_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(args.pg, autocommit=True) as admin, tempfile.TemporaryDirectory() as tmp:
        admin.execute(f'CREATE DATABASE "{name}"')
        bench = Bench(f"{args.pg.rsplit('/', 1)[0]}/{name}", Path(tmp), args.lease)
        try:
            bench.start()
            out: dict[str, Any] = {"jobs_per_case": args.n, "block": args.block, "target_p50_ms": 50,
                                   "load_average_before": os.getloadavg()}
            out["submit_to_running_ms"] = bench.run(args.n, args.block, args.sleep, cases)
            out["load_average_after"] = os.getloadavg()
        finally:
            bench.stop()
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
