"""What a worker's heartbeat costs the coordinator: a real `corral server` on PostgreSQL (a fresh database,
dropped after), --nodes simulated workers registered over the real agent protocol, then --rounds rounds of one
heartbeat from every node (over --connections keep-alive connections, as bench/scale.py sends them). Prints
the server's CPU (user + system of its process) per heartbeat and how many nodes one core holds at the 3 s
interval; with --profile, also a py-spy profile of the server during the heartbeats (the functions that
take the most samples, own and total).

    .venv/bin/python -m bench.heartbeat --nodes 500 --rounds 4
    PYTHONPATH=/work/main/src .venv/bin/python -m bench.heartbeat --nodes 500 --rounds 4   # main's server

Run the two interleaved (A, B, A, B): the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import tempfile
import time
from typing import Any

from bench.scale import Agents, cpu_of, database, server


async def beats(url: str, proc: Any, args: argparse.Namespace) -> dict[str, Any]:
    agents = Agents(url, args.connections)
    await agents.register(args.nodes)
    await agents.heartbeat(args.nodes)  # warm
    spy = None
    if args.profile:
        out = tempfile.NamedTemporaryFile(suffix=".txt", delete=False)  # noqa: SIM115 - read below
        spy = subprocess.Popen(["py-spy", "record", "--pid", str(proc.pid), "--format", "raw", "--rate", "200",
                                "--output", out.name, "--nonblocking", "--gil"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        time.sleep(1.0)
    c0, t0 = cpu_of(proc), time.monotonic()
    n = await agents.heartbeat(args.nodes * args.rounds)
    took, cpu = time.monotonic() - t0, cpu_of(proc) - c0
    result: dict[str, Any] = {"nodes": args.nodes, "heartbeats": n, "per_s": round(n / took),
                              "server_cpu_ms_each": round(cpu / n * 1000, 2),
                              "nodes_per_core_at_3s": round(3.0 / (cpu / n))}
    await agents.client.aclose()
    if spy is not None:
        spy.send_signal(2)
        spy.wait(30)
        result["profile"] = top_frames(out.name, args.top)
        os.unlink(out.name)
    return result


def top_frames(path: str, top: int) -> dict[str, list[tuple[str, float]]]:
    """From py-spy's collapsed stacks: the functions with the most samples on top of the stack (own) and
    anywhere in it (total), as percentages of the samples of the busy threads."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            frames = stack.split(";")
            if any("wait" in fr and "threading" in fr for fr in frames[-2:]) or "select" in frames[-1]:
                continue  # idle threads
            c = int(count)
            samples += c
            own[frames[-1]] = own.get(frames[-1], 0) + c
            for fr in set(frames):
                total[fr] = total.get(fr, 0) + c

    def best(d: dict[str, int]) -> list[tuple[str, float]]:
        return [(k, round(100 * v / max(samples, 1), 1)) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]]
    return {"own": best(own), "total": best(total)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pg", default=os.environ.get("CORRAL_TEST_PG_URL",
                                                   "postgresql://corral:corral@127.0.0.1:5432/corral_test"))
    ap.add_argument("--nodes", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    with database(args.pg) as db, server(db) as (url, proc):
        out = asyncio.run(beats(url, proc, args))
    out["load_average"] = [round(x, 1) for x in os.getloadavg()]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
