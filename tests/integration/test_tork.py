"""Tork's REST API on a real `corral up`: the seed's curl example, host processes and a container."""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness import Cluster
from tests.support import ID_RE, MISSING_IMAGE, MISSING_IMAGE_ERROR
from tests.support import TORK_DONE as DONE
from tests.support import TORK_TIME_RE as TIME_RE

SEED_YAML = """
name: sample job
tasks:
- name: sample task
  image: ubuntu:mantic
  run: echo hello world
"""


def _post(c: Cluster, body: str, ctype: str = "text/yaml", wait: bool = False) -> dict[str, Any]:
    r = c.client.post("/jobs" + ("?wait=true" if wait else ""), content=body, headers={"Content-Type": ctype})
    assert r.status_code == 200, r.text
    return dict(r.json())


def _job(c: Cluster, job_id: str) -> dict[str, Any]:
    return c.get(f"/jobs/{job_id}")


def _wait(c: Cluster, job_id: str, states: set[str] = DONE) -> dict[str, Any]:
    return c.wait_for(f"/jobs/{job_id}", states)


def test_seed_example_and_a_container(standalone: Cluster, busybox_image: str) -> None:
    c = standalone
    # The seed's curl example, with an image that no machine can have (this one may hold ubuntu:mantic).
    job = _post(c, SEED_YAML.replace("ubuntu:mantic", MISSING_IMAGE))
    assert ID_RE.match(job["id"]) and job["name"] == "sample job" and job["state"] == "PENDING"
    assert TIME_RE.match(job["createdAt"])
    failed = _wait(c, job["id"])
    assert failed["state"] == "FAILED" and failed["execution"][0]["error"].startswith(MISSING_IMAGE_ERROR), failed
    assert failed["tasks"] == [{"name": "sample task", "image": MISSING_IMAGE, "run": "echo hello world"}]
    ok = _post(c, SEED_YAML.replace("ubuntu:mantic", busybox_image), wait=True)
    assert ok["state"] == "COMPLETED" and TIME_RE.match(ok["completedAt"])
    parts = c.client.get(f"/jobs/{ok['id']}/log").json()
    assert parts["items"][0]["contents"] == "hello world\n" and parts["totalPages"] == 1


