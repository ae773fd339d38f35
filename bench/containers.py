"""Container overhead: 40 `echo hi` containers at a parallelism of 8, directly and through Corral.

Direct: `docker run --rm corral-test/busybox:latest echo hi`, 40 times from a pool of 8 threads (8 CLI
processes at a time). Corral: a `corral up --runtime docker` standalone (only Docker, its local node) and
40 one-task jobs submitted in one batch, each asking for capacity/8 CPUs so that exactly 8 fit on the node
at a time. Both: wall time from the first submit to the last completion. The sides alternate, each run on
a fresh Corral; the ratio is Corral's median over the direct median (the issue's target: at most 1.15).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bench.common import corral_up, count_finished, ts

IMAGE = "corral-test/busybox:latest"


# The same image, applets and label as the tests' busybox_image fixture (tests/conftest.py), so that neither
# rebuilds what the other built.
LABEL = "corral.test.applets"
APPLETS = ("sh", "echo", "sleep", "cat", "env", "ls", "pwd", "true", "false",
           "printf", "id", "head", "tail", "wc", "seq", "yes")


def ensure_image() -> None:
    """Build the test image as tests/conftest.py does (docker import of /bin/busybox) when it is missing."""
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode == 0:
        return
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        raise SystemExit(f"{IMAGE} is missing and there is no /bin/busybox to build it from")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        (root / "bin").mkdir(parents=True)
        (root / "tmp").mkdir()
        (root / "tmp").chmod(0o1777)
        shutil.copy2(busybox, root / "bin" / "busybox")
        for applet in APPLETS:
            (root / "bin" / applet).symlink_to("busybox")
        tar = Path(tmp) / "rootfs.tar"
        with tarfile.open(tar, "w") as t:
            t.add(root, arcname=".")
        subprocess.run(["docker", "import", "--change", f'LABEL {LABEL}="{" ".join(APPLETS)}"', str(tar), IMAGE],
                       check=True, capture_output=True)


def run_direct(n: int, parallel: int) -> dict[str, float]:
    def one(_: int) -> float:
        t = time.monotonic()
        r = subprocess.run(["docker", "run", "--rm", IMAGE, "echo", "hi"], capture_output=True)
        if r.returncode != 0 or r.stdout != b"hi\n":
            raise RuntimeError(f"docker run failed: {r.stderr.decode()}")
        return time.monotonic() - t

    t0 = time.monotonic()
    with ThreadPoolExecutor(parallel) as pool:
        each = list(pool.map(one, range(n)))
    elapsed = time.monotonic() - t0
    return {"elapsed_s": round(elapsed, 3), "containers_per_s": round(n / elapsed, 2),
            "per_container_ms_p50": round(statistics.median(each) * 1000, 1)}


def run_corral(n: int, parallel: int) -> dict[str, object]:
    with corral_up("--runtime", "docker") as (url, _), httpx.Client(base_url=url, timeout=60) as c:
        node = c.get("/v1/nodes").json()["items"][0]
        cpu = node["capacity"]["cpu"] / parallel
        task = {"image": IMAGE, "command": ["echo", "hi"], "resources": {"cpu": cpu}}
        t0, wall0 = time.monotonic(), time.time()
        r = c.post("/v1/jobs/batch", json={"jobs": [{"name": f"c{i}", "tasks": [task]} for i in range(n)]})
        r.raise_for_status()
        ids = [j["id"] for j in r.json()["items"]]
        while count_finished(c) < n:
            time.sleep(0.1)  # cheap, rare polls: the server shares two cores with dockerd
        observed = time.monotonic() - t0
        jobs = [c.get(f"/v1/jobs/{i}").json() for i in ids]
    failed = sum(1 for j in jobs if j["state"] != "completed")
    # Submit -> last completion: the last finished_at (stamped by the worker on this machine's clock when the
    # container had exited and was removed), not when a poll noticed it.
    elapsed = max(ts(j["finished_at"]) for j in jobs if j["finished_at"]) - wall0
    # Phases per container, from the server's timestamps: created -> scheduled (placement), scheduled ->
    # started (the worker creates and starts the container), started -> finished (runs, exits, is reported).
    execs = [(j, j["tasks"][0]["executions"][-1]) for j in jobs if j["tasks"][0]["executions"]]
    phases = {"queued_ms": [(ts(e["scheduled_at"]) - ts(j["created_at"])) * 1000 for j, e in execs],
              "start_ms": [(ts(e["started_at"]) - ts(e["scheduled_at"])) * 1000 for _, e in execs
                           if e["started_at"]],
              "run_ms": [(ts(e["finished_at"]) - ts(e["started_at"])) * 1000 for _, e in execs
                         if e["started_at"] and e["finished_at"]]}
    # The most containers ever placed at once (scheduled -> finished: holding their CPU on the node), and the
    # most ever between started and finished.
    def peak(start: str) -> int:
        edges = sorted([(ts(e[start]), 1) for _, e in execs if e[start] and e["finished_at"]]
                       + [(ts(e["finished_at"]), -1) for _, e in execs if e[start] and e["finished_at"]])
        now = top = 0
        for _, d in edges:
            now += d
            top = max(top, now)
        return top

    return {"elapsed_s": round(elapsed, 3), "observed_by_polling_s": round(observed, 3),
            "containers_per_s": round(n / elapsed, 2), "failed": failed,
            "cpu_per_task": cpu, "node_cpus": node["capacity"]["cpu"],
            "peak_placed": peak("scheduled_at"), "peak_running": peak("started_at"),
            "phases_p50_ms": {k: round(statistics.median(v), 1) for k, v in phases.items() if v}}


def run(n: int = 40, parallel: int = 8, rounds: int = 3) -> dict[str, object]:
    ensure_image()
    subprocess.run(["docker", "run", "--rm", IMAGE, "true"], check=True, capture_output=True)  # warm up
    direct: list[dict[str, float]] = []
    corral: list[dict[str, object]] = []
    for _ in range(rounds):
        direct.append(run_direct(n, parallel))
        corral.append(run_corral(n, parallel))
    d = statistics.median(r["elapsed_s"] for r in direct)
    k = statistics.median(float(r["elapsed_s"]) for r in corral)  # type: ignore[arg-type]
    return {"containers": n, "parallel": parallel, "direct_runs": direct, "corral_runs": corral,
            "direct_median_s": round(d, 3), "corral_median_s": round(k, 3), "ratio_corral_over_direct": round(k / d, 3),
            "target_ratio": 1.15}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=40, help="containers per run (default 40)")
    ap.add_argument("--parallel", type=int, default=8, help="containers at a time (default 8)")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each side, alternating (default 3)")
    args = ap.parse_args()
    print(json.dumps(run(args.n, args.parallel, args.rounds), indent=2))


if __name__ == "__main__":
    main()
