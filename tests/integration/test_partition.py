"""A worker, then a coordinator, cut off by the network, and the network healed: real partitions.

The worker runs in a network namespace of its own (tests/netns.py) and reaches the coordinator over a veth
pair; the test pulls the cable on the worker's side (`ip link set ... down`). What happens is what
docs/operations.md ("Partitions") says: the worker's node misses its heartbeats and is marked down after
--node-ttl, its task is handed back and runs on another worker; the cut-off worker, which cannot tell a
partition from a dead coordinator, runs on what it had. When the link comes back its heartbeat makes the node
ready again, the coordinator tells it to stop the copy it still runs (that execution is lost), and no second
completion is recorded: the job has one completed execution, and the task's work is done once.

The second test does the same to the leading coordinator, in its own namespace, whose only way to the
database (and to everything else) is its veth: the other coordinator takes the lease once it expires, the
worker moves to it, work goes on; healed, the cut-off one comes back as a follower (its epoch is old: it
places nothing) and serves the same cluster again.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from tests import pg
from tests.harness import CORRAL, Cluster, Proc, free_port, wait_until
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


def ready(c: Cluster) -> bool:
    try:
        return c.client.get("/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.slow  # a lease to expire, two coordinators and a throwaway PostgreSQL: about 25 s
def test_a_partitioned_leader_hands_over_and_rejoins_as_a_follower(netns: NetNs, tmp_path: Path) -> None:
    bindir = pg.find_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries")
    token, worker_token = uuid.uuid4().hex, uuid.uuid4().hex
    runs = tmp_path / "runs.txt"
    runs.touch()
    # PostgreSQL listens on the host's end of the pair too, and trusts the namespace's address.
    with pg.TempServer(bindir, also_on=netns.host_ip, allow=f"{netns.ns_ip}/32") as server, \
            pg.fresh_database(server.url) as db:
        a, b = Cluster(tmp_path / "a"), Cluster(tmp_path / "b")
        a.tmp.mkdir()
        b.tmp.mkdir()
        common = ["--api-token", token, "--token", worker_token, "--leader-lease", "2", "--node-ttl", "6",
                  "--log-level", "warning"]
        try:
            # a: in the namespace, reaching the database at the host's end of the pair.
            port = free_port()
            far = NsProc(["server", "--port", str(port), "--bind", netns.ns_ip, "--coordinator-id", "a",
                          "--database-url", db.replace("127.0.0.1", netns.host_ip), *common],
                         tmp_path / "a" / "server.log")
            far.prefix = netns.prefix
            a.server = far.start()
            a.url = f"http://{netns.ns_ip}:{port}"
            a.client.base_url = a.url
            a.use_token(token)
            wait_until(lambda: ready(a), 30, what="coordinator a to lead")
            b.start_server("--coordinator-id", "b", *common, database_url=db)
            assert b.get("/v1/cluster")["leader_id"] == "a"
            a.add_worker("w", "--runtime", "process", "--server", b.url, "--token", worker_token)

            def job(c: Cluster) -> str:
                return str(c.submit({"tasks": [{"run": f"echo $CORRAL_JOB_ID >> {runs}"}]})["id"])

            first = job(a)
            assert a.wait_job(first, timeout=20)["state"] == "completed"

            netns.cut()
            # b takes the lease once a's has run out; the worker, cut off from a, moves to b; work goes on.
            wait_until(lambda: b.get("/v1/cluster")["leader_id"] == "b", 20, what="b to lead")
            during = job(b)
            assert b.wait_job(during, timeout=30)["state"] == "completed"

            netns.heal()
            # a reaches the database again: a follower now (b holds the lease), ready, serving the same state.
            wait_until(lambda: ready(a), 30, what="a to be ready again")
            seen = a.get("/v1/cluster")
            assert seen["leader_id"] == "b", seen
            after = job(a)
            assert b.wait_job(after, timeout=30)["state"] == "completed"
            for j in (first, during, after):
                assert len(a.job(j)["tasks"][0]["executions"]) == 1  # placed once
            assert sorted(runs.read_text().split()) == sorted([first, during, after])  # each ran once
        finally:
            a.close()
            b.close()
