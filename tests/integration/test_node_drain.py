"""An operator drains a worker (`corral nodes drain`, POST /v1/nodes/{id}/drain) with real workers: nothing new
is placed there; at the deadline what still runs is stopped and placed on another worker without using up a
retry; `undrain` lets it take work again; without a deadline a running task finishes where it is; a pod that
restarts (restartPolicy Always) on a drained node moves to another node.

One server and two workers (host processes), started at once, serve the module; each test leaves both nodes
ready. Where work lands first is the scheduler's choice: the tests call that node ``a`` and the other ``b``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Cluster, wait_until
from tests.support import corral, process_gone


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("drain"))
    try:
        c.start_server()
        for name in ("w1", "w2"):
            c.add_worker(name, "--runtime", "process", wait=False)
        wait_until(lambda: len([n for n in c.nodes() if n["state"] == "ready"]) == 2, 30, what="both workers")
        yield c
    finally:
        c.close()


def _other(c: Cluster, node_id: str) -> str:
    return str(next(n["id"] for n in c.nodes() if n["id"] != node_id))


@pytest.mark.slow  # two workers and a deadline to wait for: about 30 s on a loaded machine
def test_drain_with_a_deadline_moves_the_running_task_and_undrain(two: Cluster, tmp_path: Path) -> None:
    cluster = two
    first = tmp_path / "first.pid"
    # The first run would outlast the test; a later one is quick. No retries: a failed attempt ends the job.
    job = cluster.submit({"tasks": [{"run": f"[ -e {first} ] || {{ echo $$ > {first}; exec sleep 60; }}; "
                                            "echo done on attempt $CORRAL_ATTEMPT", "retry": {"limit": 0}}]})
    wait_until(lambda: cluster.job(job["id"])["tasks"][0]["state"] == "running" and first.exists()
               and first.read_text().strip(), 20, what="the first attempt to run")
    a = cluster.job(job["id"])["tasks"][0]["executions"][0]["node_id"]
    names = {"w1": a, "w2": _other(cluster, a)}  # w1: where it runs; w2: the other
    by_name = {n["id"]: n["name"] for n in cluster.nodes()}

    r = corral("nodes", "drain", by_name[a], "--deadline", "2s", "-o", "json", server=cluster.url)
    assert r.returncode == 0, r.stderr
    drained = json.loads(r.stdout)
    assert drained["state"] == "draining" and drained["drain"]["deadline"], drained
    # nothing new on the drained node: a job submitted now runs on w2
    quick = cluster.wait_job(cluster.submit({"tasks": [{"run": "echo hi"}]})["id"])
    assert quick["state"] == "completed" and quick["tasks"][0]["executions"][-1]["node_id"] == names["w2"]

    # at the deadline, the task moves: its first process is stopped, it completes on w2, no retry used
    pid = int(first.read_text())
    done = cluster.wait_job(job["id"], timeout=30)
    assert done["state"] == "completed", done
    execs = done["tasks"][0]["executions"]
    assert [(e["node_id"], e["state"]) for e in execs] == [(names["w1"], "lost"), (names["w2"], "completed")]
    assert "drained" in (execs[0]["error"] or ""), execs[0]
    wait_until(lambda: process_gone(pid), 10, what="the drained worker to stop the task's first process")
    assert cluster.logs(job["id"]).splitlines()[-1] == "done on attempt 1", cluster.logs(job["id"])

    # undrain: w1 takes work again (w2 drained without a deadline, so the next job can only go to w1)
    r = cluster.client.post(f"/v1/nodes/{names['w1']}/undrain")
    assert r.status_code == 200 and r.json()["state"] == "ready" and r.json()["drain"] is None, r.text
    slow = cluster.submit({"tasks": [{"run": "sleep 1; echo finished"}]})
    wait_until(lambda: cluster.job(slow["id"])["tasks"][0]["state"] == "running", 20, what="the task to start")
    on = cluster.job(slow["id"])["tasks"][0]["executions"][-1]["node_id"]
    r = cluster.client.post(f"/v1/nodes/{on}/drain", json={})
    assert r.status_code == 200 and r.json()["drain"]["deadline"] is None, r.text
    # no deadline: it finishes where it runs
    done = cluster.wait_job(slow["id"], timeout=20)
    assert done["state"] == "completed" and [e["node_id"] for e in done["tasks"][0]["executions"]] == [on]

    # what is wrong with a request is said
    r = cluster.client.post(f"/v1/nodes/{on}/drain", json={"deadline": "soon"})
    assert r.status_code == 400 and "deadline" in r.text, r.text
    r = cluster.client.post("/v1/nodes/nope/drain", json={})
    assert r.status_code == 404, r.text
    r = cluster.client.post(f"/v1/nodes/{on}/undrain")
    assert r.status_code == 200 and r.json()["state"] == "ready", r.text
    r = cluster.client.post(f"/v1/nodes/{on}/undrain")  # again: it is ready, nothing to undo
    assert r.status_code == 200 and r.json()["state"] == "ready", r.text


def test_a_drained_nodes_restarting_pod_moves_to_the_other_node(two: Cluster) -> None:
    """A pod that restarts (restartPolicy Always) on a drained node is placed on another node at once: its
    process there is stopped, and it runs again on the other worker (host-process pods: no Docker needed)."""
    cluster = two
    r = cluster.client.post("/v1/pods", json={"name": "mover", "restartPolicy": "Always",
                                              "terminationGracePeriodSeconds": 1, "containers": [
                                                  {"name": "p", "command": ["sh", "-c",
                                                                            "echo pid=$$$$; exec sleep 3600"]}]})
    assert r.status_code == 201, r.text
    pod_id = r.json()["id"]

    def pids() -> list[int]:
        return [int(ln[4:]) for ln in cluster.client.get(f"/v1/pods/{pod_id}/logs").text.splitlines()
                if ln.startswith("pid=")]

    first = wait_until(pids, 20, what="the pod's process")[0]
    before = cluster.get(f"/v1/pods/{pod_id}")
    a = before["node_id"]
    b = _other(cluster, a)
    assert before["state"] == "running", before

    assert cluster.client.post(f"/v1/nodes/{a}/drain", json={}).status_code == 200
    try:
        moved = wait_until(lambda: (p := cluster.get(f"/v1/pods/{pod_id}"))["node_id"] == b
                           and p["state"] == "running" and p, 30, what="the pod to run on the other node")
        assert moved["instance_id"] != before["instance_id"], moved
        wait_until(lambda: process_gone(first), 15, what="the drained worker to stop the pod's first process")
        wait_until(lambda: len(pids()) >= 2 and not process_gone(pids()[-1]), 15,
                   what="the pod's process on the other node")
        assert cluster.get(f"/v1/nodes/{a}")["state"] == "draining"
    finally:
        cluster.client.delete(f"/v1/pods/{pod_id}")
        cluster.client.post(f"/v1/nodes/{a}/undrain")
