"""What adoption costs a host-process task: ProcessRuntime.run of `sh -c "echo hi"` with its exit-status trap
(what the worker does now) and without it (as before adoption), interleaved, N tasks each, C at a time.

    .venv/bin/python -m bench.process_spawn -n 2000 --rounds 2

Per task: wall time, and CPU time of this process and of its children (the tasks' shells), in microseconds;
the load average with them (this measures the runtime alone, without a server: the part adoption changes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
from typing import Any

from corral.runtime import process, scratch
from corral.runtime.base import RunRequest


async def _batch(rt: process.ProcessRuntime, base: str, n: int, concurrency: int, tag: str) -> None:
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            ex = f"{tag}-{i}"
            sc = scratch.make(base, ex, own_dir=False)
            req = RunRequest(execution_id=ex, job_id="j", task_id="t", task_name="t", node_id="n",
                             argv=["sh", "-c", "echo hi"], scratch=sc)
            result = await rt.run(req, lambda _s, _l: True, lambda _pid: None)
            assert result.exit_code == 0, result
            with contextlib.suppress(FileNotFoundError):  # as the agent does
                os.unlink(sc.output)

    await asyncio.gather(*(one(i) for i in range(n)))


def measure(n: int, concurrency: int, trap: bool, tag: str) -> dict[str, float]:
    real = process.supervised
    if not trap:
        process.supervised = lambda argv, execution_id, fd: None  # as before adoption
    try:
        with tempfile.TemporaryDirectory() as data:
            base = os.path.join(data, "executions")
            os.mkdir(base)
            rt = process.ProcessRuntime()
            t0, c0 = time.perf_counter(), os.times()
            asyncio.run(_batch(rt, base, n, concurrency, tag))
            t1, c1 = time.perf_counter(), os.times()
    finally:
        process.supervised = real
    return {"wall_us": round((t1 - t0) / n * 1e6),
            "self_cpu_us": round((c1.user + c1.system - c0.user - c0.system) / n * 1e6),
            "children_cpu_us": round((c1.children_user + c1.children_system - c0.children_user - c0.children_system)
                                     / n * 1e6)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    out: dict[str, Any] = {"n": args.n, "concurrency": args.concurrency, "runs": []}
    for r in range(args.rounds):
        for trap in (True, False):
            out["runs"].append({"trap": trap, **measure(args.n, args.concurrency, trap, f"r{r}{int(trap)}")})
    out["load_average"] = [round(x, 1) for x in os.getloadavg()]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
