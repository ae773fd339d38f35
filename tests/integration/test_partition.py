"""A worker cut off from its coordinator by the network, and the network healed: a real partition.

The worker runs in a network namespace of its own (tests/netns.py) and reaches the coordinator over a veth
pair; the test pulls the cable on the worker's side (`ip link set ... down`). What happens is what
docs/operations.md ("Partitions") says: the worker's node misses its heartbeats and is marked down after
--node-ttl, its task is handed back and runs on another worker; the cut-off worker, which cannot tell a
partition from a dead coordinator, runs on what it had. When the link comes back its heartbeat makes the node
ready again, the coordinator tells it to stop the copy it still runs (that execution is lost), and no second
completion is recorded: the job has one completed execution, and the task's work is done once.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from tests.harness import CORRAL, Cluster, Proc, wait_until
from tests.netns import NetNs
from tests.support import process_gone


class NsProc(Proc):
    """A Corral process started in a network namespace."""

    prefix: list[str]

    def start(self) -> Proc:
        fh = self.log.open("ab")
        self.popen = subprocess.Popen([*self.prefix, *CORRAL, *self.args], stdout=fh, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        return self


@pytest.mark.slow  # a node TTL to wait out and a TCP connection to recover: about 20 s
def test_a_partitioned_worker_loses_its_task_to_another_and_rejoins(cluster: Cluster, netns: NetNs,
                                                                    tmp_path: Path) -> None:
    # The coordinator listens on the host's end of the pair only; the test's client reaches it there too.
    cluster.url = f"http://{netns.host_ip}:{cluster.port}"
    cluster.client.base_url = cluster.url
    token, worker_token = uuid.uuid4().hex, uuid.uuid4().hex
    cluster.start_server("--bind", netns.host_ip, "--api-token", token, "--token", worker_token,
                         "--node-ttl", "3")
    far = NsProc(["worker", "--server", cluster.url, "--name", "far", "--data-dir", str(tmp_path / "w-far"),
                  "--log-level", "warning", "--grace", "1s", "--runtime", "process", "--token", worker_token],
                 tmp_path / "worker-far.log")
    far.prefix = netns.prefix
    cluster.workers.append(far.start())
    wait_until(lambda: [n for n in cluster.nodes() if n["name"] == "far" and n["state"] == "ready"], 20,
               what="the worker in the namespace to register")

    first, ends = tmp_path / "first.pid", tmp_path / "ends.txt"
    # The first attempt outlasts the test; a later one is quick. Each attempt that finishes appends a line.
    job = cluster.submit({"tasks": [{"run": f"[ -e {first} ] || {{ echo $$ > {first}; exec sleep 60; }}; "
                                            f"echo $CORRAL_JOB_ID >> {ends}", "retry": {"limit": 0}}]})
    wait_until(lambda: first.exists() and first.read_text().strip(), 20, what="the first attempt to run on far")
    pid = int(first.read_text())
    cluster.add_worker("near", "--runtime", "process", "--token", worker_token)
    ids = {n["name"]: n["id"] for n in cluster.nodes()}

    netns.cut()
    # The node misses its heartbeats: down after the TTL, its task handed back and run on near.
    cluster.wait_for(f"/v1/nodes/{ids['far']}", {"down"}, timeout=15)
    done = cluster.wait_job(job["id"], timeout=20)
    assert done["state"] == "completed", done
    execs = done["tasks"][0]["executions"]
    assert [(e["node_id"], e["state"]) for e in execs] == [(ids["far"], "lost"), (ids["near"], "completed")]
    assert "heartbeat" in (execs[0]["error"] or ""), execs[0]
    assert not process_gone(pid)  # the cut-off worker cannot know: its copy runs on, unreported

    netns.heal()
    # Its heartbeat gets through again: the node is back, and it is told to stop the copy it runs.
    cluster.wait_for(f"/v1/nodes/{ids['far']}", {"ready"}, timeout=30)
    wait_until(lambda: process_gone(pid), 20, what="the rejoined worker to stop the lost attempt")
    again = cluster.job(job["id"])
    assert again["state"] == "completed" and again["tasks"][0]["executions"] == execs, again
    assert ends.read_text().split() == [job["id"]]  # the task's work was done once
    # The rejoined worker takes work: with near drained, a new job runs on far.
    assert cluster.client.post(f"/v1/nodes/{ids['near']}/drain", json={}).status_code == 200
    later = cluster.wait_job(cluster.submit({"tasks": [{"run": "true"}]})["id"], timeout=30)
    assert later["state"] == "completed" and later["tasks"][0]["executions"][0]["node_id"] == ids["far"], later
