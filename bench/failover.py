"""Failover of the leader among several coordinators on one PostgreSQL, and submit -> running through a
coordinator other than the worker's.

Starts N `corral server` processes (c0..) on a fresh database of the given PostgreSQL server and one worker
(host processes) given every coordinator's URL. First, with the leader on c0, the worker on c1 and the
submissions on c2: `--latency` sequential one-task jobs, each waited for; latency = the execution's
started_at - the job's created_at (both stamped on this machine). Then `--kills` times: jobs are submitted
all along (through any live coordinator); the leader is killed with SIGKILL; a probe job is submitted at
once through a live coordinator, and the time from the kill to the probe running is the placement gap; the
killed coordinator is started again (same id) before the next kill. At the end every accepted job must
have completed (a job completes once its task has run), each task having appended its job id to a file:
an accepted job missing from the file is lost, one there twice ran twice.

    .venv/bin/python -m bench.failover --pg postgresql://corral:corral@127.0.0.1:5432/corral_test
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.common import count_jobs, free_port, summary, ts


class Coord:
    def __init__(self, i: int, db: str, tmp: Path, lease: float) -> None:
        self.i, self.db, self.tmp, self.lease = i, db, tmp, lease
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def start(self) -> None:
        log = (self.tmp / f"c{self.i}.log").open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "corral", "server", "--port", str(self.port),
                                      "--database-url", self.db, "--coordinator-id", f"c{self.i}",
                                      "--leader-lease", str(self.lease), "--log-level", "warning"],
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def up(self) -> bool:
        try:
            return self.client.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def wait(cond: Any, timeout: float, what: str, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
            got = cond()
            if got:
                return got
        time.sleep(interval)
    raise RuntimeError(f"timed out waiting for {what}")


class Bench:
    def __init__(self, db: str, tmp: Path, n: int, lease: float) -> None:
        self.tmp = tmp
        self.runs = tmp / "runs.txt"
        self.runs.touch()
        self.cs = [Coord(i, db, tmp, lease) for i in range(n)]
        self.worker: subprocess.Popen[bytes] | None = None

    def live(self) -> list[Coord]:
        return [c for c in self.cs if c.proc is not None and c.proc.poll() is None]

    def status(self) -> dict[str, Any]:
        for c in self.live():
            with contextlib.suppress(httpx.HTTPError):
                r = c.client.get("/v1/cluster")
                if r.status_code == 200:
                    return dict(r.json())
        raise RuntimeError("no coordinator answers")

    def leader(self) -> int | None:
        lid = self.status()["leader_id"]
        return int(lid[1:]) if lid else None

    def submit(self, via: Coord, run: str | None = None) -> str:
        r = via.client.post("/v1/jobs", json={"tasks": [{"run": run or f"echo $CORRAL_JOB_ID >> {self.runs}"}]})
        r.raise_for_status()
        return str(r.json()["id"])

    def job(self, job_id: str) -> dict[str, Any]:
        for c in self.live():
            with contextlib.suppress(httpx.HTTPError):
                r = c.client.get(f"/v1/jobs/{job_id}")
                if r.status_code == 200:
                    return dict(r.json())
        raise RuntimeError("no coordinator answers")

    def start(self) -> None:
        for c in self.cs:
            c.start()
        wait(lambda: all(c.up() for c in self.cs), 60, "the coordinators")
        log = (self.tmp / "worker.log").open("ab")
        servers = [a for c in (self.cs[1:] + self.cs[:1]) for a in ("--server", c.url)]
        self.worker = subprocess.Popen([sys.executable, "-m", "corral", "worker", *servers, "--runtime", "process",
                                        "--cpus", "16", "--data-dir", str(self.tmp / "w"), "--name", "w",
                                        "--log-level", "warning", "--grace", "1s"],
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait(lambda: [n for n in self.cs[0].client.get("/v1/nodes").json()["items"] if n["state"] == "ready"],
             30, "the worker")
        wait(lambda: self.leader() is not None, 10, "a leader")

    def stop(self) -> None:
        if self.worker is not None:
            os.killpg(self.worker.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.worker.wait(10)
        for c in self.cs:
            c.stop()

    def latency(self, n: int) -> dict[str, Any]:
        """Leader c0, worker on c1 (its first URL), submissions on c2."""
        r = self.cs[2].client.post("/v1/cluster/transfer", json={"target": "c0"})
        r.raise_for_status()
        out = []
        for _ in range(n):
            jid = self.submit(self.cs[2], "sleep 0.2")
            j = wait(lambda jid=jid: (j := self.cs[2].client.get(f"/v1/jobs/{jid}").json())["state"] == "completed"
                     and j, 10, "a job", 0.05)
            out.append((ts(j["tasks"][0]["executions"][0]["started_at"]) - ts(j["created_at"])) * 1000)
        return summary(out)

    def completed(self) -> int:
        return count_jobs(self.live()[0].client, "completed")

    def failover(self, kills: int) -> dict[str, Any]:
        before = self.completed()  # the latency run's jobs
        accepted: list[str] = []
        stop = threading.Event()

        def submitter() -> None:
            k = 0
            while not stop.is_set():
                live = self.live()
                k += 1
                with contextlib.suppress(httpx.HTTPError):
                    accepted.append(self.submit(live[k % len(live)]))
                time.sleep(0.05)

        th = threading.Thread(target=submitter)
        th.start()
        gaps, elections = [], []
        try:
            for _ in range(kills):
                time.sleep(1.0)
                victim = self.leader()
                if victim is None:
                    victim = wait(self.leader, 10, "a leader")
                c = self.cs[victim]
                c.kill9()
                t0 = time.monotonic()
                others = [o for o in self.live() if o is not c]
                probe = self.submit(others[0])
                accepted.append(probe)
                wait(lambda v=victim: self.leader() not in (None, v), 15, "a new leader")
                elections.append(time.monotonic() - t0)
                wait(lambda p=probe: self.job(p)["state"] in ("running", "completed"), 30, "the probe to run")
                gaps.append(time.monotonic() - t0)
                c.start()
                wait(c.up, 60, f"c{victim} to start again")
        finally:
            stop.set()
            th.join()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # one count per look: the coordinators share two cores with this
            with contextlib.suppress(httpx.HTTPError, RuntimeError):
                if self.completed() - before >= len(accepted):
                    break
            time.sleep(0.5)
        ran = self.runs.read_text().split()
        counts: dict[str, int] = {}
        for jid in ran:
            counts[jid] = counts.get(jid, 0) + 1
        missing = {j: self.job(j)["state"] for j in accepted if j not in counts}  # not run: their states
        return {"kills": kills, "placement_gap_s": summary(gaps), "new_leader_s": summary(elections),
                "accepted_jobs": len(accepted), "not_run": missing,
                "lost": sum(1 for s in missing.values() if s in ("completed", "failed", "cancelled")),
                "run_twice": sum(1 for v in counts.values() if v > 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pg", default=os.environ.get("CORRAL_TEST_PG_URL"),
                    help="a PostgreSQL URL to create the bench's database on [env CORRAL_TEST_PG_URL]")
    ap.add_argument("--coordinators", type=int, default=3)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--latency", type=int, default=50, help="sequential jobs for submit -> running (default 50)")
    ap.add_argument("--lease", type=float, default=2.0, help="--leader-lease of each coordinator (default 2)")
    args = ap.parse_args()
    if not args.pg:
        ap.error("--pg is required")
    name = f"corral_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(args.pg, autocommit=True) as admin, tempfile.TemporaryDirectory() as tmp:
        admin.execute(f'CREATE DATABASE "{name}"')
        bench = Bench(f"{args.pg.rsplit('/', 1)[0]}/{name}", Path(tmp), args.coordinators, args.lease)
        try:
            bench.start()
            out: dict[str, Any] = {"coordinators": args.coordinators, "leader_lease_s": args.lease}
            out["submit_to_running_ms_across_coordinators"] = bench.latency(args.latency)
            out["failover"] = bench.failover(args.kills)
        finally:
            bench.stop()
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
