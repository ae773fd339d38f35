"""Pods against a real server: /v1/pods and the node's sync route, with stand-in nodes that speak the agent
protocol over HTTP (register, heartbeat, sync) the way a worker does. One server for the module; each
test's nodes carry a label of their own and its pods select it, so that tests do not place on each
other's nodes.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import Cluster, wait_until
from tests.support import corral

NODE_SECRET = "X-Corral-Node-Secret"
NODE_TTL = 2.0  # seconds: a stand-in node that stops heartbeating is down this soon


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(Path(tmp_path_factory.mktemp("pods")))
    c.start_server("--node-ttl", str(NODE_TTL), "--max-log-bytes", "2000", "--node-port-range", "31000-31002")
    yield c
    c.close()


class FakeNode:
    """A node as the coordinator sees it: registered, heartbeating and syncing on request."""

    def __init__(self, cluster: Cluster, name: str, labels: dict[str, str], address: str = "10.1.2.3",
                 cpu: float = 2.0) -> None:
        self.c = cluster
        r = cluster.client.post("/v1/agent/register", json={
            "name": name, "hostname": name, "version": "t", "cpu": cpu, "memory": 4 * 2**30,
            "runtimes": ["docker", "process"], "labels": labels, "address": address})
        assert r.status_code == 200, r.text
        self.id, self.secret = r.json()["node_id"], r.json()["node_secret"]

    def post(self, op: str, body: dict[str, Any], secret: str | None = None) -> httpx.Response:
        return self.c.client.post(f"/v1/agent/nodes/{self.id}/{op}", json=body,
                                  headers={NODE_SECRET: secret or self.secret})

    def heartbeat(self) -> None:
        assert self.post("heartbeat", {"running": []}).status_code == 200

    @contextlib.contextmanager
    def alive(self) -> Iterator[None]:
        """Heartbeat in the background (while the test waits on something else, such as a CLI command)."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(NODE_TTL / 8):
                self.post("heartbeat", {"running": []})

        t = threading.Thread(target=beat, daemon=True)
        t.start()
        try:
            yield
        finally:
            stop.set()
            t.join(5)

    def sync(self, pods: list[dict[str, Any]] | None = None, logs: list[dict[str, Any]] | None = None
             ) -> dict[str, Any]:
        r = self.post("pods", {"pods": pods or [], "logs": logs or []})
        assert r.status_code == 200, r.text
        return dict(r.json())


def _spec(name: str, label: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "node_selector": {"t": label},
            "containers": [{"name": "app", "image": "corral-test/busybox", "command": ["httpd", "-f"],
                            "ports": [{"name": "http", "containerPort": 80}]}], **extra}


def _create(c: Cluster, spec: dict[str, Any]) -> dict[str, Any]:
    r = c.client.post("/v1/pods", json=spec)
    assert r.status_code == 201, r.text
    return dict(r.json())


def _status(a: dict[str, Any], phase: str = "running", ready: bool = True, **container: Any) -> dict[str, Any]:
    """What a worker says about the assignment ``a``: every container running (and ready)."""
    return {"instance_id": a["instance_id"], "pod_id": a["pod_id"], "phase": phase, "ts": time.time(),
            "containers": [{"name": c["name"], "state": "running", "ready": ready, "restart_count": 0,
                            "container_id": f"cid-{c['name']}", "started_at": time.time(), **container}
                           for c in a["containers"]]}


