"""The nomad-lite REST API on a real `corral up`, with real host processes and real containers.

Each curl example of the nomad-lite document is sent as written (same method, path and body).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.harness import TERMINAL, Cluster, wait_until
from tests.support import ISO_TIME_RE as TIME_RE
from tests.support import MISSING_IMAGE, MISSING_IMAGE_ERROR, UUID_RE


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("nomadlite"))
    c.up()
    yield c
    c.close()


def _job(c: Cluster, job_id: str) -> dict[str, Any]:
    return c.get(f"/api/jobs/{job_id}")


def _wait(c: Cluster, job_id: str, states: set[str] = TERMINAL, timeout: float = 30) -> dict[str, Any]:
    return c.wait_for(f"/api/jobs/{job_id}", states, "status", timeout)


def _submit(c: Cluster, body: dict[str, Any]) -> str:
    r = c.client.post("/api/jobs", json=body)
    assert r.status_code == 200, r.text
    return str(r.json()["job_id"])


def test_curl_examples(server: Cluster) -> None:
    # curl http://localhost:8081/api/cluster
    r = server.client.get("/api/cluster")
    assert r.status_code == 200
    cl = r.json()
    assert {"node_id", "role", "current_term", "leader_id", "commit_index", "last_applied", "log_length",
            "nodes"} <= set(cl)
    assert cl["role"] == "leader" and cl["leader_id"] == cl["node_id"] == 1
    assert isinstance(cl["current_term"], int) and cl["current_term"] > 0
    assert cl["nodes"][0] == {"node_id": 1, "address": f"127.0.0.1:{server.port}", "is_alive": True,
                              "role": "coordinator", "name": f"http://127.0.0.1:{server.port}"}  # its id
    workers = cl["nodes"][1:]
    assert [(w["name"], w["role"], w["is_alive"]) for w in workers] == [("local", "worker", True)], cl["nodes"]
    assert isinstance(workers[0]["node_id"], int) and workers[0]["node_id"] != 1 and workers[0]["address"]
    before = cl["commit_index"]

    # curl -X POST .../api/jobs -H "Content-Type: application/json" -d '{"command": "echo hello"}'
    r = server.client.post("/api/jobs", content=b'{"command": "echo hello"}',
                           headers={"Content-Type": "application/json"})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"job_id", "status"} and body["status"] == "pending" and UUID_RE.match(body["job_id"])
    job_id = body["job_id"]

    # The image example, with an image that no machine can have (this one may hold python:3.12-alpine).
    example = b"""{"command": "python3 -c 'print(42)'", "image": "python:3.12-alpine"}"""
    example = example.replace(b"python:3.12-alpine", MISSING_IMAGE.encode())
    r = server.client.post("/api/jobs", content=example, headers={"Content-Type": "application/json"})
    assert r.status_code == 200 and r.json()["status"] == "pending"
    py = r.json()["job_id"]

    # curl http://localhost:8081/api/jobs
    done = _wait(server, job_id)
    jobs = server.client.get("/api/jobs").json()
    assert isinstance(jobs, list)
    listed = next(j for j in jobs if j["id"] == job_id)
    assert listed == done
    assert {k: listed[k] for k in ("id", "command", "status", "output", "error")} == {
        "id": job_id, "command": "echo hello", "status": "completed", "output": "hello\n", "error": None}
    assert isinstance(listed["executed_by"], int) and listed["executed_by"] > 0
    assert TIME_RE.match(listed["created_at"]) and TIME_RE.match(listed["completed_at"])
    # executed_by names a node that /api/cluster lists
    assert listed["executed_by"] in {n["node_id"] for n in server.client.get("/api/cluster").json()["nodes"]}

    pyjob = _wait(server, py)
    assert pyjob["status"] == "failed" and MISSING_IMAGE_ERROR in pyjob["error"], pyjob
    assert pyjob["image"] == MISSING_IMAGE and pyjob["output"] == ""

    # curl -X DELETE .../api/jobs/<id> on a finished job: 400 with the real state
    r = server.client.delete(f"/api/jobs/{job_id}")
    assert r.status_code == 400
    assert r.json() == {"success": False, "error": "job is already completed"}

    # curl http://localhost:8081/health/live and /health/ready
    r = server.client.get("/health/live")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = server.client.get("/health/ready")
    assert r.status_code == 200 and r.json() == {"status": "ok", "leader_id": 1}

    after = server.client.get("/api/cluster").json()
    assert after["commit_index"] > before and after["last_applied"] == after["log_length"] == after["commit_index"]


def test_bad_input_is_a_400_that_says_why(server: Cluster) -> None:
    cases = [
        ({"command": ""}, "command is empty"),
        ({"command": "   "}, "command is empty"),
        ({}, "command is required"),
        ({"command": 42}, "command must be a string"),
        ({"command": "é" * 513}, "command is 1026 bytes; at most 1024 are accepted"),
        ({"command": "true", "image": "has space"}, "image"),
    ]
    for body, message in cases:
        r = server.client.post("/api/jobs", json=body)
        assert r.status_code == 400, (body, r.text)
        assert message in r.json()["error"], (body, r.json())
    assert server.client.post("/api/jobs", json={"command": "x" * 1024}).status_code == 200
    r = server.client.post("/api/jobs", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]

    r = server.client.delete("/api/jobs/not-a-uuid")
    assert r.status_code == 400 and r.json()["success"] is False and "malformed job id" in r.json()["error"]
    missing = str(uuid.uuid4())
    r = server.client.delete(f"/api/jobs/{missing}")
    assert r.status_code == 404 and r.json() == {"success": False, "error": f"job {missing} not found"}
    assert server.client.get(f"/api/jobs/{missing}").status_code == 404

    for params, message in [({"status": "sleeping"}, "unknown status"), ({"page_token": "zzz"}, "page_token"),
                            ({"page_size": "-1"}, "page_size"), ({"page_size": "many"}, "page_size"),
                            ({"created_after_ms": "-5"}, "created_after_ms")]:
        r = server.client.get("/api/jobs", params=params)
        assert r.status_code == 400, (params, r.text)
        assert message in r.json()["error"], (params, r.json())


@pytest.mark.docker
def test_cancel_a_running_container(server: Cluster, busybox_image: str, docker_client: docker.DockerClient) -> None:
    job_id = _submit(server, {"command": "echo started; sleep 30", "image": busybox_image})
    hex_id = uuid.UUID(job_id).hex
    _wait(server, job_id, {"running"}, timeout=30)
    wait_until(lambda: docker_client.api.containers(filters={"label": f"corral.job={hex_id}"}), 10,
               what="its container")
    r = server.client.delete(f"/api/jobs/{job_id}")
    assert r.status_code == 200 and r.json() == {"success": True, "error": None}
    job = _job(server, hex_id)  # the id without dashes works as well
    assert job["status"] == "cancelled" and job["completed_at"]
    wait_until(lambda: docker_client.api.containers(all=True, filters={"label": f"corral.job={hex_id}"}) == [],
               15, what="the container to be removed")
    assert server.job(hex_id)["tasks"][0]["state"] == "cancelled"
    r = server.client.delete(f"/api/jobs/{job_id}")
    assert r.status_code == 400 and r.json() == {"success": False, "error": "job is already cancelled"}


def test_list_filters_and_paging(server: Cluster) -> None:
    t0 = int(time.time() * 1000)
    mark = uuid.uuid4().hex[:8]
    ids = [_submit(server, {"command": f"echo {mark}-alpha-{i}"}) for i in range(4)]
    ids.append(_submit(server, {"command": f"echo {mark}-BETA; exit 3"}))
    for j in ids:
        _wait(server, j)
    t1 = int(time.time() * 1000)

    def listed(**params: Any) -> list[dict[str, Any]]:
        r = server.client.get("/api/jobs", params=params)
        assert r.status_code == 200, r.text
        return list(r.json())

    mine = listed(command=mark)
    assert [j["id"] for j in mine] == ids[::-1]  # newest first
    beta = listed(command=f"{mark}-beta")  # case-insensitive
    assert [j["id"] for j in beta] == [ids[-1]] and beta[0]["status"] == "failed"
    assert [j["id"] for j in listed(command=mark, status="failed")] == [ids[-1]]
    assert [j["id"] for j in listed(command=mark, status="COMPLETED")] == ids[3::-1]
    worker = mine[0]["executed_by"]
    assert len(listed(command=mark, worker_id=worker)) == 5
    assert listed(command=mark, worker_id=12345) == []
    assert listed(command=mark, worker_id="local") == mine  # a worker's name works too
    assert len(listed(command=mark, created_after_ms=t0, created_before_ms=t1)) == 5
    assert listed(command=mark, created_before_ms=t0 - 1) == []
    assert listed(command=mark, created_after_ms=t1 + 1) == []

    # Paging: page_size and page_token, with total_count of the filtered set.
    seen: list[str] = []
    token = ""
    while True:
        r = server.client.get("/api/jobs", params={"command": mark, "page_size": 2, "page_token": token})
        assert r.status_code == 200
        page = r.json()
        assert page["total_count"] == 5 and len(page["jobs"]) <= 2
        seen += [j["id"] for j in page["jobs"]]
        token = page["next_page_token"]
        if not token:
            break
    assert seen == ids[::-1]
    r = server.client.get("/api/jobs", params={"command": mark, "page_size": 5000})
    assert r.status_code == 200 and r.json()["total_count"] == 5  # capped at 1000, not refused
    assert r.headers["X-Total-Count"] == "5"


def test_server_default_image(tmp_path: Path, busybox_image: str) -> None:
    c = Cluster(tmp_path)
    try:
        c.up(env={"CORRAL_NOMADLITE_IMAGE": busybox_image})
        job_id = _submit(c, {"command": "cat /bin/sh >/dev/null && echo in a container"})
        done = _wait(c, job_id)
        assert done["status"] == "completed" and done["output"] == "in a container\n"
        assert done["image"] == busybox_image
        assert c.job(uuid.UUID(job_id).hex)["tasks"][0]["runtime"] == "docker"
    finally:
        c.close()
