"""Run every benchmark in sequence and print one JSON document.

throughput (Corral and, side by side, Celery with Redis and two prefork workers, n=5000), container overhead,
submit -> running latency, coordinator memory. `make bench` runs this file; so does
`python -m bench.run_all`. Progress goes to stderr, the figures to stdout. Takes about five minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file (bench/run_all.py): make the bench package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _docker_version() -> str | None:
    try:
        r = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.decode().strip() or None


def _celery_missing() -> str | None:
    """Why the Celery side cannot run here, or None."""
    import importlib.util
    import shutil
    if importlib.util.find_spec("celery") is None or importlib.util.find_spec("redis") is None:
        return "celery or redis is not installed: pip install -e '.[bench]'"
    if shutil.which("redis-server") is None:
        return "no redis-server on PATH (Debian: apt-get install redis-server)"
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--throughput-n", type=int, default=5000, help="tasks for the throughput benchmark (5000)")
    ap.add_argument("--no-celery", action="store_true", help="skip the Celery side of the throughput benchmark")
    ap.add_argument("--only", action="append", choices=["throughput", "containers", "latency", "memory"],
                    help="run only these benchmarks (repeatable)")
    args = ap.parse_args()

    import corral
    from bench import containers, latency, memory, throughput

    def run_throughput() -> dict[str, Any]:
        out: dict[str, Any] = {"corral": throughput.run_corral(args.throughput_n, 250)}
        if args.no_celery:
            return out
        missing = _celery_missing()
        if missing:
            print(f"bench: SKIPPING the Celery side: {missing}", file=sys.stderr, flush=True)
            out["celery"] = {"skipped": missing}
            return out
        from bench.celery_side import run_celery
        out["celery"] = run_celery(args.throughput_n)
        out["corral_over_celery"] = round(out["corral"]["tasks_per_s"] / out["celery"]["tasks_per_s"], 2)
        return out

    benches: dict[str, Callable[[], dict[str, Any]]] = {
        "throughput": run_throughput, "containers": containers.run, "latency": latency.run, "memory": memory.run}
    doc: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "host": platform.node(),
        "nproc": os.cpu_count(), "python": platform.python_version(),
        "corral": getattr(corral, "__version__", None), "docker": _docker_version(), "results": {}}
    for name, fn in benches.items():
        if args.only and name not in args.only:
            continue
        print(f"bench: {name} (load {_load()})", file=sys.stderr, flush=True)
        t = time.monotonic()
        load_before = _load()
        result = fn()
        doc["results"][name] = {**result, "load_before": load_before, "load_after": _load(),
                                "bench_s": round(time.monotonic() - t, 1)}
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
