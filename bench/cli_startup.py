"""What one `corral jobs ls` costs: CPU seconds (user + system) and wall time of the whole process, for this
tree and an older one (a git ref, exported with `git archive`), run alternately against one `corral up`.

    .venv/bin/python -m bench.cli_startup --before HEAD~1 --rounds 5 [--server URL]

Prints one JSON object: each side's runs and medians, and the load average before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import corral_up

ROOT = Path(__file__).resolve().parents[1]


def one_run(url: str, pythonpath: str | None) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one `corral jobs ls` process."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["CORRAL_SERVER"] = url
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "corral", "jobs", "ls"], env=env, check=True, capture_output=True)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", default="HEAD~1", help="the git ref to compare with (default HEAD~1)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--server", help="an existing server (its token as the CLI finds it) instead of a new corral up")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as old:
        tar = subprocess.run(["git", "-C", str(ROOT), "archive", args.before, "src"], check=True,
                             capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", old], input=tar, check=True)
        sides = {f"before ({args.before})": str(Path(old) / "src"), "this tree": None}
        runs: dict[str, list[tuple[float, float]]] = {k: [] for k in sides}
        load = [os.getloadavg()[0]]
        with contextlib.ExitStack() as stack:
            url = args.server or stack.enter_context(corral_up("--runtime", "process", "--grpc-port", "0"))[0]
            for _ in range(args.rounds):  # A, B, A, B: the machine's noise falls on both alike
                for name, path in sides.items():
                    runs[name].append(one_run(url, path))
        load.append(os.getloadavg()[0])
    print(json.dumps({"load_average": load, **{name: {
        "cpu_s": [round(c, 3) for c, _ in r], "wall_s": [round(w, 3) for _, w in r],
        "median_cpu_s": round(statistics.median(c for c, _ in r), 3),
        "median_wall_s": round(statistics.median(w for _, w in r), 3)} for name, r in runs.items()}}, indent=1))


if __name__ == "__main__":
    main()
