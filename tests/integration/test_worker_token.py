"""The cluster token: a real `corral worker --token` registers and runs work; every agent route refuses a
caller without it or with a wrong one, and such a call changes nothing."""

from __future__ import annotations

import time
from typing import Any

from tests.harness import Cluster, wait_until

TOKEN = "s3cret-cluster-token"


def test_a_worker_with_the_token_works_and_the_agent_routes_refuse_anyone_else(cluster: Cluster) -> None:
    cluster.start_server("--token", TOKEN)
    cluster.add_worker("w1", "--runtime", "process", "--token", TOKEN)
    job = cluster.submit({"tasks": [{"run": "echo with the token"}]})
    done = cluster.wait_job(job["id"])
    assert done["state"] == "completed", done
    node_id = cluster.nodes()[0]["id"]
    ex_id = done["tasks"][0]["executions"][0]["id"]

    now = time.time()
    calls: list[tuple[str, dict[str, Any]]] = [
        ("/v1/agent/register", {"name": "intruder", "cpu": 1, "memory": 1}),
        (f"/v1/agent/nodes/{node_id}/heartbeat", {"running": []}),
        (f"/v1/agent/nodes/{node_id}/poll", {"known": [], "wait": 0}),
        (f"/v1/agent/nodes/{node_id}/report", {
            "updates": [{"execution_id": ex_id, "state": "failed", "ts": now, "exit_code": 1}],
            "logs": [{"execution_id": ex_id, "stream": "stdout", "line": "forged", "ts": now}]}),
    ]
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {TOKEN}x"},
                    {"Authorization": f"Bearer {TOKEN[:-1]}"}):
        for path, body in calls:
            r = cluster.client.post(path, json=body, headers=headers)
            assert r.status_code == 401, (path, headers, r.status_code, r.text)
            assert TOKEN not in r.text and "--token" in r.json()["detail"]
    # Nothing the refused calls said was applied.
    assert cluster.job(job["id"])["state"] == "completed"
    assert cluster.logs(job["id"]) == "with the token\n"
    assert [n["name"] for n in cluster.nodes()] == ["w1"]
    # The worker goes on working with the token.
    again = cluster.submit({"tasks": [{"run": "echo still"}]})
    assert cluster.wait_job(again["id"])["state"] == "completed"


def test_a_worker_without_the_token_is_not_registered(cluster: Cluster) -> None:
    cluster.start_server("--token", TOKEN)
    w = cluster.add_worker("stranger", "--runtime", "process", "--token", "wrong", wait=False)
    popen = w.popen
    assert popen is not None
    # Evidence that it tried: the coordinator refused it (its log says so, or it stopped), and it is no node.
    wait_until(lambda: "401" in w.output() or "refused" in w.output() or popen.poll() is not None, 20,
               what="the worker to be refused")
    assert cluster.nodes() == []
    assert TOKEN not in w.output()