def _assigned(node: FakeNode, pod_id: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        node.heartbeat()
        return next((a for a in node.sync()["pods"] if a["pod_id"] == pod_id), None)
    return dict(wait_until(find, 10, what=f"pod {pod_id} assigned to {node.id}"))


def test_a_pod_is_placed_runs_and_is_deleted(cluster: Cluster) -> None:
    node = FakeNode(cluster, "pods-a", {"t": "lifecycle"}, address="10.9.8.7")
    pod = _create(cluster, _spec("web", "lifecycle", labels={"app": "web"}))
    assert pod["state"] == "pending" and pod["namespace"] == "default"
    a = _assigned(node, pod["id"])
    assert a["desired"] == "run" and a["restart_policy"] == "Always" and a["grace"] == 10
    [port] = a["ports"]
    assert port["containerPort"] == 80 and 31000 <= port["hostPort"] <= 31002
    assert a["containers"][0]["command"] == ["httpd", "-f"] and a["containers"][0]["memory_limit"] > 0
    assert a["containers"][0]["env"]["CORRAL_POD_ID"] == pod["id"]

    got = cluster.get(f"/v1/pods/{pod['id']}")
    assert got["state"] == "scheduled" and got["node_id"] == node.id and got["address"] == "10.9.8.7"
    assert got["ports"][0]["nodePort"] == port["hostPort"]

    node.sync([_status(a)], [{"instance_id": a["instance_id"], "container": "app", "stream": "stdout",
                              "line": "listening", "ts": time.time()}])
    got = cluster.get(f"/v1/pods/{pod['id']}")
    assert got["state"] == "running" and got["ready"] is True
    assert got["containers"][0]["state"] == "running" and got["containers"][0]["container_id"] == "cid-app"
    assert cluster.client.get(f"/v1/pods/{pod['id']}/logs").text == "listening\n"
    # the node and its pods' capacity
    n = cluster.get(f"/v1/nodes/{node.id}")
    assert n["address"] == "10.9.8.7" and n["pods"] == 1 and n["allocated"]["cpu"] > 0
    assert 'corral_pods{state="running"}' in cluster.client.get("/metrics").text

    items = cluster.get("/v1/pods?selector=app=web&namespace=default")["items"]
    assert [p["id"] for p in items] == [pod["id"]]
    assert cluster.get("/v1/pods?selector=app=db")["items"] == []

    r = cluster.client.delete(f"/v1/pods/{pod['id']}")
    assert r.status_code == 200 and r.json()["state"] == "terminating"
    a = next(x for x in node.sync([_status(a)])["pods"] if x["pod_id"] == pod["id"])
    assert a["desired"] == "stop"
    r = cluster.client.post(f"/v1/pods/{pod['id']}/purge")
    assert r.status_code == 409 and "terminat" in r.json()["detail"]
    node.sync([{**_status(a), "phase": "stopped"}])
    got = cluster.get(f"/v1/pods/{pod['id']}")
    assert got["state"] == "terminated" and got["ports"][0]["nodePort"] is None
    assert all(x["pod_id"] != pod["id"] for x in node.sync()["pods"])
    assert cluster.client.get(f"/v1/pods/{pod['id']}/logs").text == "listening\n"  # after it is gone
    assert cluster.client.post(f"/v1/pods/{pod['id']}/purge").status_code == 204
    assert cluster.client.get(f"/v1/pods/{pod['id']}").status_code == 404


def test_a_reader_waits_until_the_pod_is_ready(cluster: Cluster) -> None:
    """GET /v1/pods/{id}?wait= answers once the pod runs and is ready (woken by the node's sync, long
    before its wait is over), or with the pod as it is when the wait is over."""
    node = FakeNode(cluster, "pods-wait", {"t": "wait"})
    pod = _create(cluster, _spec("waited", "wait"))
    a = _assigned(node, pod["id"])
    answer: dict[str, Any] = {}

    def read() -> None:
        t = time.monotonic()
        r = cluster.client.get(f"/v1/pods/{pod['id']}", params={"wait": 20}, timeout=30)
        answer.update(r.json(), status=r.status_code, took=time.monotonic() - t)

    reader = threading.Thread(target=read, daemon=True)
    with node.alive():  # its lease is short (NODE_TTL)
        reader.start()
        node.sync([_status(a, ready=False)])  # running, not ready: the reader goes on waiting
        reader.join(0.6)
        assert reader.is_alive() and cluster.get(f"/v1/pods/{pod['id']}")["state"] == "running"
        node.sync([_status(a, ready=True)])
        reader.join(10)
    assert not reader.is_alive(), "the reader was not answered once the pod was ready"
    assert answer["status"] == 200 and answer["state"] == "running" and answer["ready"] is True
    assert answer["took"] < 12
    # One that cannot be placed: the pod as it is once the wait is over.
    stuck = _create(cluster, _spec("stuck", "no-such-node"))
    t = time.monotonic()
    got = cluster.client.get(f"/v1/pods/{stuck['id']}", params={"wait": 0.5}, timeout=10)
    assert got.status_code == 200 and got.json()["state"] == "pending" and time.monotonic() - t >= 0.5
    for bad in ("-1", "61", "soon"):
        r = cluster.client.get(f"/v1/pods/{stuck['id']}", params={"wait": bad})
        assert r.status_code == 400 and "wait" in r.text, (bad, r.text)
    assert cluster.client.get("/v1/pods/nope", params={"wait": 1}).status_code == 404
    for p in (pod, stuck):
        cluster.client.delete(f"/v1/pods/{p['id']}")


def test_yaml_and_a_kubernetes_manifest_are_taken(cluster: Cluster) -> None:
    manifest = ("apiVersion: v1\nkind: Pod\nmetadata:\n  name: from-yaml\n  namespace: team-a\n  labels: {app: y}\n"
                "spec:\n  restartPolicy: OnFailure\n  nodeSelector: {t: nowhere}\n  containers:\n"
                "  - name: main\n    image: busybox\n    args: [sleep, '60']\n"
                "    env:\n    - {name: GREETING, value: hi}\n")
    r = cluster.client.post("/v1/pods", content=manifest, headers={"Content-Type": "application/yaml"})
    assert r.status_code == 201, r.text
    p = r.json()
    assert (p["name"], p["namespace"], p["restartPolicy"]) == ("from-yaml", "team-a", "OnFailure")
    assert p["spec"]["containers"][0]["env"] == {"GREETING": "hi"}
    # Nothing matches its selector: it waits, and says why.
    got = cluster.wait_for(f"/v1/pods/{p['id']}", {"pending"}, field="state")
    wait_until(lambda: "node_selector t=nowhere" in (cluster.get(f"/v1/pods/{p['id']}")["reason"] or "")
               or cluster.get(f"/v1/pods/{p['id']}")["reason"] == "no worker is registered and ready", 10,
               what="a pending reason")
    assert got["node_id"] is None
    assert [x["id"] for x in cluster.get("/v1/pods?namespace=team-a")["items"]] == [p["id"]]
    assert cluster.client.delete(f"/v1/pods/{p['id']}").json()["state"] == "terminated"  # never placed: at once


@pytest.mark.parametrize("body, field", [
    ({"name": "x"}, "containers"),
    ({"name": "x", "containers": [{"name": "a", "image": "b"}], "hostNetwork": True}, "the host's network"),
    ({"name": "x", "containers": [{"name": "a", "image": "b", "ports": [{"containerPort": 99999}]}]},
     "containers.0.ports.0.containerPort"),
    ({"name": "x", "containers": [{"name": "a", "image": "b"}], "restartPolicy": "Maybe"}, "restartPolicy"),
    ({"name": "x", "containers": [{"name": "a", "image": "b"}], "ttl": "forever"}, "ttl"),
    ({"name": "x", "containers": [{"name": "a", "image": "b", "resources": {"limits": {"memory": "lots"}}}]},
     "containers.0.resources.limits.memory"),
    ({"apiVersion": "v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {}}, "kind"),
    ({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x", "uid": "1"}, "spec": {}}, "metadata.uid"),
    ([1, 2], None),
])
def test_bad_pods_are_refused_with_the_field(cluster: Cluster, body: Any, field: str | None) -> None:
    r = cluster.client.post("/v1/pods", json=body)
    assert r.status_code == 400, r.text
    if field:
        assert field in r.text


def test_bad_queries_and_unknown_pods_are_4xx(cluster: Cluster) -> None:
    for path in ("/v1/pods?selector=novalue", "/v1/pods?limit=0", "/v1/pods?cursor=zzz", "/v1/pods?origin=x"):
        assert cluster.client.get(path).status_code in (400, 422), path
    for method, path in (("GET", "/v1/pods/nope"), ("DELETE", "/v1/pods/nope"), ("GET", "/v1/pods/nope/logs"),
                         ("POST", "/v1/pods/nope/purge")):
        assert cluster.client.request(method, path).status_code == 404, path


def test_only_the_node_that_holds_a_pod_reports_about_it(cluster: Cluster) -> None:
    mine = FakeNode(cluster, "pods-own", {"t": "trust"})
    other = FakeNode(cluster, "pods-other", {"t": "elsewhere"})
    pod = _create(cluster, _spec("guarded", "trust"))
    a = _assigned(mine, pod["id"])
    # another node's report about it, and lines, change nothing
    assert other.sync([_status(a, phase="failed")], [{"instance_id": a["instance_id"], "container": "app",
                                                       "stream": "stdout", "line": "forged", "ts": 1.0}])["pods"] == []
    got = cluster.get(f"/v1/pods/{pod['id']}")
    assert got["state"] == "scheduled"
    assert cluster.client.get(f"/v1/pods/{pod['id']}/logs").text == ""
    # an old instance of it changes nothing either
    mine.sync([{**_status(a, phase="failed"), "instance_id": "0" * 32}])
    assert cluster.get(f"/v1/pods/{pod['id']}")["state"] == "scheduled"
    # without the node's secret, or for a node that does not exist: refused before the body is read
    assert mine.post("pods", {"pods": []}, secret="wrong").status_code == 403
    assert cluster.client.post(f"/v1/agent/nodes/{'f' * 32}/pods", json={}).status_code in (403, 404)
    for bad in ({"pods": [{"instance_id": "x", "pod_id": "p", "phase": "running"}]},
                {"pods": [{**_status(a), "phase": "exploded"}]},
                {"logs": [{"instance_id": a["instance_id"], "container": "app", "stream": "stdin", "line": "",
                           "ts": 1}]},
                {"pods": "all"}):
        assert mine.post("pods", bad).status_code == 400, bad
    # a failure it reports itself ends the pod, with the reason
    mine.sync([_status(a, phase="failed", state="terminated", exit_code=3, ready=False)])
    got = cluster.get(f"/v1/pods/{pod['id']}")
    assert got["state"] == "failed" and got["reason"] == "container app exited with code 3"
    assert got["finished_at"] is not None


def test_logs_are_capped_per_container_and_followed_until_the_pod_ends(cluster: Cluster) -> None:
    node = FakeNode(cluster, "pods-logs", {"t": "logs"})
    pod = _create(cluster, _spec("chatty", "logs", restartPolicy="Never", containers=[
        {"name": "a", "image": "x"}, {"name": "b", "image": "x"}]))
    a = _assigned(node, pod["id"])
    lines = [{"instance_id": a["instance_id"], "container": c, "stream": "stdout", "line": f"{c}-{i:03d}" + "x" * 90,
              "ts": time.time()} for i in range(30) for c in ("a", "b")]
    answer = node.sync([_status(a)], lines)
    assert answer["log_full"] == [a["instance_id"]]
    assert {x["container"] for x in answer["log_full_containers"]} == {"a", "b"}
    text = cluster.client.get(f"/v1/pods/{pod['id']}/logs?container=a").text
    assert text.startswith("a-000") and "b-" not in text and text.rstrip().endswith("dropped]")
    assert len(text) < 2300
    ndjson = cluster.client.get(f"/v1/pods/{pod['id']}/logs?format=ndjson&limit=2").text.splitlines()
    assert len(ndjson) == 2 and '"container": "a"' in ndjson[0] and '"container": "b"' in ndjson[1]
    # follow: the stream ends once the pod has ended and its lines were sent
    with cluster.client.stream("GET", f"/v1/pods/{pod['id']}/logs?container=b&follow=true", timeout=20) as r:
        it = r.iter_lines()
        assert next(it).startswith("b-000")
        node.sync([_status(a, phase="succeeded", state="terminated", exit_code=0, ready=False)])
        rest = list(it)
    assert rest[-1].endswith("dropped]")
    assert cluster.get(f"/v1/pods/{pod['id']}")["state"] == "succeeded"


def test_a_dead_nodes_pods_move_or_fail_and_its_ports_are_released(cluster: Cluster) -> None:
    dying = FakeNode(cluster, "pods-dying", {"t": "move"})
    pods = {policy: _create(cluster, _spec(f"p-{policy.lower()}", "move", restartPolicy=policy,
                                            containers=[{"name": "app", "image": "x",
                                                         "ports": [{"containerPort": 80, "hostPort": 8080}]}]
                                            if policy == "Always" else [{"name": "app", "image": "x"}]))
            for policy in ("Always", "Never")}
    first = {p: _assigned(dying, pod["id"]) for p, pod in pods.items()}
    dying.sync([_status(a) for a in first.values()])
    survivor = FakeNode(cluster, "pods-survivor", {"t": "move"})

    def moved() -> dict[str, Any] | None:
        survivor.heartbeat()  # only the survivor keeps its lease
        got = cluster.get(f"/v1/pods/{pods['Always']['id']}")
        return got if got["node_id"] == survivor.id else None

    t0 = time.monotonic()
    got = wait_until(moved, 20, what="the Always pod to move to the survivor")
    assert time.monotonic() - t0 < NODE_TTL + 6
    assert got["instance_id"] != first["Always"]["instance_id"] and "down" in (cluster.get(
        f"/v1/pods/{pods['Never']['id']}")["reason"] or "")
    never = cluster.get(f"/v1/pods/{pods['Never']['id']}")
    assert never["state"] == "failed" and "restartPolicy Never" in never["reason"]
    a = _assigned(survivor, pods["Always"]["id"])
    assert a["ports"][0]["hostPort"] == 8080  # the dead node's hold on 8080 went with it
    # the dead node, back, reporting its old instance changes nothing and is told to run nothing
    answer = dying.sync([_status(first["Always"])])
    assert answer["pods"] == []
    assert cluster.get(f"/v1/pods/{pods['Always']['id']}")["node_id"] == survivor.id


def test_ttl_expiry_deletes_the_pod(cluster: Cluster) -> None:
    node = FakeNode(cluster, "pods-ttl", {"t": "ttl"})
    pod = _create(cluster, _spec("short", "ttl", ttl="1s"))
    assert pod["ttl_expires_at"] is not None
    a = _assigned(node, pod["id"])

    def told_to_stop() -> bool:
        node.heartbeat()
        return any(x["pod_id"] == pod["id"] and x["desired"] == "stop" for x in node.sync([_status(a)])["pods"])

    wait_until(told_to_stop, 15, what="the node to be told to stop the expired pod")
    assert cluster.get(f"/v1/pods/{pod['id']}")["reason"].startswith("its ttl ran out")
    node.sync([{**_status(a), "phase": "stopped"}])
    assert cluster.get(f"/v1/pods/{pod['id']}")["state"] == "terminated"


def test_the_cli_creates_lists_shows_follows_and_deletes(cluster: Cluster, tmp_path: Path) -> None:
    node = FakeNode(cluster, "pods-cli", {"t": "cli"}, address="192.0.2.7")
    with node.alive():
        _cli(cluster, node, tmp_path)


def _cli(cluster: Cluster, node: FakeNode, tmp_path: Path) -> None:
    f = tmp_path / "web.yaml"
    f.write_text("name: cli-web\nlabels: {app: cli}\nnode_selector: {t: cli}\ncontainers:\n"
                 "- name: app\n  image: busybox\n  ports: [{containerPort: 8080}]\n")
    r = corral("pods", "create", str(f), server=cluster.url)
    assert r.returncode == 0, r.stderr
    pod_id = r.stdout.strip()
    a = _assigned(node, pod_id)
    node.sync([_status(a)], [{"instance_id": a["instance_id"], "container": "app", "stream": s, "line": f"to {s}",
                              "ts": time.time()} for s in ("stdout", "stderr")])
    r = corral("pods", "ls", "-l", "app=cli", server=cluster.url)
    assert r.returncode == 0 and pod_id in r.stdout and "running" in r.stdout and "1/1" in r.stdout, r.stdout
    r = corral("pods", "get", pod_id, server=cluster.url)
    port = a["ports"][0]["hostPort"]
    assert r.returncode == 0 and f"192.0.2.7:{port}" in r.stdout, r.stdout
    r = corral("pods", "logs", pod_id, "-c", "app", server=cluster.url)
    assert (r.returncode, r.stdout, r.stderr) == (0, "to stdout\n", "to stderr\n")
    r = corral("pods", "rm", pod_id, server=cluster.url)
    assert r.returncode == 0 and "terminating" in r.stdout
    node.sync([{**_status(a), "phase": "stopped"}])
    r = corral("pods", "logs", pod_id, "--follow", server=cluster.url)  # ended: returns at once
    assert r.returncode == 0 and r.stdout == "to stdout\n"
    r = corral("pods", "get", "nope", server=cluster.url)
    assert r.returncode != 0 and "no pod with an id that starts with 'nope'" in r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ncontainers: []\n")
    r = corral("pods", "create", str(bad), server=cluster.url)
    assert r.returncode != 0 and "containers" in r.stderr


def test_the_openapi_document_describes_the_pod_body(cluster: Cluster) -> None:
    doc = cluster.get("/openapi.json")
    assert doc["paths"]["/v1/pods"]["post"]["requestBody"]["content"]["application/yaml"]["schema"] == {
        "$ref": "#/components/schemas/PodSpec"}
    schemas = doc["components"]["schemas"]
    assert {"PodSpec", "ContainerSpec", "PodProbeSpec", "PortSpec"} <= set(schemas)
    assert schemas["PodSpec"]["properties"]["restartPolicy"]["enum"] == ["Always", "OnFailure", "Never"]
