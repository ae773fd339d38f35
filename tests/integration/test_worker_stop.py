"""A worker stopped with SIGTERM while it runs a task: it exits, taking its task's process with it, and the
task is not lost: it runs again on another worker and completes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.harness import Cluster, wait_until
from tests.support import process_gone


def test_sigterm_on_a_busy_worker_exits_it_and_its_task_completes_elsewhere(cluster: Cluster,
                                                                           tmp_path: Path) -> None:
    cluster.start_server("--node-ttl", "3")
    w1 = cluster.add_worker("w1", "--runtime", "process")
    first = tmp_path / "first.pid"
    # The first run would outlast the test; any later one is quick. (A task handed back by a stopping worker
    # keeps its attempt number: it is not a failed attempt. So the first run is told by its pid file.)
    job = cluster.submit({"tasks": [{"run": f"[ -e {first} ] || {{ echo $$ > {first}; exec sleep 60; }}; "
                                            "echo done on attempt $CORRAL_ATTEMPT"}]})
    wait_until(lambda: cluster.job(job["id"])["tasks"][0]["state"] == "running" and first.exists()
               and first.read_text().strip(), 20,
               what="the first attempt to run")
    cluster.add_worker("w2", "--runtime", "process")
    assert w1.popen is not None
    os.killpg(w1.popen.pid, signal.SIGTERM)
    w1.popen.wait(30)  # it exits: a stopped worker does not hang on its running work
    pid = int(first.read_text())
    wait_until(lambda: process_gone(pid), 5, what="the stopped worker's task process to end with it")
    done = cluster.wait_job(job["id"], timeout=30)
    assert done["state"] == "completed", done
    names = {n["id"]: n["name"] for n in cluster.nodes()}
    last = done["tasks"][0]["executions"][-1]
    assert names[last["node_id"]] == "w2" and last["state"] == "completed", done
    assert cluster.logs(job["id"]).splitlines()[-1].startswith("done on attempt "), cluster.logs(job["id"])
