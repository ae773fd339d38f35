"""The CloudAI REST and WebSocket API on a real `corral up`, with real containers and a real worker process.

Each curl example of the CloudAI document is sent as written; the WebSocket is read with a real client.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.harness import Cluster, wait_until

TERMINAL = {"completed", "failed", "cancelled"}
DOC_TASK = {"user_id": "user-123", "docker_image": "ubuntu:latest", "command": "echo Hello World",
            "req_cpu": 1.0, "req_memory": 2.0, "req_storage": 5.0, "req_gpu": 0.0}
ENV = {"CORRAL_TELEMETRY_INTERVAL": "1", "CORRAL_RATE_LIMIT_SUBMIT": "10000/minute",
       "CORRAL_RATE_LIMIT_READ": "100000/minute"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("cloudai"))
    c.up("--node-ttl", "3", env=ENV)
    yield c
    c.close()


def _ws(c: Cluster) -> ClientConnection:
    headers = {"Authorization": f"Bearer {c.token}"} if c.token else None
    return connect(f"ws://127.0.0.1:{c.port}/ws/telemetry", open_timeout=10, additional_headers=headers)


def _task(c: Cluster, task_id: str) -> dict[str, Any]:
    return c.get(f"/api/tasks/{task_id}")


def _wait(c: Cluster, task_id: str, states: set[str] = TERMINAL, timeout: float = 30) -> dict[str, Any]:
    return c.wait_for(f"/api/tasks/{task_id}", states, "status", timeout)


def _submit(c: Cluster, **fields: Any) -> str:
    r = c.client.post("/api/tasks", json={"user_id": "tester", "req_cpu": 0.1, **fields})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "queued"
    return str(r.json()["task_id"])


def _error(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    return dict(body["error"])


def test_curl_examples(server: Cluster, busybox_image: str) -> None:
    # curl -X POST http://localhost:8080/api/tasks -H "Content-Type: application/json" -d '{...}', with the
    # test image for ubuntu:latest: nothing can be pulled here, and one outcome is checked, not either
    doc = {**DOC_TASK, "docker_image": busybox_image}
    raw = json.dumps(doc, indent=2).encode()
    r = server.client.post("/api/tasks", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "queued" and body["message"] == "Task submitted successfully"
    assert body["task_id"].startswith("task-") and body["task_id"][5:].isdigit()

    t = _task(server, body["task_id"])
    assert {"task_id", "status", "created_at", "started_at", "worker_id"} <= set(t)
    assert t["task_id"] == body["task_id"] and t["status"] in ("queued", "running", "completed") and t["created_at"]
    assert {k: t[k] for k in DOC_TASK} == doc
    done = _wait(server, body["task_id"], timeout=60)
    assert done["status"] == "completed" and done["started_at"] and done["worker_id"], done
    assert done["exit_code"] == 0 and done["progress"] == 100.0, done

    # curl http://localhost:8080/api/tasks?status=running, with a task running (an empty list proves nothing)
    slow = _submit(server, docker_image=busybox_image, command="sleep 30")
    _wait(server, slow, {"running"})
    r = server.client.get("/api/tasks?status=running")
    assert r.status_code == 200
    page = r.json()
    assert set(page) == {"tasks", "total", "limit", "offset"} and page["limit"] == 50 and page["offset"] == 0
    assert slow in [x["task_id"] for x in page["tasks"]] and page["total"] == len(page["tasks"])
    assert [x["status"] for x in page["tasks"]] == ["running"] * len(page["tasks"])

    r = server.client.get("/api/workers")
    assert r.status_code == 200
    w = r.json()["workers"][0]
    assert {"worker_id", "worker_ip", "total_cpu", "total_memory", "total_storage", "total_gpu", "allocated_cpu",
            "allocated_memory", "allocated_storage", "allocated_gpu", "available_cpu", "available_memory",
            "available_storage", "available_gpu", "is_active", "last_heartbeat", "registered_at"} <= set(w)
    node = server.nodes()[0]
    assert w["worker_id"] == node["id"] and w["name"] == "local" and w["worker_ip"]
    assert w["total_cpu"] == node["capacity"]["cpu"] and w["total_gpu"] == node["capacity"]["gpu"]
    assert w["total_memory"] > 0 and w["allocated_cpu"] >= 0.1  # the running task's request
    for k in ("cpu", "memory", "storage", "gpu"):
        assert w[f"available_{k}"] == round(max(w[f"total_{k}"] - w[f"allocated_{k}"], 0.0), 3), (k, w)
    assert w["is_active"] is True and time.time() - 60 < w["last_heartbeat"] <= time.time() + 1
    r = server.client.get(f"/api/workers/{w['worker_id']}")
    assert r.status_code == 200 and slow in [t["task_id"] for t in r.json()["running_tasks"]]
    assert server.client.get("/api/workers/local").json()["worker_id"] == w["worker_id"]  # by name too
    _error(server.client.get("/api/workers/nobody"), 404, "NOT_FOUND")

    r = server.client.get("/api/cluster/status")
    assert r.status_code == 200
    st = r.json()
    assert {k: st[k] for k in ("total_workers", "active_workers", "total_cpu", "total_gpu", "available_cpu")} == {
        "total_workers": 1, "active_workers": 1, "total_cpu": w["total_cpu"], "total_gpu": w["total_gpu"],
        "available_cpu": w["available_cpu"]}
    assert st["total_memory"] == pytest.approx(w["total_memory"], abs=0.001)
    assert st["total_storage"] == pytest.approx(w["total_storage"], abs=0.001)
    assert st["running_tasks"] >= 1 and st["completed_tasks"] >= 1 and st["total_tasks"] >= 2
    assert st["total_tasks"] >= st["running_tasks"] + st["queued_tasks"] + st["completed_tasks"]
    assert server.client.post(f"/api/tasks/{slow}/cancel").status_code == 200


def test_validation_errors_name_the_field(server: Cluster) -> None:
    base = {"user_id": "u1", "docker_image": "busybox", "command": "true"}
    cases = [
        ({**base, "req_cpu": 0}, "req_cpu", "must be greater than 0"),
        ({**base, "req_cpu": -1}, "req_cpu", "must be greater than 0"),
        ({**base, "req_cpu": "lots"}, "req_cpu", "must be a number"),
        ({**base, "req_memory": -2}, "req_memory", "cannot be negative"),
        ({**base, "req_gpu": 0.5}, "req_gpu", "must be a whole number: GPUs are placed whole"),
        ({**base, "req_cpu": 5000}, "req_cpu", "less than or equal to 1024"),
        ({k: v for k, v in base.items() if k != "user_id"}, "user_id", "is required"),
        ({**base, "command": " "}, "command", "cannot be empty"),
        ({**base, "docker_image": "two words"}, "docker_image", "cannot contain spaces"),
        ({**base, "user_id": "x" * 200}, "user_id", "must be at most 95 characters"),
    ]
    for body, field, reason in cases:
        err = _error(server.client.post("/api/tasks", json=body), 400, "INVALID_REQUEST")
        assert err["details"]["field"] == field, (body, err)
        assert reason in err["details"]["reason"], (body, err)
    err = _error(server.client.post("/api/tasks", content=b"{oops", headers={"Content-Type": "application/json"}),
                 400, "INVALID_REQUEST")
    assert "not valid JSON" in err["message"]
    bad: list[tuple[dict[str, str | int], str]] = [
        ({"status": "sleeping"}, "status"), ({"limit": 0}, "limit"), ({"limit": 5000}, "limit"),
        ({"offset": -1}, "offset"), ({"limit": "many"}, "limit")]
    for params, field in bad:
        err = _error(server.client.get("/api/tasks", params=params), 400, "INVALID_REQUEST")
        assert err["details"]["field"] == field, (params, err)
    _error(server.client.get("/api/tasks/task-999999"), 404, "NOT_FOUND")
    _error(server.client.get("/api/tasks/whatever"), 404, "NOT_FOUND")
    _error(server.client.post("/api/tasks/task-999999/cancel"), 404, "NOT_FOUND")


def test_placement_honours_requests_and_says_why_a_task_waits(server: Cluster) -> None:
    big = _submit(server, docker_image="busybox", command="true", req_cpu=1000.0)
    # The reason is written by a scheduling pass that did not place it: that pass is the evidence.
    t = wait_until(lambda: "1000 CPU" in ((x := _task(server, big))["reason"] or "") and x, 10,
                   what="a reason naming the CPU shortfall")
    assert t["status"] == "queued" and t["worker_id"] is None and t["req_cpu"] == 1000.0
    gpu = _submit(server, docker_image="busybox", command="true", req_gpu=64)
    wait_until(lambda: "64 GPUs" in (_task(server, gpu)["reason"] or ""), 10, what="a GPU reason")
    # cancelling a queued task
    r = server.client.post(f"/api/tasks/{big}/cancel")
    assert r.status_code == 200 and r.json() == {"task_id": big, "status": "cancelled",
                                                 "message": "Task cancellation requested"}
    assert server.client.post(f"/api/tasks/{gpu}/cancel").status_code == 200
    err = _error(server.client.post(f"/api/tasks/{big}/cancel"), 409, "CONFLICT")
    assert "already cancelled" in err["message"]


@pytest.mark.docker
def test_cancel_a_running_task(server: Cluster, busybox_image: str, docker_client: docker.DockerClient) -> None:
    tid = _submit(server, docker_image=busybox_image, command="sleep 1; echo 25 > $TORK_PROGRESS; sleep 30",
                  req_cpu=0.5, req_memory=0.25)
    t = _wait(server, tid, {"running"}, timeout=30)
    assert t["started_at"] and t["worker_id"]
    # The task's own progress report ($TORK_PROGRESS) shows as the task's progress.
    wait_until(lambda: _task(server, tid)["progress"] == 25.0, 10, what="progress 25")
    w = server.client.get(f"/api/workers/{t['worker_id']}").json()
    assert tid in [x["task_id"] for x in w["running_tasks"]]
    assert w["allocated_cpu"] >= 0.5 and w["allocated_memory"] >= 0.25
    job_id = server.client.get("/v1/jobs", params={"tag": "user:tester", "limit": 1}).json()["items"][0]["id"]
    wait_until(lambda: docker_client.api.containers(filters={"label": f"corral.job={job_id}"}), 10,
               what="its container")
    r = server.client.post(f"/api/tasks/{tid}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert _task(server, tid)["status"] == "cancelled"
    wait_until(lambda: docker_client.api.containers(all=True, filters={"label": f"corral.job={job_id}"}) == [], 15,
               what="the container to be removed")
    err = _error(server.client.post(f"/api/tasks/{tid}/cancel"), 409, "CONFLICT")
    assert err["details"] == {"task_id": tid, "status": "cancelled"}
    assert _task(server, tid)["progress"] == 100.0


def test_list_filters_and_paging(server: Cluster) -> None:
    user = f"user-{uuid.uuid4().hex[:6]}"
    ids = [_submit(server, user_id=user, docker_image="busybox", command="true", req_cpu=1000.0) for _ in range(5)]
    r = server.client.get("/api/tasks", params={"user_id": user})
    page = r.json()
    assert page["total"] == 5 and [t["task_id"] for t in page["tasks"]] == ids[::-1]
    assert all(t["user_id"] == user and t["status"] == "queued" for t in page["tasks"])
    p2 = server.client.get("/api/tasks", params={"user_id": user, "limit": 2, "offset": 2}).json()
    assert p2["total"] == 5 and p2["limit"] == 2 and p2["offset"] == 2
    assert [t["task_id"] for t in p2["tasks"]] == ids[::-1][2:4]
    assert server.client.get("/api/tasks", params={"user_id": user, "status": "queued"}).json()["total"] == 5
    assert server.client.get("/api/tasks", params={"user_id": user, "status": "pending"}).json()["total"] == 5
    assert server.client.get("/api/tasks", params={"user_id": user, "status": "running"}).json()["total"] == 0
    server.client.post(f"/api/tasks/{ids[0]}/cancel")
    cancelled = server.client.get("/api/tasks", params={"user_id": user, "status": "cancelled"}).json()
    assert [t["task_id"] for t in cancelled["tasks"]] == [ids[0]]
    for t in ids[1:]:
        server.client.post(f"/api/tasks/{t}/cancel")


def _until(ws: ClientConnection, pred: Any, timeout: float, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {what} within {timeout}s")
        msg = json.loads(ws.recv(timeout=left))
        if pred(msg):
            return dict(msg)


@pytest.mark.docker
def test_telemetry_websocket(server: Cluster, busybox_image: str) -> None:
    with _ws(server) as ws:
        first = json.loads(ws.recv(timeout=5))
        assert first["type"] == "telemetry_update" and first["timestamp"].endswith("Z")
        assert set(first["data"]) == {"workers", "tasks", "cluster"}
        w = first["data"]["workers"][0]
        assert {"worker_id", "cpu_usage", "memory_usage", "active_tasks", "last_heartbeat"} <= set(w)
        tid = _submit(server, docker_image=busybox_image, command="sleep 1")
        started = _until(ws, lambda m: m["type"] == "task_started" and m["data"]["task_id"] == tid, 20,
                         "task_started")
        t_started = time.time()
        assert started["data"]["worker_id"] and started["data"]["user_id"] == "tester"
        update = _until(ws, lambda m: m["type"] == "telemetry_update"
                        and any(t["task_id"] == tid for t in m["data"]["tasks"]), 3, "an update with the task")
        task = next(t for t in update["data"]["tasks"] if t["task_id"] == tid)
        assert task["status"] == "running" and task["progress"] == 0.0
        assert isinstance(update["data"]["workers"][0]["cpu_usage"], float | int)
        assert update["data"]["cluster"]["active_workers"] >= 1
        done = _until(ws, lambda m: m["type"] == "task_completed" and m["data"]["task_id"] == tid, 20,
                      "task_completed")
        assert done["data"]["status"] == "completed" and done["data"]["progress"] == 100.0
        assert done["data"]["exit_code"] == 0
        assert time.time() - t_started < 10

        # A quick host-process job started and ended between two reads: both messages still come.
        r = server.client.post("/v1/jobs", json={"tasks": [{"run": "true"}]})
        seq_id = r.json()["id"]
        quick = _until(ws, lambda m: m["type"] in ("task_started", "task_completed"), 5, "a quick job's start")
        assert quick["type"] == "task_started"
        fin = _until(ws, lambda m: m["type"] == "task_completed", 5, "a quick job's end")
        assert fin["data"]["task_id"] == quick["data"]["task_id"]
        assert server.client.get(f"/api/tasks/{seq_id}").json()["task_id"] == fin["data"]["task_id"]


JS_SNIPPET = """const ws = new WebSocket('ws://localhost:PORT/ws/telemetry');

