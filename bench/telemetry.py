"""CloudAI telemetry fan-out: many WebSocket subscribers on one `corral up`.

Three phases of ``--duration`` seconds each on one standalone (`corral up --runtime process`):

1. load alone: host-process jobs (``sleep 0.3``) submitted at ``--rate`` per second, no subscriber;
2. load with ``--subscribers`` WebSocket clients on /ws/telemetry (the same client library a user would
   use, with its defaults: permessage-deflate on);
3. the subscribers alone, with no load (the cost of polling and of the periodic telemetry_update).

Delay = the time a subscriber receives ``task_started`` (``task_completed``) minus the job's ``started_at``
(``completed_at``) as the store recorded it: from the event to its receipt, through the agent's report,
the store, the watcher and the fan-out. Every subscriber must receive every event: ``missing`` counts those
that did not. For ``telemetry_update``, the delay is from the message's own timestamp to its receipt.
CPU: user + system time of the server process (its children, the jobs, excluded) over each phase's wall
time, in % of one core; the telemetry's cost is phase 2 minus phase 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil
from websockets.asyncio.client import ClientConnection, connect

from bench.common import corral_up, summary, ts


@dataclass
class Subscriber:
    ws: ClientConnection
    recording: bool = False
    events: dict[tuple[str, str], float] = field(default_factory=dict)  # (type, task) -> delay ms
    updates: list[float] = field(default_factory=list)

    async def run(self) -> None:
        async for raw in self.ws:
            now = time.time()
            if not self.recording:
                continue
            m = json.loads(raw)
            d = m["data"]
            if m["type"] == "task_started":
                self.events[("started", d["task_id"])] = (now - ts(d["started_at"])) * 1000
            elif m["type"] == "task_completed":
                self.events[("completed", d["task_id"])] = (now - ts(d["completed_at"])) * 1000
            elif m["type"] == "telemetry_update":
                self.updates.append((now - ts(m["timestamp"])) * 1000)


class Cpu:
    def __init__(self, pid: int) -> None:
        self.p = psutil.Process(pid)

    def start(self) -> None:
        t = self.p.cpu_times()
        self.t0, self.w0 = t.user + t.system, time.monotonic()

    def percent(self) -> float:
        t = self.p.cpu_times()
        used: float = t.user + t.system - self.t0
        return round(used / (time.monotonic() - self.w0) * 100, 1)


async def load(c: httpx.AsyncClient, rate: float, duration: float) -> int:
    """Submit a job every 1/rate seconds for ``duration``; returns how many."""
    n, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < duration:
        r = await c.post("/v1/jobs", json={"name": "telemetry-bench", "tasks": [{"run": "sleep 0.3"}]})
        r.raise_for_status()
        n += 1
        await asyncio.sleep(max(t0 + n / rate - time.monotonic(), 0))
    return n


async def bench(url: str, pid: int, subscribers: int, rate: float, duration: float) -> dict[str, Any]:
    cpu = Cpu(pid)
    ws_url = url.replace("http://", "ws://") + "/ws/telemetry"
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        await c.post("/v1/jobs", json={"name": "warm-up", "tasks": [{"run": "true"}]})
        await asyncio.sleep(2)
        cpu.start()
        jobs_alone = await load(c, rate, duration)
        await asyncio.sleep(1)
        cpu_alone = cpu.percent()

        t = time.monotonic()
        subs = [Subscriber(await connect(ws_url, open_timeout=30, max_queue=None)) for _ in range(subscribers)]
        readers = [asyncio.create_task(s.run()) for s in subs]
        connect_s = round(time.monotonic() - t, 2)
        await asyncio.sleep(2)
        for s in subs:
            s.recording = True
        before = (await c.get("/v1/jobs", params={"limit": 1})).json()["total"]
        cpu.start()
        jobs_with = await load(c, rate, duration)
        await asyncio.sleep(1.5)  # the last jobs end and their events arrive
        cpu_with = cpu.percent()
        rows = (await c.get("/v1/jobs", params={"limit": jobs_with})).json()["items"]
        assert (await c.get("/v1/jobs", params={"limit": 1})).json()["total"] == before + jobs_with
        for s in subs:
            s.recording = False

        cpu.start()
        await asyncio.sleep(duration)
        cpu_idle_subscribers = cpu.percent()
        for r in readers:
            r.cancel()
        await asyncio.gather(*(s.ws.close() for s in subs), return_exceptions=True)

    finished = [r for r in rows if r["name"] == "telemetry-bench" and r["finished_at"]]
    expected = 2 * len(finished)
    started = [d for s in subs for (kind, _), d in s.events.items() if kind == "started"]
    completed = [d for s in subs for (kind, _), d in s.events.items() if kind == "completed"]
    missing = sum(max(expected - len(s.events), 0) for s in subs)
    updates = [d for s in subs for d in s.updates]
    return {
        "subscribers": subscribers, "jobs_per_second": rate, "phase_seconds": duration,
        "connect_all_seconds": connect_s,
        "jobs_with_subscribers": jobs_with, "events_per_subscriber_expected": expected, "missing": missing,
        "task_started_delay_ms": summary(started, 1), "task_completed_delay_ms": summary(completed, 1),
        "telemetry_update_fanout_ms": summary(updates, 1),
        "server_cpu_percent_of_one_core": {
            "load_alone": cpu_alone, "load_with_subscribers": cpu_with,
            "telemetry_cost": round(cpu_with - cpu_alone, 1), "subscribers_idle": cpu_idle_subscribers},
        "jobs_alone": jobs_alone, "cpus": os.cpu_count(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subscribers", type=int, default=200)
    ap.add_argument("--rate", type=float, default=4.0, help="jobs submitted per second (default 4)")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per phase (default 20)")
    args = ap.parse_args()
    # Many subscribers come from this one address: lift the per-address WebSocket limit for the bench.
    os.environ["CORRAL_RATE_LIMIT_WEBSOCKETS"] = str(args.subscribers + 10)
    with corral_up("--runtime", "process") as (url, proc):
        out = asyncio.run(bench(url, proc.pid, args.subscribers, args.rate, args.duration))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
