"""Batch submission, and placement end to end: the bin-pack strategy, labels against node_selector, priority."""

from __future__ import annotations

from pathlib import Path

from tests.harness import Cluster, wait_until


def _total(c: Cluster) -> int:
    """Jobs stored: exact from /metrics (a listing's total stops at 1,000)."""
    text = c.client.get("/metrics").text
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines() if line.startswith("corral_jobs{"))


def test_batch_is_all_or_nothing_and_limited(standalone: Cluster) -> None:
    c = standalone
    r = c.client.post("/v1/jobs/batch", json={"jobs": [
        {"name": f"b{i}", "tasks": [{"run": f"echo batch {i}"}]} for i in range(3)]})
    assert r.status_code == 201, r.text
    items = r.json()["items"]
    assert [j["name"] for j in items] == ["b0", "b1", "b2"] and len({j["id"] for j in items}) == 3
    for i, j in enumerate(items):
        assert c.wait_job(j["id"])["state"] == "completed"
        assert c.logs(j["id"]) == f"batch {i}\n"
    assert _total(c) == 3

    # One bad job rejects the batch, naming it; nothing of the batch is stored.
    good = {"tasks": [{"run": "true"}]}
    r = c.client.post("/v1/jobs/batch", json={"jobs": [good, good, good, {"tasks": [{"run": ""}]}, good]})
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json", r.text
    assert any(e["field"].startswith("jobs.3.tasks.0") for e in r.json()["errors"]), r.json()
    # At most 1000 jobs in one batch; none stored when over.
    r = c.client.post("/v1/jobs/batch", json={"jobs": [good] * 1001})
    assert r.status_code == 400 and "1001 jobs in one batch; at most 1000" in r.json()["detail"], r.text
    for body in ({"jobs": []}, {"jobs": "x"}, [good], {}):
        r = c.client.post("/v1/jobs/batch", json=body)
        assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json", (body, r.text)
    assert _total(c) == 3
    r = c.client.post("/v1/jobs/batch", json={"jobs": [good] * 1000})
    assert r.status_code == 201 and len(r.json()["items"]) == 1000
    assert _total(c) == 1003


def _placed_together(cluster: Cluster) -> int:
    """Three 1-core jobs in one batch (so one scheduling pass places them all) on two idle 4-core workers;
    how many nodes they ran on."""
    cluster.add_worker("a", "--runtime", "process", "--cpus", "4")
    cluster.add_worker("b", "--runtime", "process", "--cpus", "4")
    r = cluster.client.post("/v1/jobs/batch", json={"jobs": [
        {"tasks": [{"run": "sleep 0.5", "resources": {"cpu": 1}}]} for _ in range(3)]})
    assert r.status_code == 201, r.text
    done = [cluster.wait_job(j["id"]) for j in r.json()["items"]]
    assert [d["state"] for d in done] == ["completed"] * 3
    return len({d["tasks"][0]["node_id"] for d in done})


def test_binpack_fills_one_node(cluster: Cluster) -> None:
    cluster.start_server("--strategy", "binpack")
    assert _placed_together(cluster) == 1


def test_spread_uses_both_nodes(cluster: Cluster) -> None:
    cluster.start_server("--strategy", "spread")
    assert _placed_together(cluster) == 2


def test_node_selector_matches_labels(cluster: Cluster) -> None:
    cluster.start_server()
    cluster.add_worker("gpu-box", "--runtime", "process", "--label", "zone=eu", "--label", "disk=ssd")
    cluster.add_worker("plain", "--runtime", "process", "--label", "zone=us")
    names = {n["id"]: n["name"] for n in cluster.nodes()}
    assert {n["name"]: n["labels"] for n in cluster.nodes()} == {"gpu-box": {"zone": "eu", "disk": "ssd"},
                                                                "plain": {"zone": "us"}}
    eu = [cluster.submit({"tasks": [{"run": "true", "node_selector": {"zone": "eu"}}]})["id"] for _ in range(3)]
    both = cluster.submit({"tasks": [{"run": "true", "node_selector": {"zone": "eu", "disk": "ssd"}}]})["id"]
    us = cluster.submit({"tasks": [{"run": "true", "node_selector": {"zone": "us"}}]})["id"]
    for i in [*eu, both]:
        assert names[cluster.wait_job(i)["tasks"][0]["node_id"]] == "gpu-box"
    assert names[cluster.wait_job(us)["tasks"][0]["node_id"]] == "plain"
    nowhere = cluster.submit({"tasks": [{"run": "true", "node_selector": {"zone": "us", "disk": "ssd"}}]})["id"]
    task = wait_until(lambda: "node_selector" in ((t := cluster.job(nowhere)["tasks"][0])["reason"] or "") and t,
                      10, what="a selector reason")
    assert task["state"] == "pending" and task["reason"].startswith("no node matches node_selector"), task


def test_priority_decides_which_waiting_job_runs_first(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_server()
    cluster.add_worker("one", "--runtime", "process", "--cpus", "1")
    # Hold the only core until all are queued, low before high: high must start first when the core frees.
    go = tmp_path / "go"
    gate = cluster.submit({"tasks": [{"run": f"while [ ! -e {go} ]; do sleep 0.05; done", "resources": {"cpu": 1}}]})
    cluster.wait_job(gate["id"], {"running"})
    low = [cluster.submit({"priority": 0, "tasks": [{"run": "true", "resources": {"cpu": 1}}]})["id"]
           for _ in range(2)]
    high = cluster.submit({"priority": 9, "tasks": [{"run": "true", "resources": {"cpu": 1}}]})["id"]
    wait_until(lambda: all(cluster.job(i)["tasks"][0]["reason"] not in (None, "waiting in queue")
                           for i in [*low, high]), 10, what="a pass that found no room for them")
    go.touch()
    started = {i: cluster.wait_job(i)["tasks"][0]["started_at"] for i in [*low, high]}
    assert started[high] < min(started[i] for i in low), started
    assert started[low[0]] < started[low[1]]  # equal priority: oldest first


def test_work_of_a_served_queue_is_not_stuck_behind_unplaceable_work(standalone: Cluster) -> None:
    """2,000 jobs for a queue no worker serves come first; a job for the served queue submitted after them
    completes promptly (a pass reads the queues that some node serves, not the oldest ready tasks: before,
    it looked 256 tasks past the waiting ones per pass, about one pass a second here), and the last of the
    2,000 is told why it waits."""
    c = standalone
    for _ in range(2):
        r = c.client.post("/v1/jobs/batch", json={"jobs": [{"queue": "nobody", "tasks": [{"run": "true"}]}] * 1000})
        assert r.status_code == 201, r.text
    last = r.json()["items"][-1]["id"]
    late = c.submit({"tasks": [{"run": "echo late"}]})
    assert c.wait_job(late["id"], timeout=3)["state"] == "completed"
    wait_until(lambda: c.job(last)["tasks"][0]["reason"] == "no ready worker serves queue 'nobody'", 10,
               what="the queue's reason on its last task")
    assert c.job(last)["state"] == "pending"
