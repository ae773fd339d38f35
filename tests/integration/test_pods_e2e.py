"""Pods end to end, what test_pods_on_workers.py does not cover: on `corral up`, a pod's node port is the
only one in the range, another pod waits for it and gets it once the first is deleted; with a server and
two real `corral worker` processes, a worker killed with kill -9 whose Always pod comes back on the other
worker and answers there.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import Cluster, free_port, wait_until
from tests.support import process_gone

pytestmark = pytest.mark.timeout(120)


def _answer(url: str) -> str | None:
    try:
        r = httpx.get(url, timeout=1)
    except httpx.HTTPError:
        return None
    return r.text if r.status_code == 200 else None


def _http_pod(name: str, **extra: Any) -> dict[str, Any]:
    """A host process serving HTTP on $PORT, ready once it answers (it says its pid: '$$' is written '$$$$',
    as in Kubernetes' $(VAR) expansion of a command)."""
    serve = f"echo pid=$$$$; exec {sys.executable} -m http.server --bind 127.0.0.1 $PORT"
    return {"name": name, "containers": [{
        "name": "web", "command": ["sh", "-c", serve], "ports": [{"name": "http", "containerPort": 8000}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1}}], **extra}


def _running_and_ready(c: Cluster, pod_id: str, timeout: float = 30) -> dict[str, Any]:
    return dict(wait_until(lambda: (p := c.get(f"/v1/pods/{pod_id}"))["state"] == "running" and p["ready"] and p,
                           timeout, what=f"pod {pod_id} running and ready"))


def test_a_deleted_pods_node_port_goes_to_the_pod_waiting_for_it(cluster: Cluster) -> None:
    port = free_port()
    cluster.up("--runtime", "process", "--node-port-range", f"{port}-{port}")
    r = cluster.client.post("/v1/pods", json=_http_pod("web"))
    assert r.status_code == 201, r.text
    pod = _running_and_ready(cluster, r.json()["id"])
    [published] = pod["ports"]
    assert (pod["address"], published["hostPort"], published["nodePort"]) == ("127.0.0.1", port, port)
    assert "Directory listing" in (_answer(f"http://127.0.0.1:{port}/") or "")
    pid = int(next(ln for ln in cluster.client.get(f"/v1/pods/{pod['id']}/logs").text.splitlines()
                   if ln.startswith("pid=")).split("=")[1])
    # The port is the pod's: a second pod that needs one waits, and says why.
    example = (Path(__file__).parents[2] / "examples" / "web-pod.yaml").read_bytes()
    r = cluster.client.post("/v1/pods", content=example, headers={"Content-Type": "application/yaml"})
    assert r.status_code == 201, r.text
    second = r.json()["id"]
    wait_until(lambda: "waiting for ports" in (cluster.get(f"/v1/pods/{second}")["reason"] or ""), 10,
               what="the second pod to wait for a port")
    assert cluster.client.delete(f"/v1/pods/{pod['id']}").status_code == 200
    cluster.wait_for(f"/v1/pods/{pod['id']}", {"terminated"}, timeout=20)
    wait_until(lambda: process_gone(pid), 10, what="the pod's process to end")
    # Its port went back: the second pod (examples/web-pod.yaml) has it now, and answers there.
    assert _running_and_ready(cluster, second)["ports"][0]["hostPort"] == port
    assert "Directory listing" in (_answer(f"http://127.0.0.1:{port}/") or "")


def test_a_killed_workers_always_pod_comes_back_on_the_other_worker(cluster: Cluster) -> None:
    lo = free_port()
    cluster.start_server("--node-ttl", "3", "--node-port-range", f"{lo}-{lo + 1}")
    workers = {name: cluster.add_worker(name, "--runtime", "process", "--advertise-address", "127.0.0.1")
               for name in ("w1", "w2")}
    r = cluster.client.post("/v1/pods", json=_http_pod("survivor", restartPolicy="Always"))
    assert r.status_code == 201, r.text
    pod = _running_and_ready(cluster, r.json()["id"])
    first_node, first_port = pod["node_name"], pod["ports"][0]["hostPort"]
    assert _answer(f"http://127.0.0.1:{first_port}/")
    pid = int(next(ln for ln in cluster.client.get(f"/v1/pods/{pod['id']}/logs").text.splitlines()
                   if ln.startswith("pid=")).split("=")[1])
    workers[first_node].kill9()
    # The machine is gone with its processes (a killed worker leaves its host processes running).
    os.kill(pid, signal.SIGKILL)
    moved = wait_until(lambda: (p := cluster.get(f"/v1/pods/{pod['id']}"))["node_name"] not in (None, first_node)
                       and p["state"] == "running" and p["ready"] and p, 40, what="the pod back on the other worker")
    assert moved["instance_id"] != pod["instance_id"]
    assert _answer(f"http://127.0.0.1:{moved['ports'][0]['hostPort']}/")

