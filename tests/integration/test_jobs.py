"""Jobs end to end against a real `corral up` (coordinator and local worker), host-process runtime."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.harness import Cluster, wait_until
from tests.support import stand_in_nvidia_smi


@pytest.fixture
def standalone(module_standalone: Cluster) -> Cluster:
    """One `corral up` for the module (tests/conftest.py): each test looks only at its own jobs (the listing
    test, which counts every job, has a server of its own)."""
    return module_standalone


def test_happy_path_runs_tasks_in_order_with_logs(standalone: Cluster) -> None:
    job = standalone.submit({"name": "hello", "tags": ["demo"], "env": {"WHO": "world"}, "tasks": [
        {"name": "greet", "run": "echo hello $WHO; sleep 0.1; echo oops >&2"},
        {"name": "argv", "command": ["sh", "-c", "echo second $CORRAL_TASK_NAME"]},
    ]})
    assert job["state"] == "pending" and len(job["id"]) == 32
    done = standalone.wait_job(job["id"])
    assert done["state"] == "completed", done
    assert [t["state"] for t in done["tasks"]] == ["completed", "completed"]
    t0, t1 = done["tasks"]
    assert t0["finished_at"] <= t1["started_at"]
    assert t0["executions"][0]["exit_code"] == 0 and t0["executions"][0]["node_id"]
    assert standalone.logs(job["id"]).splitlines() == ["hello world", "oops", "second argv"]
    lines = standalone.client.get(f"/v1/jobs/{job['id']}/logs", params={"format": "ndjson"}).text.splitlines()
    assert '"stream": "stderr"' in lines[1] and '"task": "greet"' in lines[1]
    assert standalone.client.get(f"/v1/jobs/{job['id']}/logs", params={"tail": 1}).text == "second argv\n"


def test_yaml_submission(standalone: Cluster) -> None:
    body = "name: from yaml\ntasks:\n  - run: echo yaml works\n"
    r = standalone.client.post("/v1/jobs", content=body, headers={"content-type": "application/yaml"})
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
    standalone.wait_job(r.json()["id"])
    assert standalone.logs(r.json()["id"]) == "yaml works\n"


def test_failure_stops_the_job_and_reports_exit_code(standalone: Cluster) -> None:
    job = standalone.submit({"tasks": [{"run": "exit 7"}, {"run": "echo never"}]})
    done = standalone.wait_job(job["id"])
    assert done["state"] == "failed"
    assert done["tasks"][0]["exit_code"] == 7 and "exit code 7" in done["error"]
    assert done["tasks"][1]["state"] == "cancelled" and "not run" in done["tasks"][1]["error"]
    assert standalone.logs(job["id"]) == ""


def test_retry_until_success(standalone: Cluster, tmp_path: Path) -> None:
    marker = tmp_path / "count"
    script = f"n=$(cat {marker} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {marker}; echo try $n; [ $n -ge 3 ]"
    job = standalone.submit({"tasks": [{"run": script, "retry": {"limit": 3, "backoff": "100ms"}}]})
    done = standalone.wait_job(job["id"])
    assert done["state"] == "completed"
    task = done["tasks"][0]
    assert task["attempts"] == 3
    assert [e["state"] for e in task["executions"]] == ["failed", "failed", "completed"]
    assert standalone.logs(job["id"]).splitlines() == ["try 1", "try 2", "try 3"]


def test_retry_limit_is_respected(standalone: Cluster) -> None:
    job = standalone.submit({"tasks": [{"run": "exit 1", "retry": {"limit": 1, "backoff": "50ms"}}]})
    done = standalone.wait_job(job["id"])
    assert done["state"] == "failed" and done["tasks"][0]["attempts"] == 2


def test_timeout_kills_the_process_group(standalone: Cluster, tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    job = standalone.submit({"tasks": [{"run": f"sleep 60 & echo $! > {pidfile}; wait", "timeout": "1s"}]})
    done = standalone.wait_job(job["id"], timeout=15)
    assert done["state"] == "failed"
    assert "timed out after 1s" in done["tasks"][0]["error"] and done["tasks"][0]["exit_code"] == 124
    child = int(pidfile.read_text())
    wait_until(lambda: not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text()
               .split()[2], 5, what="the background child to die with its group")


def test_cancel_running_job_and_restart(standalone: Cluster, tmp_path: Path) -> None:
    marker = tmp_path / "second-run"
    job = standalone.submit({"tasks": [
        {"name": "first", "run": "echo first"},
        {"name": "slow", "run": f"if [ -f {marker} ]; then echo again; else touch {marker}; sleep 60; fi"},
    ]})
    wait_until(lambda: standalone.job(job["id"])["tasks"][1]["state"] == "running", 15, what="slow to run")
    r = standalone.client.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    done = standalone.job(job["id"])
    assert [t["state"] for t in done["tasks"]] == ["completed", "cancelled"]
    # A finished job cannot be cancelled again.
    again = standalone.client.post(f"/v1/jobs/{job['id']}/cancel")
    assert again.status_code == 409 and again.headers["content-type"] == "application/problem+json"
    # Restart reruns from the task that did not complete.
    r = standalone.client.post(f"/v1/jobs/{job['id']}/restart")
    assert r.status_code == 200, r.text
    done = standalone.wait_job(job["id"])
    assert done["state"] == "completed"
    assert len(done["tasks"][0]["executions"]) == 1  # "first" did not run again
    assert standalone.logs(job["id"]).splitlines() == ["first", "again"]
    # A completed job cannot be restarted; a finished job can be deleted.
    assert standalone.client.post(f"/v1/jobs/{job['id']}/restart").status_code == 409
    assert standalone.client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert standalone.client.get(f"/v1/jobs/{job['id']}").status_code == 404


def test_delete_of_unfinished_job_is_refused(standalone: Cluster) -> None:
    job = standalone.submit({"tasks": [{"run": "sleep 30"}]})
    r = standalone.client.delete(f"/v1/jobs/{job['id']}")
    assert r.status_code == 409 and "cancel it" in r.json()["detail"]
    standalone.client.post(f"/v1/jobs/{job['id']}/cancel")


def test_follow_streams_logs_until_the_job_ends(standalone: Cluster) -> None:
    job = standalone.submit({"tasks": [{"run": "for i in 1 2 3; do echo line $i; sleep 0.3; done"}]})
    seen: list[tuple[float, str]] = []
    t0 = time.monotonic()
    with standalone.client.stream("GET", f"/v1/jobs/{job['id']}/logs", params={"follow": "true"}) as r:
        for line in r.iter_lines():
            seen.append((time.monotonic() - t0, line))
    assert [s for _, s in seen] == ["line 1", "line 2", "line 3"]
    assert seen[0][0] < seen[-1][0] - 0.3  # lines arrived while the task ran, not all at the end
    assert standalone.job(job["id"])["state"] == "completed"


def test_pending_reason_is_visible(cluster: Cluster) -> None:
    # The node's GPUs are pinned (none, through a stand-in nvidia-smi), not read from this machine.
    standalone = cluster.up(env=stand_in_nvidia_smi(cluster.tmp / "bin", []))
    assert standalone.nodes()[0]["capacity"]["gpu"] == 0
    job = standalone.submit({"tasks": [{"run": "echo x", "resources": {"gpu": 4}}]})
    task = wait_until(lambda: (t := standalone.job(job["id"])["tasks"][0])["reason"] != "waiting in queue" and t,
                      10, what="a pending reason")
    assert task["state"] == "pending"
    assert task["reason"] == "needs 4 GPUs; the largest node has 0"
    sel = standalone.submit({"tasks": [{"run": "echo x", "node_selector": {"zone": "mars"}}]})
    wait_until(lambda: standalone.job(sel["id"])["tasks"][0]["reason"] == "no node matches node_selector zone=mars",
               10, what="a selector reason")
    q = standalone.submit({"queue": "nobody", "tasks": [{"run": "echo x"}]})
    wait_until(lambda: standalone.job(q["id"])["tasks"][0]["reason"] == "no ready worker serves queue 'nobody'",
               10, what="a queue reason")
    queues = {x["name"]: x for x in standalone.client.get("/v1/queues").json()["items"]}
    assert queues["nobody"]["pending"] == 1 and queues["nobody"]["workers"] == 0
    assert queues["default"]["workers"] == 1


def test_listing_filters_and_cursor_pagination(cluster: Cluster) -> None:
    standalone = cluster.up()  # an empty server: the totals are of this test's jobs
    ids = [standalone.submit({"name": f"list-{i}", "tags": ["batch" if i % 2 else "solo"],
                              "tasks": [{"run": "true"}]})["id"] for i in range(5)]
    for i in ids:
        standalone.wait_job(i)
    page = standalone.client.get("/v1/jobs", params={"limit": 2}).json()
    assert page["total"] == 5 and [j["id"] for j in page["items"]] == ids[::-1][:2]
    seen = [j["id"] for j in page["items"]]
    while page["next_cursor"]:
        page = standalone.client.get("/v1/jobs", params={"limit": 2, "cursor": page["next_cursor"]}).json()
        seen += [j["id"] for j in page["items"]]
    assert seen == ids[::-1]
    tagged = standalone.client.get("/v1/jobs", params={"tag": "batch"}).json()
    assert tagged["total"] == 2
    found = standalone.client.get("/v1/jobs", params={"q": "LIST-3"}).json()
    assert [j["name"] for j in found["items"]] == ["list-3"]
    assert standalone.client.get("/v1/jobs", params={"state": "completed"}).json()["total"] == 5
    assert standalone.client.get("/v1/jobs", params={"state": "running"}).json()["total"] == 0


def test_node_and_health_endpoints(standalone: Cluster) -> None:
    nodes = standalone.nodes()
    assert len(nodes) == 1 and nodes[0]["name"] == "local" and "process" in nodes[0]["runtimes"]
    assert nodes[0]["capacity"]["cpu"] >= 1 and nodes[0]["capacity"]["memory"] > 0
    one = standalone.client.get(f"/v1/nodes/{nodes[0]['id']}")
    assert one.status_code == 200 and one.json()["id"] == nodes[0]["id"]
    ready = standalone.client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["leader_id"] and ready["epoch"] >= 1
    metrics = standalone.client.get("/metrics").text
    assert "corral_nodes{state=\"ready\"} 1.0" in metrics
    assert standalone.client.get("/openapi.json").json()["info"]["title"] == "Corral"
    assert standalone.client.get("/docs").status_code == 200


def test_the_readme_example_runs(standalone: Cluster) -> None:
    body = (Path(__file__).parents[2] / "examples" / "hello.yaml").read_bytes()
    r = standalone.client.post("/v1/jobs", content=body, headers={"content-type": "application/yaml"})
    assert r.status_code == 201, r.text
    done = standalone.wait_job(r.json()["id"])
    assert done["state"] == "completed"
    assert standalone.logs(done["id"]).splitlines() == ["hello from greet", "done", "1", "2", "3"]


def test_depends_on_runs_a_diamond_with_b_and_c_in_parallel(standalone: Cluster) -> None:
    job = standalone.submit({"tasks": [
        {"name": "d", "run": "echo d", "depends_on": ["b", "c"]},  # list order implies nothing in a graph
        {"name": "a", "run": "echo a"},
        {"name": "b", "run": "sleep 1", "depends_on": ["a"]},
        {"name": "c", "run": "sleep 1", "depends_on": ["a"]},
    ]})
    # While it waits, d says what for: its dependencies, not the task listed before it.
    assert standalone.job(job["id"])["tasks"][0]["reason"] == "waiting for 'b', 'c'"
    done = standalone.wait_job(job["id"])
    assert done["state"] == "completed", done
    ex = {t["name"]: t["executions"][0] for t in done["tasks"]}
    assert ex["a"]["finished_at"] <= min(ex["b"]["started_at"], ex["c"]["started_at"])
    assert ex["b"]["started_at"] < ex["c"]["finished_at"] and ex["c"]["started_at"] < ex["b"]["finished_at"]
    assert ex["d"]["started_at"] >= max(ex["b"]["finished_at"], ex["c"]["finished_at"])


def test_depends_on_unknown_name_and_cycle_are_400s_that_name_them(standalone: Cluster) -> None:
    r = standalone.client.post("/v1/jobs", json={"tasks": [{"name": "a", "run": "true", "depends_on": ["nope"]}]})
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    assert "task 'a' depends on 'nope', which is not a task of this job" in r.json()["detail"]
    r = standalone.client.post("/v1/jobs", json={"tasks": [
        {"name": "a", "run": "true", "depends_on": ["b"]}, {"name": "b", "run": "true", "depends_on": ["a"]}]})
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    assert "cycle" in r.json()["detail"] and "'a'" in r.json()["detail"] and "'b'" in r.json()["detail"]
