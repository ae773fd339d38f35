"""Pod start: 50 one-container pods on docker through Corral, next to `docker run -d` of the same image at the
same parallelism.

Direct: `docker run -d corral-test/busybox:latest sleep 3600`, 50 times from a pool of 10 threads; each
container's time is the call's (`docker run -d` returns once the container has started). Corral: a
`corral up --runtime docker` standalone and 50 `POST /v1/pods` from a pool of 10 threads; each pod's time is
from just before its POST to its container's `started_at` (stamped by the worker on this machine's clock when
Docker had started it; a pod without a readiness probe is ready once running); each thread waits for its pod
to run and be ready before it creates the next, so that at most 10 start at once on either side. The sides
alternate; the ratios are Corral's over the direct side's: p50, p99 and the wall time of all 50. The issue's
target: at most 1.2.

How a client waits for its pod (``--client``): ``wait`` (the default) asks ``GET /v1/pods/{id}?wait=30``,
which answers once the pod is running and ready, so each pod costs the server about one read while it
starts; ``poll`` reads the pod every 100 ms (the script's only client before 2026-12-01 16:30 UTC: ten
clients polling shared the two cores with the server and ``dockerd``). Against a server without ``?wait=``,
``wait`` degrades to ``poll``. ``--base-src DIR`` adds, in every round, a Corral side run from another
checkout's ``src`` (``PYTHONPATH``): the old code, side by side and interleaved with the new.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx

from bench.common import corral_up, summary, ts
from bench.containers import IMAGE, ensure_image

LABEL = "corral.bench.pods"


def run_direct(n: int, parallel: int) -> dict[str, object]:
    tag = uuid.uuid4().hex[:8]

    def one(i: int) -> float:
        t = time.monotonic()
        r = subprocess.run(["docker", "run", "-d", "--label", f"{LABEL}={tag}", IMAGE, "sleep", "3600"],
                           capture_output=True)
        if r.returncode != 0:
            raise RuntimeError(f"docker run failed: {r.stderr.decode()}")
        return time.monotonic() - t

    t0 = time.monotonic()
    try:
        with ThreadPoolExecutor(parallel) as pool:
            each = list(pool.map(one, range(n)))
        elapsed = time.monotonic() - t0
    finally:
        ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={LABEL}={tag}"], capture_output=True,
                             text=True).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
    return {"elapsed_s": round(elapsed, 3), "per_pod_s": summary(each, 3)}


def run_corral(n: int, parallel: int, client: str = "wait", src: str | None = None) -> dict[str, object]:
    """``src``: run the server from this checkout's ``src`` instead (PYTHONPATH)."""
    env = os.environ.get("PYTHONPATH")
    if src is not None:
        os.environ["PYTHONPATH"] = os.path.abspath(src)
    try:
        with corral_up("--runtime", "docker") as (url, _):
            if src is not None:  # the server has started: this process's own environment as it was
                _restore(env)
            return _corral_pods(url, n, parallel, client)
    finally:
        _restore(env)


def _restore(env: str | None) -> None:
    if env is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = env


def _corral_pods(url: str, n: int, parallel: int, client: str) -> dict[str, object]:
    with httpx.Client(base_url=url, timeout=60) as c:
        ids: list[str] = []
        placed: list[float] = []  # POST -> scheduled_at (the placement pass)
        started: list[float] = []  # scheduled_at -> started_at (the node's sync and the Docker calls)
        seen: list[float] = []  # started_at -> the client sees it running and ready (the report, the polling)

        def one(i: int) -> float:
            """Create a pod and wait until it runs and is ready (as `docker run -d` waits for the start), so
            that at most ``parallel`` pods are starting at once, as on the direct side."""
            spec = {"name": f"p{i}", "restartPolicy": "Always",
                    "containers": [{"name": "app", "image": IMAGE, "command": ["sleep", "3600"],
                                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}
            t = time.time()
            r = c.post("/v1/pods", json=spec)
            r.raise_for_status()
            pod_id = r.json()["id"]
            ids.append(pod_id)
            deadline = time.monotonic() + 120
            params = {"wait": 30} if client == "wait" else {}
            while True:
                pod = c.get(f"/v1/pods/{pod_id}", params=params).json()
                if pod["state"] == "running" and pod["ready"]:
                    at = ts(pod["containers"][0]["started_at"])
                    placed.append(ts(pod["scheduled_at"]) - t)
                    started.append(at - ts(pod["scheduled_at"]))
                    seen.append(time.time() - at)
                    return at - t
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pod {pod_id} did not start within 2 minutes: {pod}")
                time.sleep(0.1)  # a light client: its polling shares the two cores with the server

        t0 = time.monotonic()
        with ThreadPoolExecutor(parallel) as pool:
            each = list(pool.map(one, range(n)))
        elapsed = time.monotonic() - t0
        for pid in ids:
            c.delete(f"/v1/pods/{pid}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pods = c.get("/v1/pods", params={"limit": 1000}).json()["items"]
            if all(p["state"] not in ("pending", "scheduled", "running", "terminating", "unknown") for p in pods):
                break
            time.sleep(0.2)
    return {"elapsed_s": round(elapsed, 3), "per_pod_s": summary(each, 3),
            "phases_p50_s": {"placed": summary(placed, 3)["p50"], "started": summary(started, 3)["p50"],
                             "seen": summary(seen, 3)["p50"]}}


def run(n: int = 50, parallel: int = 10, rounds: int = 2, client: str = "wait", base_src: str | None = None
        ) -> dict[str, object]:
    load_before = os.getloadavg()
    ensure_image()
    subprocess.run(["docker", "run", "--rm", IMAGE, "true"], check=True, capture_output=True)  # warm up
    direct, corral, base = [], [], []
    for _ in range(rounds):
        direct.append(run_direct(n, parallel))
        corral.append(run_corral(n, parallel, client))
        if base_src is not None:
            base.append(run_corral(n, parallel, client, base_src))

    def best(rs: list[dict[str, object]], key: str) -> float:
        return min(float(r["per_pod_s"][key]) for r in rs)  # type: ignore[index]

    def ratios(rs: list[dict[str, object]]) -> dict[str, float]:
        return {"ratio_p50": round(best(rs, "p50") / best(direct, "p50"), 2),
                "ratio_p99": round(best(rs, "p99") / best(direct, "p99"), 2),
                "ratio_wall": round(min(float(r["elapsed_s"]) for r in rs)  # type: ignore[arg-type]
                                    / min(float(r["elapsed_s"]) for r in direct), 2)}  # type: ignore[arg-type]

    out: dict[str, object] = {"benchmark": "pod start", "pods": n, "parallel": parallel, "rounds": rounds,
                              "client": client, "load_average_before": load_before,
                              "direct_docker_run_d": direct, "corral_pods": corral, **ratios(corral)}
    if base_src is not None:
        out.update(base_src=base_src, base_corral_pods=base, base=ratios(base))
    out["load_average_after"] = os.getloadavg()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pods", type=int, default=50)
    p.add_argument("--parallel", type=int, default=10)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--client", choices=("wait", "poll"), default="wait",
                   help="how each client waits for its pod: GET ?wait= (default) or a read every 100 ms")
    p.add_argument("--base-src", help="also run, in each round, a Corral from this checkout's src (the old code)")
    a = p.parse_args()
    print(json.dumps(run(a.pods, a.parallel, a.rounds, a.client, a.base_src), indent=2))


if __name__ == "__main__":
    main()
