"""The process runtime closes each pipe it reads exactly once, on either event loop.

A second close of an fd number is a fault in a threaded process: the number may already belong to a socket
or pipe another thread has just opened (seen as a Docker request failing with EBADF in a worker on
uvloop, whose pipe transport closed the fd through libuv and then closed the file object given to it).
The kernel tells: strace records every close(2), and a close of a number that is not open fails with EBADF.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import _unavailable

SCRIPT = textwrap.dedent("""
    import asyncio, sys
    import uvloop
    from corral.runtime.base import RunRequest
    from corral.runtime.process import ProcessRuntime

    async def main() -> None:
        rt = ProcessRuntime()
        lines: list[str] = []
        for i in range(5):
            req = RunRequest(execution_id=f"x{i}", job_id="j", task_id="t", task_name="t", node_id="n",
                             argv=["sh", "-c", "echo out; echo err >&2"])
            result = await rt.run(req, lambda stream, line: lines.append(line) or True, lambda pid: None)
            assert result.exit_code == 0, result
        assert sorted(lines) == sorted(["out", "err"] * 5), lines
        print("ran", flush=True)

    if sys.argv[1] == "uvloop":
        uvloop.run(main())
    else:
        asyncio.run(main())
""")


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_each_pipe_is_closed_once(loop: str, tmp_path: Path) -> None:
    strace = shutil.which("strace")
    if strace is None:
        _unavailable("strace is not installed (Debian's strace package)")
    trace = tmp_path / "trace"
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    done = subprocess.run([strace, "-f", "-qq", "-e", "trace=close", "-o", str(trace), sys.executable, str(script),
                           loop], capture_output=True, text=True, timeout=120)
    if "ptrace" in done.stderr and "Operation not permitted" in done.stderr:
        _unavailable(f"strace cannot trace here: {done.stderr.strip()[:200]}")
    assert done.returncode == 0 and "ran" in done.stdout, done.stderr[-2000:]
    twice = [ln for ln in trace.read_text().splitlines() if "EBADF" in ln]
    assert not twice, f"fds closed when not open (a second close): {twice[:5]}"