def test_jobs_host_processes(standalone: Cluster) -> None:
    c = standalone
    assert c.client.get("/health").json() == {"status": "UP", "version": "0.1.0"}
    body = ('{"name": "two steps", "tags": ["blue"], "description": "d", "inputs": {"a": "1"}, "priority": 3,'
            ' "tasks": [{"name": "one", "run": "echo one; echo two; echo three", "env": {"X": "1"}},'
            ' {"name": "two", "cmd": ["echo", "second"], "timeout": "5s", "retry": {"limit": 1}}]}')
    done = _post(c, body, "application/json", wait=True)
    assert done["state"] == "COMPLETED"
    d = _job(c, done["id"])
    assert d["taskCount"] == 2 and d["position"] == 3
    assert d["tasks"][1] == {"name": "two", "cmd": ["echo", "second"], "timeout": "5s", "retry": {"limit": 1}}
    ex = d["execution"]
    assert [e["position"] for e in ex] == [1, 2] and [e["state"] for e in ex] == ["COMPLETED"] * 2
    for e in ex:
        assert ID_RE.match(e["id"]) and e["jobId"] == d["id"] and e["queue"] == "default" and e["nodeId"]
        assert all(TIME_RE.match(e[k]) for k in ("createdAt", "scheduledAt", "startedAt", "completedAt"))
    assert ex[0]["run"] == "echo one; echo two; echo three" and "error" not in ex[0]

    # logs, newest first, paged; one task's log by its execution id
    log = c.client.get(f"/jobs/{d['id']}/log", params={"size": 2}).json()
    assert log["totalPages"] == 2 and log["number"] == 1
    assert [p["contents"] for p in log["items"]] == ["second\n", "three\n"]
    assert [p["number"] for p in log["items"]] == [4, 3]
    p2 = c.client.get(f"/jobs/{d['id']}/log", params={"size": 2, "page": 2}).json()
    assert [p["contents"] for p in p2["items"]] == ["two\n", "one\n"]
    t = c.client.get(f"/tasks/{ex[1]['id']}/log").json()
    assert [p["contents"] for p in t["items"]] == ["second\n"]
    assert c.client.get("/tasks/nope/log").json() == {"message": "task not found"}

    # restart rules
    r = c.client.put(f"/jobs/{d['id']}/restart")
    assert r.status_code == 400 and r.json() == {"message": "job is COMPLETED and can not be restarted"}
    bad = _post(c, '{"name": "bad", "tasks": [{"run": "exit 3"}]}', "application/json", wait=True)
    assert bad["state"] == "FAILED"
    assert c.client.put(f"/jobs/{bad['id']}/restart").json() == {"status": "OK"}
    assert _wait(c, bad["id"])["state"] == "FAILED"
    assert len(_job(c, bad["id"])["execution"]) == 2

    # cancel a running job, then again
    slow = _post(c, "name: slow\ntasks:\n- run: sleep 30\n", "application/x-yaml")
    _wait(c, slow["id"], {"RUNNING"})
    assert c.client.put(f"/jobs/{slow['id']}/cancel").json() == {"status": "OK"}
    r = c.client.put(f"/jobs/{slow['id']}/cancel")
    assert r.status_code == 400 and r.json() == {"message": "job is not running"}
    assert _job(c, slow["id"])["state"] == "CANCELLED"
    assert c.client.get("/jobs/" + "0" * 32).json() == {"message": "job not found"}

    # listing: newest first, paging, q and tag:
    for i in range(3):
        _post(c, f"name: page job {i}\ntags: [paged]\ntasks:\n- run: 'true'\n")
    lst = c.client.get("/jobs", params={"size": 2}).json()
    assert lst["number"] == 1 and lst["size"] == 2 and lst["totalItems"] == 6 and lst["totalPages"] == 3
    assert [j["name"] for j in lst["items"]] == ["page job 2", "page job 1"]
    p3 = c.client.get("/jobs", params={"size": 2, "page": 3}).json()
    assert [j["name"] for j in p3["items"]] == ["bad", "two steps"]
    assert c.client.get("/jobs", params={"q": "slow"}).json()["totalItems"] == 1
    tagged = c.client.get("/jobs", params={"q": "tag:paged", "size": 2, "page": 2}).json()
    assert tagged["totalItems"] == 3 and [j["name"] for j in tagged["items"]] == ["page job 0"]
    both = c.client.get("/jobs", params={"q": "job 1 tag:paged"}).json()
    assert [j["name"] for j in both["items"]] == ["page job 1"]
    # As Tork's handler: the size is brought within 1-20 and a page below 1 is page 1, not refused.
    big = c.client.get("/jobs", params={"size": 50, "page": 0}).json()
    assert (big["number"], big["size"], big["totalPages"], big["totalItems"]) == (1, 6, 1, 6)
    one = c.client.get("/jobs", params={"size": 0, "page": -2}).json()
    assert (one["number"], one["size"], one["totalPages"]) == (1, 1, 6)
    assert c.client.get("/jobs", params={"page": 10**12}).json()["items"] == []


