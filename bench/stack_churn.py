"""Stack churn: create and delete N stacks through the Stacks API, at most A alive at once.

A real `corral up --runtime docker` (no token) and A client threads, each looping: `POST /stacks` (a busybox
container with a port published on a node port), wait until the stack is `running`, `DELETE` it, until N
stacks were made. Then, once the coordinator has stopped and purged what was deleted: no node
port may still be held (`/stats`), no pod of origin stacks may be left, and no container labelled with a
stack's id may be left on the Docker Engine. Prints one JSON document: wall time, time per stack, create
(answer) and create-to-running latencies, and the leak counts.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import docker
import httpx
import yaml

from bench.common import corral_up, summary
from bench.containers import IMAGE, ensure_image


def body() -> dict[str, object]:
    spec = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "churn"}, "spec": {"containers": [{
        "name": "web", "image": IMAGE, "command": ["sleep", "3600"], "ports": [{"containerPort": 8080}],
        "resources": {"limits": {"cpu": "10m", "memory": "16Mi"}}}]}}
    return {"pod_spec": yaml.safe_dump(spec), "target_port": [{"container_port": 8080, "protocol": "TCP"}]}


def run(n: int, alive: int) -> dict[str, object]:
    ensure_image()
    client_docker = docker.from_env()
    made: list[str] = []
    answer: list[float] = []
    to_running: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    with corral_up("--runtime", "docker", "--node-port-range", "30000-30999") as (url, _):
        payload = body()

        def worker() -> None:
            with httpx.Client(base_url=url, timeout=60) as c:
                while True:
                    with lock:
                        if len(made) >= n:
                            return
                        made.append("")
                    t0 = time.perf_counter()
                    r = c.post("/stacks", json=payload)
                    if r.status_code != 201:
                        with lock:
                            errors.append(f"{r.status_code} {r.text[:200]}")
                        continue
                    t1 = time.perf_counter()
                    sid = r.json()["stack_id"]
                    while c.get(f"/stacks/{sid}/status").json().get("status") not in ("running", "failed"):
                        time.sleep(0.05)
                    t2 = time.perf_counter()
                    c.delete(f"/stacks/{sid}")
                    with lock:
                        answer.append(t1 - t0)
                        to_running.append(t2 - t0)

        start = time.perf_counter()
        with ThreadPoolExecutor(alive) as pool:
            for f in [pool.submit(worker) for _ in range(alive)]:
                f.result()
        wall = time.perf_counter() - start
        # What was deleted is stopped and purged in the background: wait for it, then count what is left.
        with httpx.Client(base_url=url, timeout=30) as c:
            deadline = time.monotonic() + 120
            while True:
                ports = c.get("/stats").json()["used_node_ports"]
                pods = [p for p in c.get("/v1/pods", params={"limit": 1000}).json()["items"]
                        if str(p.get("id", "")).startswith("stack-")]
                containers = [x for x in client_docker.api.containers(all=True, filters={"label": "corral.pod"})
                              if str(x["Labels"].get("corral.pod", "")).startswith("stack-")]
                if (not ports and not pods and not containers) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            settled = time.perf_counter() - start - wall
    return {"stacks": n, "alive_at_once": alive, "failed_creates": len(errors), "errors": errors[:5],
            "wall_s": round(wall, 2), "per_stack_ms": round(wall / n * 1000, 1),
            "create_answer_s": summary(answer, 3), "create_to_running_s": summary(to_running, 3),
            "cleanup_after_last_delete_s": round(settled, 2), "leaked_node_ports": ports,
            "leaked_pods": len(pods), "leaked_containers": len(containers)}


def refused(n: int) -> dict[str, object]:
    """``--refused N``: the node drained, N creates one after another, each refused (503, no node can take it):
    how long the answer takes (the create waits for the placement pass's verdict, not longer)."""
    answer: list[float] = []
    statuses: dict[int, int] = {}
    with corral_up("--runtime", "docker", "--grpc-port", "0") as (url, _), httpx.Client(base_url=url, timeout=60) as c:
        node = c.get("/v1/nodes").json()["items"][0]["id"]
        c.post(f"/v1/nodes/{node}/drain", json={}).raise_for_status()
        payload = body()
        for _ in range(n):
            t0 = time.perf_counter()
            r = c.post("/stacks", json=payload)
            answer.append(time.perf_counter() - t0)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
    return {"refused_creates": n, "statuses": statuses, "create_answer_s": summary(answer, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", type=int, default=200, help="stacks to create and delete")
    ap.add_argument("--alive", type=int, default=50, help="at most this many at once")
    ap.add_argument("--refused", type=int, metavar="N", help="instead: N creates on a drained node (each a 503)")
    args = ap.parse_args()
    print(json.dumps(refused(args.refused) if args.refused else run(args.n, args.alive), indent=2))


if __name__ == "__main__":
    main()
