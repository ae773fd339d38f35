"""The Podling API on a real `corral up` (with its access token: auth on) and on a real `corral server` on
PostgreSQL with a `corral worker --podling-port`, with real containers.

Each curl example of the Podling document is sent as written (same method, path and body) to the Podling
port of its own (`--dialect-port podling=PORT`), where it answers exactly as Podling's master.
"""

from __future__ import annotations

import io
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests import pg
from tests.harness import Cluster, free_port, wait_until

ID_RE = re.compile(r"^\d{14}-[a-z0-9]{8}$")  # 20250119123456-abc12345
GO_TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
HELLO_IMAGE = "corral-test/podling-hello:latest"
DONE = {"completed", "failed"}


@pytest.fixture(scope="module")
def hello_image(busybox_image: str, docker_client: docker.DockerClient) -> str:
    """A local image whose own command prints a line and sleeps $SLEEP seconds (Podling's tasks give no
    command: they run their image's)."""
    dockerfile = (f"FROM {busybox_image}\n"
                  'CMD ["sh", "-c", "echo hello from ${NAME:-podling}; sleep ${SLEEP:-0}"]\n').encode()
    docker_client.images.build(fileobj=io.BytesIO(dockerfile), tag=HELLO_IMAGE, rm=True, pull=False)
    return HELLO_IMAGE


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, str]]:
    c = Cluster(tmp_path_factory.mktemp("podling"))
    port = free_port()
    c.up("--dialect-port", f"podling={port}", "--runtime", "docker")
    yield c, f"http://127.0.0.1:{port}"
    c.close()


def _wait(c: Cluster, url: str, states: set[str], timeout: float = 30) -> dict[str, Any]:
    return c.wait_for(url, states, "status", timeout)


def _node_secret(c: Cluster) -> tuple[str, str]:
    """The standalone's local worker: its node id and secret (what a node presents)."""
    d = c.tmp / "data" / "worker"
    return (d / "node-id").read_text().strip(), (d / "node-secret").read_text().strip()


