"""The whole placement loop at scale: a real coordinator (`corral server`) on PostgreSQL, thousands of simulated
workers speaking the real agent protocol (/v1/agent/*) from one asyncio process over a few HTTP connections,
and tens of thousands of one-task jobs.

    .venv/bin/python -m bench.scale --pg postgresql://corral:corral@127.0.0.1:5432/corral_test
    .venv/bin/python -m bench.scale --nodes 5000 --tasks 50000 --connections 8 --pg ...

A fresh database is created for the run (the user in --pg must be allowed to CREATE DATABASE) and dropped
after. The phases, each with the server's CPU (user + system, of the server process only: PostgreSQL's own
work is not counted) over what it did:
1. register: every node registers (mixed sizes, zone and disk labels, one in ten with 4 or 8 GPUs);
2. heartbeat: every node heartbeats once (or --heartbeats N, node after node), with its usage, as fast as
   the connections allow: CPU per heartbeat, and from it how many nodes one core could hold at the
   default 3 s interval;
3. place: the jobs are submitted (250 per request) and the coordinator's scheduling loop places them; the
   phase ends when no job is pending. Placements per second over the phase, and over the part after the
   last submission (placement alone);
4. deliver (with --deliver): every node polls once (wait 0) for its work and reports each execution
   completed; jobs completed per second;
5. idle: nothing is sent for --idle seconds: the server CPU that 5,000 nodes cost when nothing happens (the
   reaper's pass over the nodes once a second, the scheduling loop's wake-ups).
The server runs with --node-ttl 3600, so that a node is never reaped because the benchmark's own client
fell behind with its heartbeats; the reaper's pass is measured in the idle phase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import psutil

from bench.common import free_port, metrics_job_count

GiB = 2**30


@contextmanager
def database(admin_url: str) -> Iterator[str]:
    """A fresh database next to the one ``admin_url`` names; its URL, dropped after."""
    import psycopg

    name = f"corral_scale_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin_url, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def server(db_url: str, *extra: str) -> Iterator[tuple[str, psutil.Process]]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log = open(os.path.join(tmp, "server.log"), "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen([sys.executable, "-m", "corral", "server", "--port", str(port), "--database-url",
                                 db_url, "--log-level", "warning", "--node-ttl", "3600", *extra],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(url + "/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    with open(log.name) as f:
                        raise RuntimeError("corral server did not start: " + f.read()[-2000:])
                time.sleep(0.1)
            yield url, psutil.Process(proc.pid)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
            log.close()


def cpu_of(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.user + t.system)


def node_body(i: int, rng: random.Random) -> dict[str, Any]:
    cpu, mem = rng.choice([(4, 8), (8, 16), (16, 64), (32, 128), (64, 256)])
    gpus = rng.choice([4, 8]) if rng.random() < 0.1 else 0
    return {"name": f"sim-{i}", "hostname": f"sim-{i}", "version": "bench", "cpu": float(cpu),
            "memory": mem * GiB, "disk": 500 * GiB, "gpus": [{"index": g, "name": "sim"} for g in range(gpus)],
            "labels": {"zone": rng.choice(["a", "b"]), "disk": rng.choice(["ssd", "hdd"])},
            "runtimes": ["process", "docker"], "queues": ["default", "gpu"] if gpus else ["default"]}


class Agents:
    """Many simulated nodes sharing one HTTP client (``connections`` keep-alive connections)."""

    def __init__(self, url: str, connections: int) -> None:
        self.client = httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(
            max_connections=connections, max_keepalive_connections=connections))
        self.ids: list[str] = []
        self.secrets: list[str] = []
        self.sem = asyncio.Semaphore(connections * 4)

    async def each(self, n: int, call: Callable[[int], Awaitable[None]]) -> None:
        async def one(i: int) -> None:
            async with self.sem:
                await call(i)
        await asyncio.gather(*(one(i) for i in range(n)))

    def headers(self, i: int) -> dict[str, str]:
        return {"X-Corral-Node-Secret": self.secrets[i]}

    async def register(self, n: int) -> None:
        rng = random.Random(1)
        bodies = [node_body(i, rng) for i in range(n)]
        self.ids, self.secrets = [""] * n, [""] * n

        async def reg(i: int) -> None:
            r = await self.client.post("/v1/agent/register", json=bodies[i])
            r.raise_for_status()
            self.ids[i], self.secrets[i] = r.json()["node_id"], r.json()["node_secret"]
        await self.each(n, reg)

    async def heartbeat(self, count: int) -> int:
        n = len(self.ids)

        async def hb(i: int) -> None:
            r = await self.client.post(f"/v1/agent/nodes/{self.ids[i % n]}/heartbeat", headers=self.headers(i % n),
                                       json={"running": [], "usage": {"cpu_percent": 5.0, "memory_percent": 10.0}})
            r.raise_for_status()
        await self.each(count, hb)
        return count

    async def deliver(self) -> int:
        """Each node polls once for its work and reports every execution it got completed."""
        done = 0

        async def work(i: int) -> None:
            nonlocal done
            r = await self.client.post(f"/v1/agent/nodes/{self.ids[i]}/poll", headers=self.headers(i),
                                       json={"known": [], "wait": 0})
            r.raise_for_status()
            items = r.json()["work"]
            if not items:
                return
            now = time.time()
            updates = [u for w in items for u in (
                {"execution_id": w["execution_id"], "state": "running", "ts": now},
                {"execution_id": w["execution_id"], "state": "completed", "ts": now, "exit_code": 0})]
            r = await self.client.post(f"/v1/agent/nodes/{self.ids[i]}/report", headers=self.headers(i),
                                       json={"updates": updates, "logs": []})
            r.raise_for_status()
            done += len(items)
        await self.each(len(self.ids), work)
        return done


async def count(client: httpx.AsyncClient, state: str) -> int:
    r = await client.get("/v1/jobs", params={"state": state, "limit": 1})
    r.raise_for_status()
    if r.json().get("total_exact", True):
        return int(r.json()["total"])
    return metrics_job_count((await client.get("/metrics")).text, state)  # past GET /v1/jobs' count cap


async def submit(client: httpx.AsyncClient, n: int, batch: int) -> None:
    rng = random.Random(2)
    for i in range(0, n, batch):
        jobs = []
        for j in range(i, min(i + batch, n)):
            task: dict[str, Any] = {"run": "echo hi", "resources": {"cpu": rng.choice([0.1, 0.25, 0.5, 1.0])}}
            if rng.random() < 0.2:
                task["node_selector"] = {"zone": rng.choice(["a", "b"])}
            jobs.append({"name": f"s{j}", "tasks": [task]})
        r = await client.post("/v1/jobs/batch", json={"jobs": jobs})
        r.raise_for_status()


async def run(url: str, proc: psutil.Process, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"nodes": args.nodes, "tasks": args.tasks, "connections": args.connections}
    agents = Agents(url, args.connections)
    api = httpx.AsyncClient(base_url=url, timeout=120)

    c0, t0 = cpu_of(proc), time.monotonic()
    await agents.register(args.nodes)
    took, cpu = time.monotonic() - t0, cpu_of(proc) - c0
    out["register"] = {"per_s": round(args.nodes / took), "server_cpu_ms_each": round(cpu / args.nodes * 1000, 2)}

    c0, t0 = cpu_of(proc), time.monotonic()
    beats = await agents.heartbeat(args.heartbeats or args.nodes)
    took, cpu = time.monotonic() - t0, cpu_of(proc) - c0
    each = cpu / beats
    out["heartbeat"] = {"per_s": round(beats / took), "server_cpu_ms_each": round(each * 1000, 3),
                        "nodes_one_core_holds_at_3s": round(3 / each)}

    c0, t0 = cpu_of(proc), time.monotonic()
    await submit(api, args.tasks, 250)
    t_sub, c_sub = time.monotonic(), cpu_of(proc)
    pending_at_sub = await count(api, "pending")
    while (pending := await count(api, "pending")) > 0:
        if time.monotonic() - t0 > args.timeout:
            out["place_timed_out_with_pending"] = pending
            break
        await asyncio.sleep(0.25)
    t_end, c_end = time.monotonic(), cpu_of(proc)
    placed = args.tasks - pending
    after = pending_at_sub - pending
    out["place"] = {"submit_s": round(t_sub - t0, 2), "all_placed_s": round(t_end - t0, 2),
                    "placed_per_s": round(placed / (t_end - t0)),
                    "pending_when_submitted": pending_at_sub,
                    "placed_per_s_after_submit": round(after / (t_end - t_sub)) if t_end > t_sub and after else None,
                    "server_cpu_s": round(c_end - c0, 2),
                    "server_cpu_ms_per_task_after_submit": round((c_end - c_sub) / after * 1000, 3) if after else None}

    if args.deliver:
        c0, t0 = cpu_of(proc), time.monotonic()
        done = await agents.deliver()
        while await count(api, "completed") < done and time.monotonic() - t0 < args.timeout:
            await asyncio.sleep(0.25)
        took, cpu = time.monotonic() - t0, cpu_of(proc) - c0
        out["deliver"] = {"completed": done, "per_s": round(done / took),
                          "server_cpu_ms_each": round(cpu / max(done, 1) * 1000, 3)}

    c0 = cpu_of(proc)
    await asyncio.sleep(args.idle)
    cpu = cpu_of(proc) - c0
    out["idle"] = {"seconds": args.idle, "server_cpu_s": round(cpu, 3),
                   "server_cores_busy": round(cpu / args.idle, 3)}
    await agents.client.aclose()
    await api.aclose()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pg", default=os.environ.get("CORRAL_TEST_PG_URL",
                                                   "postgresql://corral:corral@127.0.0.1:5432/corral_test"))
    ap.add_argument("--nodes", type=int, default=5000)
    ap.add_argument("--tasks", type=int, default=50000)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--heartbeats", type=int, default=0, help="heartbeats sent in phase 2 (default: one per node)")
    ap.add_argument("--deliver", action="store_true", help="also poll the work and report it completed")
    ap.add_argument("--idle", type=float, default=10.0)
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds a phase may take")
    ap.add_argument("--strategy", choices=["spread", "binpack"], default="spread")
    args = ap.parse_args()
    with database(args.pg) as db, server(db, "--strategy", args.strategy) as (url, proc):
        out = asyncio.run(run(url, proc, args))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
