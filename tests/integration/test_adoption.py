"""A worker killed with SIGKILL and started again (same data dir, same node id) adopts the host processes its
previous run left: one execution, no second attempt, its output whole; one that came back after its node's
TTL has its stale copy stopped, and the work is recorded once."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.runtime.base import RunResult
from corral.runtime.process import ProcessRuntime, parse_statuses, supervised
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
    got: list[int] = wait_until(lambda: len(p := path.read_text().split() if path.exists() else []) >= n and
                                [int(x) for x in p], 20, what=f"{n} pid(s) in {path.name}")
    return got


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


def test_find_held_and_resume_a_host_process_without_a_server(tmp_path: Path) -> None:
    """The runtime's side alone: a task spawned as run() spawns it, its spawner gone (its fds closed), is found
    by find_held, followed to its end with its output read from the reopened pipe, and its status read back
    from the status log; one that ended is found in the status log."""
    base = tmp_path / "executions"
    base.mkdir()
    gate = tmp_path / "gate"
    status_log = tmp_path / "process-status-1-0.log"
    log_fd = os.open(status_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(log_fd, b"ex-ended 3\nex-live 99\n")  # an earlier attempt's line: the last one counts
    argv = supervised(["sh", "-c", f"echo before; while [ ! -e {gate} ]; do sleep 0.02; done; echo after >&2; exit 7"],
                      "ex-live", log_fd)
    assert argv is not None
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    proc = subprocess.Popen(argv, stdout=out_w, stderr=err_w, start_new_session=True, pass_fds=(out_r, err_r, log_fd))
    for fd in (out_r, out_w, err_r, err_w, log_fd):  # the "worker" is gone: only the task holds its pipes
        os.close(fd)
    rt = ProcessRuntime()
    lines: list[tuple[str, str]] = []

    def sink(stream: str, line: str) -> bool:
        lines.append((stream, line))
        return True

    async def adopt() -> dict[str, Any]:
        held = {h.execution_id: h for h in await rt.held("node", str(base))}
        assert set(held) == {"ex-live", "ex-ended"}
        if not held["ex-live"].running and proc.poll() is not None:
            # Seen once, in a full CI run (2 xdist workers): the task was dead before the scan, killed by a
            # signal (no status line of its own) from outside this test. The likely cause, since fixed: the
            # process runtime killed an attempt's process group again after its leader was reaped, when
            # the group's id could already belong to a new session such as this one (pids wrap around
            # every few minutes in a full run). Not what this test checks, so it stays a skip.
            pytest.skip(f"the task was killed from outside the test (status {proc.returncode})")
        assert held["ex-live"].running and held["ex-live"].handle == str(proc.pid)
        assert not held["ex-ended"].running and held["ex-ended"].exit_code == 3
        assert not status_log.exists()  # read, and removed: the live one's status is read from its fd
        following = asyncio.ensure_future(rt.resume(held["ex-live"], 0, sink, lambda _pid: None))
        await asyncio.sleep(0.05)
        gate.touch()
        live = await asyncio.wait_for(following, 10)
        ended = await rt.resume(held["ex-ended"], 0, lambda s, ln: True, lambda _pid: None)
        return {"live": live, "ended": ended}

    got = asyncio.run(adopt())
    proc.wait(5)
    assert got["live"] == RunResult(7) and got["ended"] == RunResult(3)
    assert lines == [("stdout", "before"), ("stderr", "after")]


def test_supervised_puts_the_trap_in_front_of_a_shell_script_and_wraps_a_command() -> None:
    assert supervised(["/usr/bin/sh", "-c", "echo hi", "zero"], "x1", 7) == [
        "/usr/bin/sh", "-c", "trap 'echo x1 $? >>/dev/fd/7' EXIT; echo hi", "zero"]
    assert supervised(["/bin/echo", "hi"], "x1", 7) == [
        "/bin/sh", "-c", "trap 'echo x1 $? >>/dev/fd/7' EXIT; \"$@\"", "sh", "/bin/echo", "hi"]
    assert supervised(["sh", "-c", "true"], "x'1", 7) is None  # not put in a trap as it is
    assert parse_statuses(b"a 1\nb 2\na 0\ntorn") == {"a": 0, "b": 2}