ws.onmessage = (event) => {
  const data = JSON.parse(event.data);
  console.log('Telemetry:', data);
};
"""


def test_javascript_snippet_in_node(server: Cluster, tmp_path: Path) -> None:
    """The document's JavaScript, verbatim but for the port, in Node's WebSocket (the browsers' API)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("no node here to run the JavaScript snippet")
    has_ws = subprocess.run([node, "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"]).returncode == 0
    flags = [] if has_ws else ["--experimental-websocket"]
    if subprocess.run([node, *flags, "-e", "new WebSocket('ws://127.0.0.1:1')"], capture_output=True).returncode:
        pytest.skip("this node has no WebSocket")
    script = tmp_path / "snippet.js"
    # A browser's WebSocket cannot send a header: the access token goes in the query string.
    script.write_text(JS_SNIPPET.replace("PORT", str(server.port)).replace(
        "/ws/telemetry", f"/ws/telemetry?token={server.token}"))
    with pytest.raises(subprocess.TimeoutExpired) as ran:  # it listens until stopped
        subprocess.run([node, *flags, str(script)], capture_output=True, text=True, timeout=2.5)
    out = ran.value.stdout
    text = out.decode() if isinstance(out, bytes) else (out or "")
    assert text.count("Telemetry:") >= 2 and "type: 'telemetry_update'" in text, text


def test_worker_events(server: Cluster) -> None:
    with _ws(server) as ws:
        ws.recv(timeout=5)
        w = server.add_worker("extra", "--runtime", "process", "--queue", "elsewhere")
        reg = _until(ws, lambda m: m["type"] == "worker_registered", 10, "worker_registered")
        assert reg["data"]["name"] == "extra"
        workers = server.client.get("/api/workers").json()["workers"]
        assert any(x["name"] == "extra" and x["is_active"] for x in workers)
        w.kill9()
        gone = _until(ws, lambda m: m["type"] == "worker_disconnected", 15, "worker_disconnected")
        assert gone["data"]["worker_id"] == reg["data"]["worker_id"]
        st = server.client.get("/api/cluster/status").json()
        assert st["total_workers"] == st["active_workers"] + 1


def test_rate_limits(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    try:
        c.up(env={"CORRAL_RATE_LIMIT_SUBMIT": "2/minute", "CORRAL_RATE_LIMIT_READ": "3/minute",
                  "CORRAL_RATE_LIMIT_WEBSOCKETS": "1", "CORRAL_RATE_LIMIT_ROUTES": "POST /api/jobs=1/minute"})
        body = {"user_id": "u", "docker_image": "busybox", "command": "true", "req_cpu": 1000.0}
        for i in range(2):
            r = c.client.post("/api/tasks", json=body)
            assert r.status_code == 200 and r.headers["X-RateLimit-Limit"] == "2"
            assert r.headers["X-RateLimit-Remaining"] == str(1 - i)
        r = c.client.post("/api/tasks", json=body)
        err = _error(r, 429, "RATE_LIMITED")
        assert 1 <= int(r.headers["Retry-After"]) <= 60 and r.headers["X-RateLimit-Remaining"] == "0"
        assert int(r.headers["X-RateLimit-Reset"]) >= int(time.time())
        assert "rate limit" in err["message"]
        for _ in range(3):
            assert c.client.get("/api/cluster/status").status_code == 200
        r = c.client.get("/api/tasks")
        _error(r, 429, "RATE_LIMITED")
        assert "Retry-After" in r.headers
        assert c.client.get("/v1/jobs").status_code == 200  # the native API is not limited by default

        with _ws(c) as ws:
            assert json.loads(ws.recv(timeout=5))["type"] == "telemetry_update"
            with pytest.raises(InvalidStatus) as denied:
                _ws(c)
            assert denied.value.response.status_code == 429
            assert denied.value.response.headers["Retry-After"]
        wait_until(lambda: _ws_opens(c), 5, what="a connection once the first one closed")

        # Any route can be limited by configuration: here nomad-lite's submit, in nomad-lite's error shape.
        assert c.client.post("/api/jobs", json={"command": "true"}).status_code == 200
        r = c.client.post("/api/jobs", json={"command": "true"})
        assert r.status_code == 429 and "rate limit" in r.json()["error"] and r.headers["Retry-After"]
    finally:
        c.close()


def _ws_opens(c: Cluster) -> bool:
    try:
        with _ws(c) as ws:
            ws.recv(timeout=5)
        return True
    except InvalidStatus:
        return False
