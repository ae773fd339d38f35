"""A worker killed with SIGKILL and started again (same data dir, same node id) adopts the host processes its
previous run left: one execution, no second attempt, its output whole; one that came back after its node's
TTL has its stale copy stopped, and the work is recorded once."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Cluster, Proc, wait_until
from tests.support import process_gone


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One server (default node TTL: a restarted worker is back long before it) for the adoption tests."""
    c = Cluster(tmp_path_factory.mktemp("adoption"))
    c.start_server()
    yield c
    c.close()


def _pids(path: Path, n: int) -> list[int]:
    return wait_until(lambda: len(p := path.read_text().split() if path.exists() else []) >= n and
                      [int(x) for x in p], 20, what=f"{n} pid(s) in {path.name}")


def _reads_pipe_of(worker: Proc, pid: int) -> bool:
    """Whether the worker process holds the pipe that task ``pid`` writes its stdout to (it re-attached)."""
    assert worker.popen is not None
    target = os.readlink(f"/proc/{pid}/fd/1")
    fds = f"/proc/{worker.popen.pid}/fd"
    links = []
    for fd in os.listdir(fds):
        try:
            links.append(os.readlink(f"{fds}/{fd}"))
        except OSError:
            continue
    return target in links


def test_a_restarted_worker_adopts_a_running_host_process(shared: Cluster, tmp_path: Path) -> None:
    pids, gate1, gate2, said = (tmp_path / n for n in ("pids", "gate1", "gate2", "said"))
    w = shared.add_worker("adopter", "--runtime", "process")
    job = shared.submit({"tasks": [{"run": (
        f"echo $$ >> {pids}; echo one; while [ ! -e {gate1} ]; do sleep 0.02; done; "
        f"echo two; touch {said}; while [ ! -e {gate2} ]; do sleep 0.02; done; echo three")}]})
    pid = _pids(pids, 1)[0]
    wait_until(lambda: "one" in shared.logs(job["id"]), 20, what="the first line stored")
    w.kill9()
    gate1.touch()  # written while no worker reads it: it waits in the pipe
    wait_until(said.exists, 10, what="the second line written")
    w2 = shared.add_worker("adopter", "--runtime", "process")
    wait_until(lambda: _reads_pipe_of(w2, pid), 20, what="the restarted worker to read the task's output")
    gate2.touch()
    done = shared.wait_job(job["id"], timeout=30)
    assert done["state"] == "completed", done
    assert [e["state"] for e in done["tasks"][0]["executions"]] == ["completed"]
    lines = shared.logs(job["id"]).split()
    assert [ln for ln in lines if ln in ("one", "two", "three")] == ["one", "two", "three"], lines
    assert pids.read_text().split() == [str(pid)]  # it ran once


def test_a_host_process_that_ended_while_its_worker_was_down_is_reported_once(shared: Cluster, tmp_path: Path
                                                                               ) -> None:
    pids, gate = tmp_path / "pids", tmp_path / "gate"
    w = shared.add_worker("ender", "--runtime", "process")
    job = shared.submit({"tasks": [{"run": f"echo $$ >> {pids}; while [ ! -e {gate} ]; do sleep 0.02; done; exit 3"}]})
    pid = _pids(pids, 1)[0]
    w.kill9()
    gate.touch()
    wait_until(lambda: process_gone(pid), 10, what="the task to end")
    shared.add_worker("ender", "--runtime", "process")
    done = shared.wait_job(job["id"], timeout=30)
    execs = done["tasks"][0]["executions"]
    assert [(e["state"], e["exit_code"]) for e in execs] == [("failed", 3)], execs  # its status, read back
    assert pids.read_text().split() == [str(pid)]


def test_a_worker_back_after_its_ttl_stops_its_stale_copy(cluster: Cluster, tmp_path: Path) -> None:
    pids, gate = tmp_path / "pids", tmp_path / "gate"
    cluster.start_server("--node-ttl", "2")
    w = cluster.add_worker("late", "--runtime", "process")
    job = cluster.submit({"tasks": [{"run": f"echo $$ >> {pids}; while [ ! -e {gate} ]; do sleep 0.02; done"}]})
    first = _pids(pids, 1)[0]
    w.kill9()
    # The reaper marks the node down and the attempt lost: the task waits for a node again.
    wait_until(lambda: cluster.job(job["id"])["tasks"][0]["executions"][0]["state"] == "lost", 20,
               what="the attempt marked lost")
    cluster.add_worker("late", "--runtime", "process")
    second = _pids(pids, 2)[1]
    wait_until(lambda: process_gone(first), 10, what="the stale copy stopped")
    assert not process_gone(second)
    gate.touch()
    done = cluster.wait_job(job["id"], timeout=30)
    assert done["state"] == "completed", done
    assert [e["state"] for e in done["tasks"][0]["executions"]] == ["lost", "completed"]
