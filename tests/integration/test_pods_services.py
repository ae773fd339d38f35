"""A NodePort service over real pods: two `corral worker` processes (each with an address of its own on the
loopback network, as two machines would have), two busybox httpd pods on a real Docker Engine, and HTTP
through the service's node port on both nodes while one pod's container is killed: every request is
answered, and the killed pod leaves the endpoints within 2 s."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from corral.runtime.pods_docker import NODE_LABEL
from tests.harness import Cluster, wait_until
from tests.support import remove_containers

pytestmark = pytest.mark.timeout(150)
ADDRESSES = ("127.0.0.2", "127.0.0.3")


@pytest.fixture
def two_nodes(tmp_path: Path, docker_client: docker.DockerClient, busybox_image: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    c.start_server("--node-port-range", "30700-30720")
    for i, address in enumerate(ADDRESSES):
        c.add_worker(f"svc-w{i}", "--runtime", "docker", "--advertise-address", address)
    yield c
    nodes = [n["id"] for n in c.nodes()]
    c.close()
    for n in nodes:
        remove_containers(docker_client, f"{NODE_LABEL}={n}")


def _web(name: str, image: str) -> dict[str, Any]:
    return {"name": name, "labels": {"app": "web"}, "restartPolicy": "Always", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "web", "image": image, "env": {"WHO": name},
                            "command": ["sh", "-c", "echo $WHO > /tmp/index.html && exec httpd -f -p 8080 -h /tmp"],
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "readinessProbe": {"httpGet": {"path": "/index.html", "port": "http"},
                                               "periodSeconds": 1, "failureThreshold": 1}}]}


def _get(address: str, port: int) -> str:
    r = httpx.get(f"http://{address}:{port}/index.html", headers={"Connection": "close"}, timeout=5)
    r.raise_for_status()
    return r.text.strip()


def _answers(address: str, port: int, n: int) -> set[str]:
    """Who answers ``n`` requests, while the node's forwarder may still be opening the port."""
    out = set()
    for _ in range(n):
        try:
            out.add(_get(address, port))
        except httpx.HTTPError as e:
            out.add(repr(e))
    return out


def test_nodeport_answers_on_every_node_while_a_pod_is_killed(
        two_nodes: Cluster, busybox_image: str, docker_client: docker.DockerClient) -> None:
    c = two_nodes
    pods = {}
    for name in ("web-a", "web-b"):
        r = c.client.post("/v1/pods", json=_web(name, busybox_image))
        assert r.status_code == 201, r.text
        pods[name] = r.json()["id"]
    r = c.client.post("/v1/services", json={"name": "web", "type": "NodePort", "selector": {"app": "web"},
                                            "ports": [{"name": "http", "port": 80, "targetPort": "http"}]})
    assert r.status_code == 201, r.text
    svc = r.json()
    node_port = svc["ports"][0]["nodePort"]
    eps_path = f"/v1/services/{svc['id']}/endpoints"
    eps = wait_until(lambda: len(c.get(eps_path)["endpoints"]) == 2 and c.get(eps_path)["endpoints"], 60,
                     interval=0.2, what="both pods ready")
    assert {e["address"] for e in eps} == set(ADDRESSES)  # spread: one pod on each node
    # Every node's port reaches both pods, in turn.
    for address in ADDRESSES:
        wait_until(lambda a=address: _answers(a, node_port, 6) == {"web-a", "web-b"}, 10,
                   what=f"both pods through {address}:{node_port}")

    # Requests flow through both nodes' ports while web-b's container is killed.
    answers: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def load() -> None:
        i = 0
        while not stop.is_set():
            try:
                answers.append(_get(ADDRESSES[i % 2], node_port))
            except httpx.HTTPError as e:
                failures.append(repr(e))
            i += 1

    t = threading.Thread(target=load)
    t.start()
    try:
        wait_until(lambda: len(answers) >= 10, 10, what="requests before the kill")
        cid = c.get(f"/v1/pods/{pods['web-b']}")["containers"][0]["container_id"]
        killed = time.monotonic()
        docker_client.containers.get(cid).kill()
        wait_until(lambda: [e["pod_id"] for e in c.get(eps_path)["endpoints"]] == [pods["web-a"]], 5,
                   interval=0.05, what="web-b to leave the endpoints")
        gone_after = time.monotonic() - killed
        seen_after = len(answers)
        wait_until(lambda: len(answers) >= seen_after + 20, 10, what="requests after the kill")
    finally:
        stop.set()
        t.join(10)
    assert not failures, failures[:5]
    assert gone_after < 2.0, gone_after
    assert set(answers[seen_after:]) == {"web-a"}
    print(f"web-b left the endpoints {gone_after:.2f}s after its container was killed; "
          f"{len(answers)} requests answered, none failed")


def test_nodeport_under_corral_up(tmp_path: Path, docker_client: docker.DockerClient, busybox_image: str) -> None:
    """The standalone wiring: the local worker reads its services in-process and opens the port on 127.0.0.1."""
    c = Cluster(tmp_path)
    try:
        c.up("--node-port-range", "30730-30740", "--runtime", "docker")
        r = c.client.post("/v1/pods", json=_web("solo", busybox_image))
        assert r.status_code == 201, r.text
        r = c.client.post("/v1/services", content="name: solo\ntype: NodePort\nselector: {app: web}\n"
                          "ports: [{port: 80, targetPort: 8080}]\n", headers={"Content-Type": "application/yaml"})
        assert r.status_code == 201, r.text
        port = r.json()["ports"][0]["nodePort"]
        assert 30730 <= port <= 30740
        wait_until(lambda: c.get(f"/v1/services/{r.json()['id']}/endpoints")["endpoints"], 60, interval=0.2,
                   what="the pod ready")

        def answer() -> str | None:
            try:
                return _get("127.0.0.1", port)
            except httpx.HTTPError:
                return None
        assert wait_until(answer, 10, what="the node port to answer") == "solo"
    finally:
        nodes = [n["id"] for n in c.nodes()]
        c.close()
        for n in nodes:
            remove_containers(docker_client, f"{NODE_LABEL}={n}")
