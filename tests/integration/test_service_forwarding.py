"""A NodePort service end to end with real processes: a server, a worker forwarding the node port, two
HTTP backends standing for two ready pods on that worker. HTTP keeps being answered while one backend is
killed; once its pod is no longer ready the endpoints drop it within 2 s; a deleted service's port closes.

The pods' rows are written straight into the store here (as the pods' coordinator would after their node
reported them), so that this checks the services' side alone: endpoints, the agent's services route, the
worker's forwarding. tests/integration/test_pods_services.py runs real pods."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from corral.store import schema
from corral.store.sql import Store
from tests.harness import Cluster, wait_until

BACKEND = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = sys.argv[1].encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer.request_queue_size = 128
s = http.server.ThreadingHTTPServer(("0.0.0.0", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""


@pytest.fixture
def backends() -> Iterator[dict[str, tuple[subprocess.Popen[str], int]]]:
    procs = {}
    for name in ("a", "b"):
        p = subprocess.Popen([sys.executable, "-c", BACKEND, name], stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None
        procs[name] = (p, int(p.stdout.readline()))
    yield procs
    for p, _ in procs.values():
        p.kill()
        p.wait()


def _pod(store: Store, pod_id: str, node_id: str, port: int) -> None:
    """A running, ready pod labelled app=fw whose container port 8080 is published on ``port``."""
    with store.transaction() as tx:
        tx.c.execute(sa.insert(schema.pods).values(id=pod_id, namespace="default", labels={"app": "fw"},
                                                   state="running", ready=True, node_id=node_id,
                                                   spec={"containers": [{"name": "app"}]}))
        tx.hold_node_ports([{"node_id": node_id, "port": port, "protocol": "TCP", "pod_id": pod_id,
                             "container": "app", "container_port": 8080, "kind": "host"}])


def _set_ready(store: Store, pod_id: str, ready: bool) -> None:
    with store.transaction() as tx:
        tx.c.execute(sa.update(schema.pods).where(schema.pods.c.id == pod_id).values(ready=ready))


def _get(port: int) -> str:
    r = httpx.get(f"http://127.0.0.1:{port}/", headers={"Connection": "close"}, timeout=5)
    r.raise_for_status()
    return r.text


def _refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_nodeport_keeps_answering_while_a_backend_dies(cluster: Cluster,
                                                        backends: dict[str, tuple[subprocess.Popen[str], int]]) -> None:
    c = cluster
    c.start_server()
    c.add_worker("fw", "--runtime", "process")
    node_id = c.nodes()[0]["id"]
    store = Store(f"sqlite:///{c.tmp / 'server.db'}")
    try:
        (_, a), (pb, b) = backends["a"], backends["b"]
        _pod(store, "pod-a", node_id, a)
        _pod(store, "pod-b", node_id, b)
        r = c.client.post("/v1/services", json={"name": "fw", "type": "NodePort", "selector": {"app": "fw"},
                                                "ports": [{"port": 80, "targetPort": 8080}]})
        assert r.status_code == 201, r.text
        svc: dict[str, Any] = r.json()
        node_port = svc["ports"][0]["nodePort"]
        eps = c.get(f"/v1/services/{svc['id']}/endpoints")["endpoints"]
        assert sorted((e["pod_id"], e["port"]) for e in eps) == [("pod-a", a), ("pod-b", b)]

        wait_until(lambda: not _refused(node_port), 10, what="the worker to open the node port")
        seen = {_get(node_port) for _ in range(10)}
        assert seen == {"a", "b"}, seen  # round robin over both pods

        # pod-b is no longer ready (its process still answers): the endpoints drop it at once, and the
        # worker sends it no new connection within 2 s.
        start = time.monotonic()
        _set_ready(store, "pod-b", False)
        assert [e["pod_id"] for e in c.get(f"/v1/services/{svc['id']}/endpoints")["endpoints"]] == ["pod-a"]
        wait_until(lambda: {_get(node_port) for _ in range(6)} == {"a"}, 3, what="the worker to drop pod-b")
        assert time.monotonic() - start < 2.5
        # Ready again: back in turn.
        _set_ready(store, "pod-b", True)
        wait_until(lambda: "b" in {_get(node_port) for _ in range(4)}, 3, what="the worker to use pod-b again")

        # pod-b's process dies; until its node says so, each connection to it is retried on pod-a: every
        # request is answered.
        os.kill(pb.pid, signal.SIGKILL)
        pb.wait()
        assert [_get(node_port) for _ in range(20)] == ["a"] * 20

        assert c.client.delete(f"/v1/services/{svc['id']}").status_code == 204
        wait_until(lambda: _refused(node_port), 5, what="the node port to close")
    finally:
        store.close()
