"""Endpoint propagation: a pod killed → gone from its service's endpoints. Target: p99 under 2 s.

A `corral up --runtime process` standalone; N host-process pods (Python's http.server on $PORT, a readiness
probe every second, restartPolicy Never), all selected by one service. Once all N are endpoints, each pod's
process is killed (SIGKILL) in turn and `GET /v1/services/{id}/endpoints` is read every 20 ms until the pod
is no longer listed: the time from the kill to that read is one sample. It covers the worker noticing the
exit, its next sync with the coordinator, and the endpoints' read; the worker's forwarders follow within
about a second more (they read their services every second).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

import httpx

from bench.common import corral_up, summary


def _pod(i: int) -> dict[str, object]:
    return {"name": f"ep-{i}", "labels": {"app": "ep"}, "restartPolicy": "Never",
            "containers": [{"name": "web", "command": [sys.executable, "-m", "http.server", "$(PORT)"],
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                            "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 1}}]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=20, help="pods (and kills) [default: 20]")
    args = ap.parse_args()
    with corral_up("--runtime", "process", "--node-port-range", "32100-32300") as (url, _), \
            httpx.Client(base_url=url, timeout=30) as c:
        r = c.post("/v1/services", json={"name": "ep", "selector": {"app": "ep"},
                                         "ports": [{"port": 80, "targetPort": "http"}]})
        r.raise_for_status()
        eps_path = f"/v1/services/{r.json()['id']}/endpoints"
        pods = [c.post("/v1/pods", json=_pod(i)).raise_for_status().json()["id"] for i in range(args.n)]
        deadline = time.monotonic() + 120
        while len(c.get(eps_path).json()["endpoints"]) < args.n:
            if time.monotonic() > deadline:
                raise SystemExit("the pods did not all become ready within 120 s")
            time.sleep(0.2)
        print(f"{args.n} pods ready; killing them one at a time", file=sys.stderr)
        samples = []
        for pod_id in pods:
            pid = int(c.get(f"/v1/pods/{pod_id}").json()["containers"][0]["container_id"])
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            while any(e["pod_id"] == pod_id for e in c.get(eps_path).json()["endpoints"]):
                if time.monotonic() - killed > 30:
                    raise SystemExit(f"pod {pod_id} still an endpoint 30 s after its process was killed")
                time.sleep(0.02)
            samples.append(time.monotonic() - killed)
    print(json.dumps({"endpoint_propagation_s": summary(samples, 3), "target_p99_s": 2.0}))


if __name__ == "__main__":
    main()
