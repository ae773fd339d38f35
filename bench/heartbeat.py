"""What a worker's heartbeat costs the coordinator: a real `corral server` on PostgreSQL (a fresh database,
dropped after), --nodes simulated workers registered over the real agent protocol, then their heartbeats.
Prints the server's CPU (user + system of its process) per heartbeat and how many nodes one core holds at
the 3 s interval; with --profile, also a py-spy profile of the server during the heartbeats (the functions
that take the most samples, own and total).

Two clients: `--client wrk` (the default where `wrk` is installed: a C load generator, so that the client's
own CPU does not set the rate on a loaded machine) sends heartbeats for --seconds from --connections
keep-alive connections, the nodes in turn (bench/heartbeat.lua); `--client httpx` sends --rounds rounds of
one heartbeat from every node, as bench/scale.py does. Before the heartbeats the server is left alone for
--idle seconds: what its background loops cost (`idle_cores`), and `server_cpu_ms_each_net` is the CPU
per heartbeat less that.

    .venv/bin/python -m bench.heartbeat --nodes 5000 --seconds 10
    PYTHONPATH=/work/main/src .venv/bin/python -m bench.heartbeat --nodes 5000 --seconds 10   # main's server

Run the two interleaved (A, B, A, B): the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from typing import Any

from bench.scale import Agents, cpu_of, database, server


def start_profile(proc: Any) -> tuple[subprocess.Popen[bytes], str]:
    out = tempfile.NamedTemporaryFile(suffix=".txt", delete=False)  # noqa: SIM115 - read below
    spy = subprocess.Popen(["py-spy", "record", "--pid", str(proc.pid), "--format", "raw", "--rate", "200",
                            "--output", out.name, "--nonblocking", "--gil"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    return spy, out.name


async def beats(url: str, proc: Any, args: argparse.Namespace) -> dict[str, Any]:
    agents = Agents(url, args.connections)
    await agents.register(args.nodes)
    await agents.heartbeat(args.nodes)  # warm: every node has beaten once
    c0 = cpu_of(proc)
    await asyncio.sleep(args.idle)
    idle = (cpu_of(proc) - c0) / args.idle if args.idle else 0.0
    spy = start_profile(proc) if args.profile else None
    c0, t0 = cpu_of(proc), time.monotonic()
    client: dict[str, Any] = {}
    if args.client == "wrk":
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
            f.writelines(f"{i} {s}\n" for i, s in zip(agents.ids, agents.secrets, strict=True))
            f.flush()
            run = await asyncio.to_thread(subprocess.run, [
                "wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds}s", "--latency", "-s",
                os.path.join(os.path.dirname(__file__), "heartbeat.lua"), url, "--", f.name],
                capture_output=True, text=True, check=True)
        client = json.loads(next(ln for ln in run.stdout.splitlines() if ln.startswith("WRK "))[4:])
        n = int(client["requests"])
    else:
        n = await agents.heartbeat(args.nodes * args.rounds)
    took, cpu = time.monotonic() - t0, cpu_of(proc) - c0
    result: dict[str, Any] = {"nodes": args.nodes, "client": args.client, "heartbeats": n, "per_s": round(n / took),
                              "server_cpu_ms_each": round(cpu / n * 1000, 3),
                              "server_cpu_ms_each_net": round((cpu - idle * took) / n * 1000, 3),
                              "idle_cores": round(idle, 3),
                              "nodes_per_core_at_3s": round(3.0 / (cpu / n))}
    if client:
        result["wrk"] = client
    await agents.client.aclose()
    if spy is not None:
        spy[0].send_signal(2)
        spy[0].wait(30)
        result["profile"] = top_frames(spy[1], args.top)
        os.unlink(spy[1])
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
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--client", choices=["wrk", "httpx"], default="wrk" if shutil.which("wrk") else "httpx")
    ap.add_argument("--seconds", type=int, default=10, help="how long wrk sends heartbeats")
    ap.add_argument("--idle", type=float, default=3.0, help="seconds with nothing sent, before the heartbeats")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    with database(args.pg) as db, server(db) as (url, proc):
        out = asyncio.run(beats(url, proc, args))
    out["load_average"] = [round(x, 1) for x in os.getloadavg()]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