@pytest.mark.parametrize(("ctype", "body", "message"), [
    ("text/plain", "name: x\ntasks:\n- run: 'true'\n", "content type 'text/plain' is not accepted"),
    ("text/yaml", "name: x\ntasks:\n- name: p\n  parallel:\n    tasks: []\n",
     "tasks.0.parallel.tasks: List should have at least 1 item"),
    ("text/yaml", "name: x\npermissions: []\ntasks:\n- run: 'true'\n", "permissions is not supported yet"),
    ("text/yaml", "name: x\ntasks:\n- run: 'true'\n  probe: {port: 80}\n",
     "tasks.0: Value error, mounts, sidecars, networks, registry, ports and probe need an image"),
    ("text/yaml", "name: x\ntasks:\n- run: 'true'\n  parallel: {tasks: [{run: 'true'}]}\n",
     "tasks.0: Value error, a parallel task runs other tasks: it takes no run"),
    ("text/yaml", "name: x\ntasks:\n- run: 'true'\n  limits: {memory: lots}\n", "tasks[0].limits.memory: 'lots'"),
    ("text/yaml", "name: x\ntasks:\n- run: 'true'\n  colour: red\n", "tasks[0].colour is not a known Tork field"),
    ("text/yaml", "name: x\ntasks: []\n", "tasks: a job needs at least one task"),
    ("text/yaml", "name: x\ntasks:\n- name: t\n", "tasks.0: Value error"),  # no image, nothing to run
    ("application/json", "{not json", "the job cannot be parsed"),
])
def test_bad_jobs(module_standalone: Cluster, ctype: str, body: str, message: str) -> None:
    """One `corral up` for every case (tests/conftest.py): a refused job leaves nothing behind."""
    r = module_standalone.client.post("/jobs", content=body, headers={"Content-Type": ctype})
    assert r.status_code == (415 if ctype == "text/plain" else 400) and list(r.json()) == ["message"]
    assert r.json()["message"].startswith(message), r.json()


def test_nodes_and_queues(standalone: Cluster) -> None:
    c = standalone
    nodes = c.client.get("/nodes").json()
    assert nodes[0]["name"] == "Coordinator" and nodes[0]["status"] == "UP" and nodes[0]["version"] == "0.1.0"
    assert ID_RE.match(nodes[0]["id"]) and TIME_RE.match(nodes[0]["startedAt"])
    worker = nodes[1]
    assert worker["name"] == "Worker" and worker["status"] == "UP" and worker["queue"] == "default"
    assert isinstance(worker["cpuPercent"], float) and TIME_RE.match(worker["lastHeartbeatAt"])
    slow = _post(c, "name: q\ntasks:\n- run: sleep 30\n")
    _wait(c, slow["id"], {"RUNNING"})
    parked = _post(c, "name: parked\ntasks:\n- run: 'true'\n  queue: nobody\n")
    qs = {q["name"]: q for q in c.client.get("/queues").json()}
    assert qs["default"] == {"name": "default", "size": 0, "subscribers": 1, "unacked": 1}
    assert qs["nobody"] == {"name": "nobody", "size": 1, "subscribers": 0, "unacked": 0}
    r = c.client.delete("/queues/default")
    assert r.status_code == 400 and r.json() == {"message": "the default queue can not be deleted"}
    assert c.client.delete("/queues/missing").status_code == 404
    assert c.client.delete("/queues/nobody").json() == {"status": "OK", "cancelled": 1}
    assert _job(c, parked["id"])["state"] == "CANCELLED"
    assert c.client.put(f"/jobs/{slow['id']}/cancel").json() == {"status": "OK"}


def test_get_task_by_execution_or_task_id(standalone: Cluster) -> None:
    r = standalone.client.post("/jobs", json={"name": "t", "tasks": [
        {"name": "out", "var": "x", "run": "printf 7 > $TORK_OUTPUT"}]})
    job = standalone.wait_for(f"/jobs/{r.json()['id']}", {"COMPLETED", "FAILED"})
    run = job["execution"][0]
    by_exec = standalone.get(f"/tasks/{run['id']}")
    by_task = standalone.get(f"/tasks/{run['taskId']}")
    assert by_exec == by_task
    assert by_exec["state"] == "COMPLETED" and by_exec["result"] == "7" and by_exec["jobId"] == job["id"]
    assert by_exec["var"] == "x" and by_exec["progress"] == 100.0
    r = standalone.client.get("/tasks/" + "0" * 32)
    assert r.status_code == 404 and r.json() == {"message": "task not found"}