def test_health_on_each_port(server: tuple[Cluster, str]) -> None:
    c, pl = server
    # curl http://localhost:8070/health
    r = c.client.get(f"{pl}/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "service": "podling-master", "authEnabled": True}
    # On the main port, /health is Tork's; Podling's routes are there too.
    assert c.client.get("/health").json()["status"] == "UP"
    assert c.client.get("/api/v1/tasks").status_code == 200
    # Podling's port serves Podling alone.
    assert c.client.get(f"{pl}/jobs").status_code == 404
    assert c.client.get(f"{pl}/v1/jobs").status_code == 404
    # It is behind the same edge: no token, no answer (but /health, a probe); the edge's refusals are in
    # Podling's shape, there and on the main port's /api/v1/.
    for base in (pl, ""):
        r = c.client.get(f"{base}/api/v1/tasks", headers={"Authorization": ""})
        assert r.status_code == 401 and list(r.json()) == ["error"], r.text
    r = c.client.post(f"{pl}/api/v1/tasks", content=b"{" + b" " * (2 << 20) + b"}",
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and list(r.json()) == ["error"], r.text


def test_task_curl_examples(server: tuple[Cluster, str], hello_image: str) -> None:
    c, pl = server
    # curl -X POST http://localhost:8070/api/v1/tasks -H "Content-Type: application/json"
    #   -d '{"name":"nginx-task","image":"nginx:latest"}'
    r = c.client.post(f"{pl}/api/v1/tasks", headers={"Content-Type": "application/json"},
                      content='{"name":"nginx-task","image":"nginx:latest"}')
    assert r.status_code == 201, r.text
    t = r.json()
    assert ID_RE.match(t["taskId"]), t
    assert t["name"] == "nginx-task" and t["image"] == "nginx:latest" and GO_TIME_RE.match(t["createdAt"])
    assert t["status"] in {"pending", "scheduled", "running", "failed"}
    # There is no registry here: it fails, and says why.
    nginx = _wait(c, f"{pl}/api/v1/tasks/{t['taskId']}", DONE)
    assert nginx["status"] == "failed" and "nginx:latest" in nginx["error"], nginx

    # The document's full body, with env.
    r = c.client.post(f"{pl}/api/v1/tasks", json={"name": "my-nginx-task", "image": "nginx:latest",
                                                   "env": {"PORT": "8080"}})
    assert r.status_code == 201 and r.json()["env"] == {"PORT": "8080"}

    # A task that runs: its image's own command, with its env.
    r = c.client.post(f"{pl}/api/v1/tasks", json={"name": "hello", "image": hello_image, "env": {"NAME": "pods"}})
    assert r.status_code == 201, r.text
    tid = r.json()["taskId"]
    done = _wait(c, f"{pl}/api/v1/tasks/{tid}", DONE)
    assert done["status"] == "completed", done
    assert len(done["nodeId"]) == 32 and done["containerId"]
    assert GO_TIME_RE.match(done["startedAt"]) and GO_TIME_RE.match(done["finishedAt"])
    assert "error" not in done
    job_logs = [j for j in c.client.get("/v1/jobs", params={"tag": "podling"}).json()["items"]]
    assert job_logs, "a Podling task is a native job"

    # curl http://localhost:8070/api/v1/tasks
    listed = c.client.get(f"{pl}/api/v1/tasks").json()
    assert isinstance(listed, list) and [x["taskId"] for x in listed][:1] == [tid]
    assert {t["taskId"], tid} <= {x["taskId"] for x in listed}
    # curl http://localhost:8070/api/v1/tasks/20250119123456-abc12345
    r = c.client.get(f"{pl}/api/v1/tasks/20250119123456-abc12345")
    assert r.status_code == 404 and r.json() == {"error": "task not found"}


def test_task_status_is_for_nodes_and_follows_the_flow(server: tuple[Cluster, str], hello_image: str) -> None:
    c, pl = server
    node_id, secret = _node_secret(c)
    me = {"X-Corral-Node-Id": node_id, "X-Corral-Node-Secret": secret}
    r = c.client.post(f"{pl}/api/v1/tasks", json={"name": "long", "image": hello_image, "env": {"SLEEP": "60"}})
    tid = r.json()["taskId"]
    url = f"{pl}/api/v1/tasks/{tid}/status"
    _wait(c, f"{pl}/api/v1/tasks/{tid}", {"running"})
    # PUT /api/v1/tasks/{taskId}/status {"status": "running", "containerId": "docker-container-id"}: auth is on,
    # and the caller (a user with the API token) is no node.
    r = c.client.put(url, json={"status": "running", "containerId": "docker-container-id"})
    assert r.status_code == 403 and "worker node" in r.json()["error"], r.text
    r = c.client.put(url, json={"status": "completed"}, headers={**me, "X-Corral-Node-Secret": "wrong"})
    assert r.status_code == 403
    # Only legal steps of pending -> scheduled -> running -> completed/failed.
    r = c.client.put(url, json={"status": "scheduled"}, headers=me)
    assert r.status_code == 400 and "running task cannot become scheduled" in r.json()["error"], r.text
    r = c.client.put(url, json={"status": "done"}, headers=me)
    assert r.status_code == 400 and "unknown status" in r.json()["error"]
    r = c.client.put(url, json={}, headers=me)
    assert r.status_code == 400 and r.json() == {"error": "status is required"}
    r = c.client.put(url, json={"status": "completed"}, headers=me)
    assert r.status_code == 200 and r.json()["status"] == "completed", r.text
    r = c.client.put(url, json={"status": "running"}, headers=me)
    assert r.status_code == 400 and "completed already" in r.json()["error"]
    assert c.get(f"{pl}/api/v1/tasks/{tid}")["status"] == "completed"

    # A task no node can take stays pending, with the reason; it cannot be reported running.
    r = c.client.post(f"{pl}/api/v1/tasks", json={"name": "huge", "image": hello_image,
                                                   "resources": {"requests": {"cpu": 1000000}}})
    huge = r.json()
    assert r.status_code == 201 and huge["resources"] == {"requests": {"cpu": 1000000}}
    wait_until(lambda: c.get(f"{pl}/api/v1/tasks/{huge['taskId']}").get("schedulingError"), 15,
               what="the reason it waits")
    hurl = f"{pl}/api/v1/tasks/{huge['taskId']}/status"
    r = c.client.put(hurl, json={"status": "running"}, headers=me)
    assert r.status_code == 400 and "pending task cannot become running" in r.json()["error"]
    r = c.client.put(hurl, json={"status": "failed", "error": "no room"}, headers=me)
    assert r.status_code == 200 and r.json()["status"] == "failed" and r.json()["error"] == "no room"
    r = c.client.put(f"{pl}/api/v1/tasks/20250119123456-abc12345/status", json={"status": "failed"}, headers=me)
    assert r.status_code == 404 and r.json() == {"error": "task not found"}


def test_node_curl_examples(server: tuple[Cluster, str]) -> None:
    c, pl = server
    # POST /api/v1/nodes/register {"hostname": "worker-1", "port": 8081, "capacity": 10}
    r = c.client.post(f"{pl}/api/v1/nodes/register", json={"hostname": "worker-1", "port": 8081, "capacity": 10})
    assert r.status_code == 201, r.text
    n = r.json()
    assert n["hostname"] == "worker-1" and n["port"] == 8081 and n["status"] == "online"
    assert n["resources"]["capacity"] == {"cpu": 10000, "memory": 10 << 30} and n["runningTasks"] == 0
    # Podling's own request shape: cpu and memory quantities.
    r = c.client.post(f"{pl}/api/v1/nodes/register",
                      json={"hostname": "worker-2", "port": 8082, "cpu": "500m", "memory": "512Mi"})
    assert r.status_code == 201 and r.json()["resources"]["capacity"] == {"cpu": 500, "memory": 512 << 20}
    w2 = r.json()["nodeId"]
    # curl -X POST http://localhost:8070/api/v1/nodes/worker-1/heartbeat
    r = c.client.post(f"{pl}/api/v1/nodes/worker-1/heartbeat")
    assert r.status_code == 200 and r.json()["nodeId"] == n["nodeId"], r.text
    assert r.json()["lastHeartbeat"] >= n["lastHeartbeat"]
    # curl http://localhost:8070/api/v1/nodes
    nodes = {x["nodeId"]: x for x in c.client.get(f"{pl}/api/v1/nodes").json()}
    assert {n["nodeId"], w2} <= set(nodes)
    local_id, _ = _node_secret(c)
    assert nodes[local_id]["status"] == "online" and nodes[local_id]["hostname"]
    # A Corral worker heartbeats through /v1/agent with its own secret, not here.
    r = c.client.post(f"{pl}/api/v1/nodes/{local_id}/heartbeat")
    assert r.status_code == 403 and "Corral worker" in r.json()["error"]
    assert c.client.post(f"{pl}/api/v1/nodes/nope/heartbeat").json() == {"error": "node not found"}
    # POST /api/v1/nodes/{id}/deregister: offline at once.
    r = c.client.post(f"{pl}/api/v1/nodes/{w2}/deregister")
    assert r.status_code == 200 and r.json() == {"message": "node deregistered successfully"}
    assert {x["nodeId"]: x for x in c.client.get(f"{pl}/api/v1/nodes").json()}[w2]["status"] == "offline"
    # Nothing is placed on a node registered through Podling's API: Corral cannot drive it.
    natives = {x["id"]: x for x in c.client.get("/v1/nodes").json()["items"]}
    assert natives[n["nodeId"]]["runtimes"] == []


@pytest.mark.parametrize("body, error", [
    ("{", "JSON"),
    ("[]", "must be a JSON object"),
    ('{"image": "x"}', "name and image are required"),
    ('{"name": "x"}', "name and image are required"),
    ('{"name": 5, "image": "x"}', "name must be a string"),
    ('{"name": "x", "image": "x", "env": {"A": 1}}', "env must be a map of strings"),
    ('{"name": "x", "image": "x", "env": {"1A": "b"}}', "not a valid environment variable name"),
    ('{"name": "x", "image": "x", "restartPolicy": "Sometimes"}', "restartPolicy must be one of"),
    ('{"name": "x", "image": "x", "livenessProbe": {"type": "http", "httpPath": "x"}}', "httpPath must start"),
    ('{"name": "x", "image": "x", "readinessProbe": {"type": "tcp"}}', "port is required for tcp"),
    ('{"name": "x", "image": "x", "livenessProbe": {"type": "exec", "command": []}}', "command must be a list"),
    ('{"name": "x", "image": "x", "ports": [{"containerPort": 70000}]}', "containerPort must be"),
    ('{"name": "x", "image": "x", "resources": {"requests": {"cpu": "1"}}}', "cpu (millicores) must be"),
    ('{"name": "x", "image": "x", "command": ["sh"]}', "unknown field command"),
])
def test_bad_tasks(server: tuple[Cluster, str], body: str, error: str) -> None:
    c, pl = server
    r = c.client.post(f"{pl}/api/v1/tasks", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert list(r.json()) == ["error"] and error in r.json()["error"], r.text


@pytest.mark.parametrize("body, error", [
    ({"hostname": "w"}, "hostname and port are required"),
    ({"hostname": "w", "port": 8081}, "cpu, and memory are required"),
    ({"hostname": "w", "port": 0, "capacity": 1}, "hostname and port are required"),
    ({"hostname": "w", "port": 99999, "capacity": 1}, "port must be"),
    ({"hostname": "w", "port": 1, "cpu": "lots", "memory": "1Gi"}, "invalid cpu format"),
    ({"hostname": "w", "port": 1, "cpu": "1", "memory": "1Zi"}, "invalid memory format"),
])
def test_bad_registrations(server: tuple[Cluster, str], body: dict[str, Any], error: str) -> None:
    c, pl = server
    r = c.client.post(f"{pl}/api/v1/nodes/register", json=body)
    assert r.status_code == 400 and error in r.json()["error"], r.text


def test_prune(server: tuple[Cluster, str], hello_image: str) -> None:
    c, pl = server
    r = c.client.post(f"{pl}/api/v1/tasks", json={"name": "to-prune", "image": hello_image})
    tid = r.json()["taskId"]
    _wait(c, f"{pl}/api/v1/tasks/{tid}", DONE)
    waiting = c.client.post(f"{pl}/api/v1/tasks", json={"name": "waits", "image": hello_image,
                                                         "resources": {"limits": {"memory": 1 << 50}}}).json()
    gone = c.client.post(f"{pl}/api/v1/nodes/register", json={"hostname": "gone", "port": 1, "capacity": 1}).json()
    c.client.post(f"{pl}/api/v1/nodes/{gone['nodeId']}/deregister")
    r = c.client.post(f"{pl}/api/v1/prune")
    assert r.status_code == 200, r.text
    out = r.json()
    assert set(out) == {"podsRemoved", "nodesRemoved", "servicesRemoved", "tasksRemoved"}
    assert out["tasksRemoved"] >= 1 and out["nodesRemoved"] >= 1
    assert c.client.get(f"{pl}/api/v1/tasks/{tid}").status_code == 404
    assert c.client.get(f"{pl}/api/v1/tasks/{waiting['taskId']}").status_code == 200  # unfinished: kept
    assert gone["nodeId"] not in {x["nodeId"] for x in c.client.get(f"{pl}/api/v1/nodes").json()}
    local_id, _ = _node_secret(c)
    assert local_id in {x["nodeId"] for x in c.client.get(f"{pl}/api/v1/nodes").json()}
    # ?all=true: the unfinished go too.
    out = c.client.post(f"{pl}/api/v1/prune", params={"all": "true"}).json()
    assert out["tasksRemoved"] >= 1
    assert c.client.get(f"{pl}/api/v1/tasks/{waiting['taskId']}").status_code == 404
    assert local_id in {x["nodeId"] for x in c.client.get(f"{pl}/api/v1/nodes").json()}


# -- a worker's Podling port, on a coordinator on PostgreSQL ---------------------------------------
@pytest.fixture(scope="module")
def distributed(tmp_path_factory: pytest.TempPathFactory, pg_admin_url: str) -> Iterator[tuple[Cluster, str, str]]:
    tmp: Path = tmp_path_factory.mktemp("podling-worker")
    with pg.fresh_database(pg_admin_url) as url:
        c = Cluster(tmp)
        c.start_server("--token", "cluster-secret", database_url=url)
        wport = free_port()
        c.add_worker("w1", "--podling-port", str(wport), "--token", "cluster-secret")
        c.add_worker("w2", "--token", "cluster-secret")
        ids = {n["name"]: n["id"] for n in c.nodes()}
        yield c, f"http://127.0.0.1:{wport}", ids["w1"]
        c.close()


def test_worker_port(distributed: tuple[Cluster, str, str], hello_image: str) -> None:
    c, wk, w1 = distributed
    # The worker shows its Podling port in Podling's node list.
    nodes = {n["nodeId"]: n for n in c.client.get("/api/v1/nodes").json()}
    assert nodes[w1]["port"] == int(wk.rsplit(":", 1)[1])
    # Execute (the document's body): a task the coordinator does not know is created there, pinned here.
    ids = ["task-id", "task-id-1", "task-id-2"]
    for i, tid in enumerate(ids):
        body = {"task": {"taskId": tid, "name": "my-task", "image": hello_image, "env": {"NAME": f"run{i}"}}}
        r = c.client.post(f"{wk}/api/v1/tasks/{tid}/execute", json=body)
        assert r.status_code == 202, r.text
        assert r.json() == {"message": "task execution started", "taskId": tid}
    for tid in ids:
        t = c.wait_for(f"/api/v1/tasks/{tid}", DONE, "status")
        assert t["status"] == "completed" and t["nodeId"] == w1, t  # never on w2
    # curl http://localhost:8081/api/v1/tasks/task-id/status
    r = c.client.get(f"{wk}/api/v1/tasks/task-id/status")
    assert r.status_code == 200 and r.json()["taskId"] == "task-id" and r.json()["status"] == "completed"
    # curl http://localhost:8081/api/v1/tasks/task-id/logs?tail=100
    r = c.client.get(f"{wk}/api/v1/tasks/task-id/logs?tail=100")
    assert r.status_code == 200 and r.json() == {"taskId": "task-id", "logs": "hello from run0\n", "tail": 100}
    assert c.client.get(f"{wk}/api/v1/tasks/task-id-1/logs?tail=x").status_code == 400
    # A task elsewhere is not this worker's.
    other = c.client.post("/api/v1/tasks", json={"name": "any", "image": hello_image,
                                                  "resources": {"limits": {"memory": 1 << 50}}}).json()
    assert c.client.get(f"{wk}/api/v1/tasks/{other['taskId']}/status").status_code == 404
    # Execute of a pending task pins it here; one that finished cannot run again.
    r = c.client.post(f"{wk}/api/v1/tasks/{other['taskId']}/execute", json={"task": {"taskId": other["taskId"]}})
    assert r.status_code == 202, r.text
    assert c.client.get(f"{wk}/api/v1/tasks/{other['taskId']}/status").json()["status"] == "pending"
    r = c.client.post(f"{wk}/api/v1/tasks/task-id/execute", json={"task": {"taskId": "task-id"}})
    assert r.status_code == 409 and "completed already" in r.json()["error"]
    # Bad input.
    r = c.client.post(f"{wk}/api/v1/tasks/a/execute", json={"task": {"taskId": "b"}})
    assert r.status_code == 400 and r.json() == {"error": "task ID mismatch"}
    r = c.client.post(f"{wk}/api/v1/tasks/a/execute", json={"nope": 1})
    assert r.status_code == 400 and "invalid request" in r.json()["error"]
    r = c.client.post(f"{wk}/api/v1/tasks/new-one/execute", json={"task": {"taskId": "new-one", "name": "x"}})
    assert r.status_code == 400 and r.json() == {"error": "name and image are required"}
    # Without the node's secret, the coordinator's node routes refuse.
    r = c.client.get(f"/v1/agent/nodes/{w1}/podling/tasks/task-id",
                     headers={"Authorization": "Bearer cluster-secret"})
    assert r.status_code == 403


# -- pods and services --------------------------------------------------------------------------------
WEB = ["sh", "-c", "mkdir -p /www && echo hello from $HOSTNAME > /www/index.html && exec httpd -f -p 8080 -h /www"]


def test_pod_curl_examples(server: tuple[Cluster, str]) -> None:
    c, pl = server
    # curl -X POST http://localhost:8070/api/v1/pods -H "Content-Type: application/json"
    #   -d '{"name":"web-pod","containers":[{"name":"nginx","image":"nginx:latest"}]}'
    r = c.client.post(f"{pl}/api/v1/pods", headers={"Content-Type": "application/json"},
                      content='{"name":"web-pod","containers":[{"name":"nginx","image":"nginx:latest"}]}')
    assert r.status_code == 201, r.text
    pod = r.json()
    assert ID_RE.match(pod["podId"]) and pod["name"] == "web-pod" and pod["namespace"] == "default"
    assert pod["status"] == "pending" and GO_TIME_RE.match(pod["createdAt"])
    assert [(x["name"], x["image"], x["status"]) for x in pod["containers"]] == [("nginx", "nginx:latest", "waiting")]
    # The document's full body.
    body = {"name": "my-web-app", "namespace": "production", "labels": {"app": "web", "version": "1.0"},
            "containers": [{"name": "app", "image": "myapp:1.0", "env": {"PORT": "8080"}},
                           {"name": "sidecar", "image": "nginx:latest"}]}
    r = c.client.post(f"{pl}/api/v1/pods", json=body)
    assert r.status_code == 201, r.text
    full = r.json()
    assert full["namespace"] == "production" and full["labels"] == {"app": "web", "version": "1.0"}
    assert full["containers"][0]["env"] == {"PORT": "8080"} and full["restartPolicy"] == "Always"
    # curl http://localhost:8070/api/v1/pods
    listed = {p["podId"] for p in c.client.get(f"{pl}/api/v1/pods").json()}
    assert {pod["podId"], full["podId"]} <= listed
    # curl http://localhost:8070/api/v1/pods/20250119123456-pod123
    r = c.client.get(f"{pl}/api/v1/pods/20250119123456-pod123")
    assert r.status_code == 404 and r.json() == {"error": "pod not found"}
    assert c.client.get(f"{pl}/api/v1/pods/{pod['podId']}").json()["podId"] == pod["podId"]
    # curl -X DELETE http://localhost:8070/api/v1/pods/20250119123456-pod123
    r = c.client.delete(f"{pl}/api/v1/pods/20250119123456-pod123")
    assert r.status_code == 404 and r.json() == {"error": "pod not found"}
    for p in (pod, full):
        r = c.client.delete(f"{pl}/api/v1/pods/{p['podId']}")
        assert r.status_code == 200 and r.json() == {"message": "pod deleted successfully"}
        assert c.client.get(f"{pl}/api/v1/pods/{p['podId']}").status_code == 404
    assert not {pod["podId"], full["podId"]} & {p["podId"] for p in c.client.get(f"{pl}/api/v1/pods").json()}


@pytest.mark.parametrize("body, error", [
    ({"containers": [{"name": "a", "image": "x"}]}, "name is required"),
    ({"name": "p"}, "at least one container is required"),
    ({"name": "p", "containers": [{"image": "x"}]}, "all containers must have a name"),
    ({"name": "p", "containers": [{"name": "a"}]}, "all containers must have an image"),
    ({"name": "p", "containers": [{"name": "a", "image": "x"}, {"name": "a", "image": "y"}]},
     "container names must be unique within a pod"),
    ({"name": "p", "restartPolicy": "Sometimes", "containers": [{"name": "a", "image": "x"}]}, "restartPolicy"),
    ({"name": "P_Q", "containers": [{"name": "a", "image": "x"}]}, "name"),
    ({"name": "p", "containers": [{"name": "a", "image": "x", "privileged": True}]}, "unknown field privileged"),
    ({"name": "p", "hostNetwork": True, "containers": [{"name": "a", "image": "x"}]},
     "the host's network is not allowed"),
    ({"name": "p", "containers": [{"name": "a", "image": "x", "securityContext": {"privileged": True}}]},
     "privileged mode is not allowed"),
    ({"name": "p", "containers": [{"name": "a", "image": "x", "readinessProbe": {"type": "http", "httpPath": "/"}}]},
     "needs a port"),
    ({"name": "p", "containers": [{"name": "a", "image": "x", "resources": {"limits": {"memory": "lots"}}}]},
     "memory (bytes) must be"),
])
def test_bad_pods(server: tuple[Cluster, str], body: dict[str, Any], error: str) -> None:
    c, pl = server
    r = c.client.post(f"{pl}/api/v1/pods", json=body)
    assert r.status_code == 400 and list(r.json()) == ["error"] and error in r.json()["error"], r.text


def test_pod_and_service(server: tuple[Cluster, str], busybox_image: str) -> None:
    """A pod that serves HTTP, ready by its probe, behind the document's service; its status reported by
    its node; the service updated and deleted."""
    c, pl = server
    body = {"name": "web", "labels": {"app": "nginx"}, "restartPolicy": "Never",
            "containers": [{"name": "web", "image": busybox_image, "command": WEB,
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "resources": {"requests": {"cpu": 100, "memory": 64 << 20}},
                            "readinessProbe": {"type": "http", "httpPath": "/", "port": 8080, "periodSeconds": 1}}]}
    r = c.client.post(f"{pl}/api/v1/pods", json=body)
    assert r.status_code == 201, r.text
    pid = r.json()["podId"]

    def healthy() -> dict[str, Any] | None:
        p = c.get(f"{pl}/api/v1/pods/{pid}")
        return p if p["status"] == "running" and p["containers"][0].get("healthStatus") == "healthy" else None

    pod = wait_until(healthy, 30, what="the pod to be running and ready")
    ct = pod["containers"][0]
    assert ct["containerId"] and GO_TIME_RE.match(ct["startedAt"]) and pod["nodeId"]
    assert ct["resources"] == {"requests": {"cpu": 100, "memory": 64 << 20}}
    assert ct["readinessProbe"]["type"] == "http" and ct["readinessProbe"]["httpPath"] == "/"
    host_port = ct["ports"][0]["hostPort"]
    assert c.client.get(f"http://127.0.0.1:{host_port}/").text.startswith("hello from")

    # POST /api/v1/services, the document's body.
    doc = {"name": "web-service", "namespace": "default", "selector": {"app": "nginx"},
           "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    r = c.client.post(f"{pl}/api/v1/services", headers={"Content-Type": "application/json"}, json=doc)
    assert r.status_code == 201, r.text
    s = r.json()
    assert ID_RE.match(s["serviceId"]) and s["type"] == "ClusterIP" and s["selector"] == {"app": "nginx"}
    assert s["ports"] == [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]
    sid = s["serviceId"]
    # curl http://localhost:8070/api/v1/services/{id}/endpoints
    ep = c.get(f"{pl}/api/v1/services/{sid}/endpoints")
    assert ep["serviceId"] == sid and ep["serviceName"] == "web-service" and ep["namespace"] == "default"
    assert ep["subsets"] == [{"addresses": [{"ip": "127.0.0.1", "podId": pid, "nodeId": pod["nodeId"]}],
                              "ports": [{"name": "http", "port": host_port, "protocol": "TCP"}]}], ep
    # curl http://localhost:8070/api/v1/services ; ?namespace=production
    assert sid in {x["serviceId"] for x in c.client.get(f"{pl}/api/v1/services").json()}
    assert c.client.get(f"{pl}/api/v1/services", params={"namespace": "production"}).json() == []
    # curl http://localhost:8070/api/v1/services/{id}
    assert c.get(f"{pl}/api/v1/services/{sid}")["name"] == "web-service"
    # The document's own ids: no such service.
    for method, path in (("GET", "/api/v1/services/20250119123456-svc123"),
                         ("GET", "/api/v1/services/20250119123456-svc123/endpoints"),
                         ("DELETE", "/api/v1/services/20250119123456-svc123")):
        r = c.client.request(method, f"{pl}{path}")
        assert r.status_code == 404 and r.json() == {"error": "service not found"}, (path, r.text)
    # PUT /services/{id}: a selector nothing matches leaves no endpoints.
    r = c.client.put(f"{pl}/api/v1/services/{sid}", json={"selector": {"app": "other"}, "labels": {"tier": "x"}})
    assert r.status_code == 200 and r.json()["selector"] == {"app": "other"} and r.json()["labels"] == {"tier": "x"}
    assert c.get(f"{pl}/api/v1/services/{sid}/endpoints")["subsets"] == []
    assert c.client.put(f"{pl}/api/v1/services/{sid}", json={"name": "x"}).status_code == 400
    assert c.client.put(f"{pl}/api/v1/services/20250119123456-svc123", json={}).status_code == 404

    # PUT /pods/{id}/status: only from its node, only a step of the flow.
    node_id, secret = _node_secret(c)
    me = {"X-Corral-Node-Id": node_id, "X-Corral-Node-Secret": secret}
    url = f"{pl}/api/v1/pods/{pid}/status"
    assert c.client.put(url, json={"status": "failed"}).status_code == 403
    r = c.client.put(url, json={"status": "pending"}, headers=me)
    assert r.status_code == 400 and "placed by the coordinator" in r.json()["error"], r.text
    r = c.client.put(url, json={"status": "failed", "containers": [{"name": "web", "status": "terminated",
                                                                    "exitCode": 3}]}, headers=me)
    assert r.status_code == 200 and r.json()["status"] == "failed", r.text
    r = c.client.put(url, json={"status": "running"}, headers=me)
    assert r.status_code == 400 and "failed already" in r.json()["error"]

    # curl -X DELETE http://localhost:8070/api/v1/services/{id}
    r = c.client.delete(f"{pl}/api/v1/services/{sid}")
    assert r.status_code == 200 and r.json() == {"message": "service deleted"}
    assert c.client.get(f"{pl}/api/v1/services/{sid}").json() == {"error": "service not found"}
    assert c.client.get(f"{pl}/api/v1/services/{sid}/endpoints").status_code == 404
    out = c.client.post(f"{pl}/api/v1/prune").json()
    assert out["podsRemoved"] >= 1
    r = c.client.get(f"/v1/pods/{pid}")
    assert r.status_code == 404, r.text  # purged


@pytest.mark.parametrize("body, error", [
    ({"selector": {"app": "x"}, "ports": [{"port": 80}]}, "name is required"),
    ({"name": "s", "ports": [{"port": 80}]}, "selector is required"),
    ({"name": "s", "selector": {"app": "x"}}, "at least one port is required"),
    ({"name": "s", "selector": {"app": "x"}, "ports": [{"port": 70000}]}, "ports.0.port"),
    ({"name": "s", "type": "LoadBalancer", "selector": {"app": "x"}, "ports": [{"port": 80}]}, "ClusterIP or NodePort"),
    ({"name": "s", "sessionAffinity": "ClientIP", "selector": {"app": "x"}, "ports": [{"port": 80}]},
     "sessionAffinity"),
    ({"name": "S!", "selector": {"app": "x"}, "ports": [{"port": 80}]}, "not a valid service name"),
])
def test_bad_services(server: tuple[Cluster, str], body: dict[str, Any], error: str) -> None:
    c, pl = server
    r = c.client.post(f"{pl}/api/v1/services", json=body)
    assert r.status_code == 400 and error in r.json()["error"], r.text


def test_crashing_pod_shows_its_restarts(server: tuple[Cluster, str], busybox_image: str) -> None:
    """A container that keeps exiting: Podling's view shows its restartCount growing and the back-off."""
    c, pl = server
    body = {"name": "crash", "containers": [{"name": "app", "image": busybox_image,
                                             "command": ["sh", "-c", "echo bye; exit 3"]}]}
    pid = c.client.post(f"{pl}/api/v1/pods", json=body).json()["podId"]

    def backing_off() -> dict[str, Any] | None:
        p = c.get(f"{pl}/api/v1/pods/{pid}")
        ct = p["containers"][0]
        return p if ct.get("restartCount", 0) >= 1 and p.get("reason") == "BackOff" else None

    p = wait_until(backing_off, 40, interval=0.3, what="a restart and the back-off")
    assert "back-off" in p["message"] and p["restartPolicy"] == "Always", p
    assert p["containers"][0]["exitCode"] == 3 or p["containers"][0]["status"] == "running", p
    assert c.client.delete(f"{pl}/api/v1/pods/{pid}").status_code == 200


def test_without_auth_anyone_reports(cluster: Cluster, hello_image: str) -> None:
    """A server that checks no token (corral up --no-token): Podling's status report needs no node identity,
    as in Podling; a pending task is scheduled onto the node named in the report."""
    port = free_port()
    c = cluster.up("--no-token", "--dialect-port", f"podling={port}")
    pl = f"http://127.0.0.1:{port}"
    assert c.client.get(f"{pl}/health").json()["authEnabled"] is False
    waiting = c.client.post(f"{pl}/api/v1/tasks", json={"name": "w", "image": hello_image,
                                                        "resources": {"limits": {"memory": 1 << 50}}}).json()
    url = f"{pl}/api/v1/tasks/{waiting['taskId']}/status"
    r = c.client.put(url, json={"status": "scheduled"})
    assert r.status_code == 400 and "give nodeId" in r.json()["error"]
    r = c.client.put(url, json={"status": "scheduled", "nodeId": "nope"})
    assert r.status_code == 400 and r.json() == {"error": "no node 'nope'"}
    local = c.nodes()[0]["id"]
    r = c.client.put(url, json={"status": "scheduled", "nodeId": local})
    assert r.status_code == 200 and r.json()["status"] == "pending", r.text  # pinned; still too big to place
    r = c.client.put(url, json={"status": "failed", "error": "given up"})
    assert r.status_code == 200 and r.json()["status"] == "failed" and r.json()["error"] == "given up"


def test_task_status_document_body(distributed: tuple[Cluster, str, str], hello_image: str) -> None:
    """PUT /api/v1/tasks/{id}/status with the document's body, from the node the task is scheduled on (a
    worker stopped with SIGSTOP, so that the task stays scheduled until the report)."""
    c, _, _ = distributed
    w2 = next(w for w in c.workers if "w2" in " ".join(w.args))
    d = c.tmp / "w-w2"
    node_id, secret = (d / "node-id").read_text().strip(), (d / "node-secret").read_text().strip()
    me = {"X-Corral-Node-Id": node_id, "X-Corral-Node-Secret": secret}
    assert w2.popen is not None
    os.killpg(w2.popen.pid, signal.SIGSTOP)
    try:
        # What w2's Podling port would ask: run this task here.
        r = c.client.post(f"/v1/agent/nodes/{node_id}/podling/tasks/doc-status/execute",
                          headers={"Authorization": "Bearer cluster-secret", "X-Corral-Node-Secret": secret},
                          json={"task": {"taskId": "doc-status", "name": "doc", "image": hello_image}})
        assert r.status_code == 202, r.text
        c.wait_for("/api/v1/tasks/doc-status", {"scheduled"}, "status", timeout=10)
        # PUT /api/v1/tasks/{taskId}/status {"status": "running", "containerId": "docker-container-id"}
        r = c.client.put("/api/v1/tasks/doc-status/status", headers={"Content-Type": "application/json", **me},
                         content='{"status": "running", "containerId": "docker-container-id"}')
        assert r.status_code == 200, r.text
        t = r.json()
        assert t["status"] == "running" and t["containerId"] == "docker-container-id" and t["nodeId"] == node_id
        assert GO_TIME_RE.match(t["startedAt"])
        # Another node may not report for it.
        d1 = c.tmp / "w-w1"
        other = {"X-Corral-Node-Id": (d1 / "node-id").read_text().strip(),
                 "X-Corral-Node-Secret": (d1 / "node-secret").read_text().strip()}
        r = c.client.put("/api/v1/tasks/doc-status/status", json={"status": "completed"}, headers=other)
        assert r.status_code == 403, r.text
        r = c.client.put("/api/v1/tasks/doc-status/status", json={"status": "completed"}, headers=me)
        assert r.status_code == 200 and r.json()["status"] == "completed" and "finishedAt" in r.json()
    finally:
        os.killpg(w2.popen.pid, signal.SIGCONT)
