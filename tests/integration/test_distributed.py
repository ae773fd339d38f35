"""A coordinator and separate worker processes: placement, dead workers, coordinator crashes.

Each test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

import httpx
import pytest

from tests.harness import Cluster, wait_until


def test_placement_respects_capacity_across_two_workers(cluster: Cluster, database_url: str) -> None:
    cluster.start_server(database_url=database_url)
    cluster.add_worker("w1", "--runtime", "process", "--cpus", "1")
    cluster.add_worker("w2", "--runtime", "process", "--cpus", "1")
    ids = [cluster.submit({"name": f"heavy-{i}", "tasks": [{"run": "sleep 1", "resources": {"cpu": 1}}]})["id"]
           for i in range(4)]
    peak: dict[str, int] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        nodes = cluster.nodes()
        for n in nodes:
            assert n["allocated"]["cpu"] <= n["capacity"]["cpu"], n
            peak[n["name"]] = max(peak.get(n["name"], 0), n["running"])
        if all(cluster.job(i)["state"] == "completed" for i in ids):
            break
        time.sleep(0.1)
    jobs = [cluster.job(i) for i in ids]
    assert [j["state"] for j in jobs] == ["completed"] * 4
    assert peak == {"w1": 1, "w2": 1}
    used = {j["tasks"][0]["node_id"] for j in jobs}
    assert len(used) == 2  # spread over both workers
    # Capacity is released on every terminal state.
    assert {n["name"]: n["allocated"]["cpu"] for n in cluster.nodes()} == {"w1": 0, "w2": 0}


@pytest.mark.slow
def test_worker_killed_task_completes_elsewhere(cluster: Cluster, database_url: str) -> None:
    cluster.start_server("--node-ttl", "3", database_url=database_url)
    w1 = cluster.add_worker("w1", "--runtime", "process")
    # The first attempt outlasts the test (it is killed with w1 however slow w2 is to come); the second is quick.
    first = cluster.tmp / "first-attempt.pid"
    job = cluster.submit({"tasks": [{"run": f"[ $CORRAL_ATTEMPT -gt 1 ] || {{ echo $$ > {first}; exec sleep 60; }}; "
                                            "echo finished on $CORRAL_ATTEMPT"}]})
    wait_until(lambda: cluster.job(job["id"])["tasks"][0]["state"] == "running", 15, what="the task to run")
    cluster.add_worker("w2", "--runtime", "process")
    w1.kill9()
    done = cluster.wait_job(job["id"], timeout=30)
    assert done["state"] == "completed", done
    execs = done["tasks"][0]["executions"]
    assert [e["state"] for e in execs] == ["lost", "completed"]
    names = {n["id"]: n["name"] for n in cluster.nodes()}
    assert names[execs[0]["node_id"]] == "w1" and names[execs[1]["node_id"]] == "w2"
    assert "missed its heartbeats" in execs[0]["error"]
    assert {n["name"]: n["state"] for n in cluster.nodes()} == {"w1": "down", "w2": "ready"}
    assert cluster.logs(job["id"]) == "finished on 2\n"
    with contextlib.suppress(ProcessLookupError):  # the orphan of the killed worker: not left behind
        os.kill(int(first.read_text()), signal.SIGKILL)


@pytest.mark.slow
def test_coordinator_killed_under_load_loses_nothing(cluster: Cluster, database_url: str) -> None:
    cluster.start_server(database_url=database_url)
    cluster.add_worker("w1", "--runtime", "process", "--cpus", "4")
    accepted: list[str] = []
    stop = threading.Event()

    def submit_loop() -> None:
        i = 0
        while not stop.is_set():
            try:  # the harness's client (thread-safe), so that whatever the harness adds to requests is there
                job = {"name": f"load-{i}", "tasks": [{"run": "echo $CORRAL_JOB_ID"}]}
                r = cluster.client.post("/v1/jobs", json=job, timeout=5)
            except httpx.HTTPError:
                time.sleep(0.05)
                continue
            if r.status_code == 201:
                accepted.append(r.json()["id"])
            i += 1

    threads = [threading.Thread(target=submit_loop) for _ in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: len(accepted) >= 150, 30, what="150 accepted jobs")
    assert cluster.server is not None
    cluster.server.kill9()
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    n = len(accepted)
    cluster.start_server(database_url=database_url)  # same port, same database
    for job_id in accepted:
        r = cluster.client.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, f"accepted job {job_id} was lost"
    # Jobs created but not answered before the kill may complete too: the total is a gate, not the check.
    wait_until(lambda: cluster.client.get("/v1/jobs", params={"state": "completed", "limit": 1})
               .json()["total"] >= n, 60, interval=0.3, what=f"all {n} accepted jobs to complete")
    # Every accepted job ran to completion and its log is its own output. (A run lost while the coordinator
    # was away may run again: its log then holds the line twice, still nothing else.)
    for job_id in accepted:
        done = cluster.wait_job(job_id, timeout=30)
        assert done["state"] == "completed", done
        assert done["tasks"][0]["executions"][-1]["state"] == "completed", done
        lines = cluster.logs(job_id).splitlines()
        assert lines and set(lines) == {job_id}, (job_id, lines)
