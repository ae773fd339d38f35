"""A NodePort service end to end with real processes: a server, a worker forwarding the node port, and two
ready pods on a stand-in node (tests/integration/test_pods.py's FakeNode: it speaks the agent protocol),
whose published host ports are two real HTTP servers. HTTP keeps being answered while one backend is
killed; a pod that is no longer ready leaves the endpoints at once and gets no new connection within 2 s;
a deleted service's port closes. tests/integration/test_pods_services.py runs real pods."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.harness import Cluster, wait_until
from tests.integration.test_pods import FakeNode, _assigned, _status
from tests.support import Backends, http_backends


@pytest.fixture
def backends() -> Iterator[Backends]:
    with http_backends("a", "b", host="0.0.0.0") as procs:
        yield procs


def _pod(c: Cluster, name: str, host_port: int) -> dict[str, Any]:
    """A pod labelled app=fw for the stand-in node, its container port 8080 published on ``host_port``."""
    r = c.client.post("/v1/pods", json={"name": name, "labels": {"app": "fw"}, "node_selector": {"t": "fw"},
                                        "containers": [{"name": "app", "command": ["serve"], "ports": [
                                            {"containerPort": 8080, "hostPort": host_port}]}]})
    assert r.status_code == 201, r.text
    return dict(r.json())


def _get(port: int) -> str:
    r = httpx.get(f"http://127.0.0.1:{port}/", headers={"Connection": "close"}, timeout=5)
    r.raise_for_status()
    return r.text


def _refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_nodeport_keeps_answering_while_a_backend_dies(cluster: Cluster,
                                                        backends: Backends) -> None:
    c = cluster
    c.start_server("--node-ttl", "60")
    c.add_worker("fw", "--runtime", "process")  # the forwarder
    node = FakeNode(c, "pods-fw", {"t": "fw"}, address="127.0.0.1")  # where the pods run
    (_, a), (pb, b) = backends["a"], backends["b"]
    pods = {"a": _pod(c, "fw-a", a), "b": _pod(c, "fw-b", b)}
    assigned = {k: _assigned(node, p["id"]) for k, p in pods.items()}

    def report(ready_b: bool = True) -> None:
        node.sync([_status(assigned["a"]), _status(assigned["b"], ready=ready_b)])

    report()
    r = c.client.post("/v1/services", json={"name": "fw", "type": "NodePort", "selector": {"app": "fw"},
                                            "ports": [{"port": 80, "targetPort": 8080}]})
    assert r.status_code == 201, r.text
    svc: dict[str, Any] = r.json()
    node_port = svc["ports"][0]["nodePort"]
    eps = c.get(f"/v1/services/{svc['id']}/endpoints")["endpoints"]
    assert sorted((e["pod_id"], e["address"], e["port"]) for e in eps) == sorted(
        [(pods["a"]["id"], "127.0.0.1", a), (pods["b"]["id"], "127.0.0.1", b)])

    wait_until(lambda: not _refused(node_port), 10, what="the worker to open the node port")
    wait_until(lambda: {_get(node_port) for _ in range(6)} == {"a", "b"}, 5, what="both pods to answer")

    # pod-b is no longer ready (its process still answers): the endpoints drop it at once, and the
    # worker sends it no new connection within 2 s.
    start = time.monotonic()
    report(ready_b=False)
    assert [e["pod_id"] for e in c.get(f"/v1/services/{svc['id']}/endpoints")["endpoints"]] == [pods["a"]["id"]]
    # Six connections in a row to pod-a: with two endpoints taken in turn, the check that sees that began
    # (within one request) after the worker dropped pod-b.
    began: list[float] = []

    def only_a() -> bool:
        began.append(time.monotonic())
        return {_get(node_port) for _ in range(6)} == {"a"}
    wait_until(only_a, 5, what="the worker to drop pod-b")
    assert began[-1] - start < 2.0, began[-1] - start
    # Ready again: back in turn.
    report()
    wait_until(lambda: "b" in {_get(node_port) for _ in range(4)}, 3, what="the worker to use pod-b again")

    # pod-b's process dies; until its node says so, each connection to it is retried on pod-a: every
    # request is answered.
    os.kill(pb.pid, signal.SIGKILL)
    pb.wait()
    assert [_get(node_port) for _ in range(20)] == ["a"] * 20

    assert c.client.delete(f"/v1/services/{svc['id']}").status_code == 204
    wait_until(lambda: _refused(node_port), 5, what="the node port to close")
