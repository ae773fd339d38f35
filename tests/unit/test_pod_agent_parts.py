"""Small parts of the worker's pods: Docker's times, and ending the host processes a crashed worker left."""

from __future__ import annotations

import subprocess
from pathlib import Path

from corral.agent.pods import kill_leftovers, write_pidfile
from corral.runtime.pods_docker import _time
from tests.harness import wait_until
from tests.support import process_gone


def test_docker_times() -> None:
    assert _time("2026-12-01T10:56:42.123456789Z") == 1796122602.123456
    assert _time("2026-12-01T10:56:42Z") == 1796122602.0
    assert _time("0001-01-01T00:00:00Z") is None
    assert _time("") is None and _time(None) is None and _time("not a time") is None


def test_leftover_process_groups_are_ended_and_only_theirs(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    mine = subprocess.Popen(["sleep", "30"], start_new_session=True)
    other = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        write_pidfile(str(pids), "inst-a", mine.pid)
        # A pid file whose process is not the one that wrote it (the pid was used again): left alone.
        (pids / "inst-b").write_text(f"{other.pid} 1\n")
        (pids / "junk").write_text("not a pid\n")
        assert kill_leftovers(str(pids)) == 1
        mine.wait(10)
        wait_until(lambda: process_gone(mine.pid), 10)
        assert other.poll() is None
        assert list(pids.iterdir()) == []
        assert kill_leftovers(str(tmp_path / "missing")) == 0
    finally:
        for p in (mine, other):
            p.kill()
            p.wait(10)
