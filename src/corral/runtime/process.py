"""Host processes: each attempt runs in its own process group, killed whole on cancel or timeout.

Processes are started with ``subprocess.Popen`` (vfork + exec: cheap even from a large server process)
and then watched from the event loop: their pipes through stream readers, their exit through a pidfd.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from typing import cast

from corral.runtime import scratch
from corral.runtime.base import FULL_PAUSE, MAX_LINE, OutputSink, RunRequest, RunResult, StartedSink

SLICE = 2048  # lines handed on per turn of the event loop: a flood must not hold the loop
# What a host task gets besides the variables it asked for: nothing of the worker's own environment
# (its token, its database URL, whatever its shell had) reaches a task.
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BASE_LANG = "C.UTF-8"


def base_env(home: str) -> dict[str, str]:
    """The environment every host task starts from; the task's own variables override it."""
    return {"PATH": BASE_PATH, "HOME": home, "LANG": BASE_LANG}


class _Lines(asyncio.Protocol):
    """Reads one pipe, hands its output on line by line, and resolves ``done`` at end of file.

    A protocol rather than a StreamReader and a task per pipe: this runs for every line of every task.
    At most SLICE lines are handed on per turn of the loop, and the pipe is not read while more wait.
    While the sink says the output is behind, one line is handed on every FULL_PAUSE until it says
    otherwise: the task waits on its writes until its output has been shipped. So what is held here
    stays bounded, and other work on the loop (heartbeats, timeouts, the API) goes on.
    """

    def __init__(self, name: str, sink: OutputSink, done: asyncio.Future[None]) -> None:
        self.name, self.sink, self.done = name, sink, done
        self.buf = b""
        self.transport: asyncio.ReadTransport | None = None
        self.paused = False
        self.later = False  # a turn is scheduled
        self.behind = False  # the sink said so at the last line
        self.eof = False
        self.timer: asyncio.Handle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.ReadTransport, transport)  # uvloop's does not subclass it

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.later:
            self._turn()

    def _turn(self) -> None:
        self.later = False
        # Once the writer is gone there is nobody left to slow down: what is left goes at full speed.
        limit = 1 if self.behind and not self.eof else SLICE
        *lines, self.buf = self.buf.split(b"\n", limit)
        behind = False
        for line in lines:
            behind = self.sink(self.name, line.decode("utf-8", "replace")) is False
        if len(lines) < limit:  # every whole line is out
            while len(self.buf) > MAX_LINE:  # a very long line: hand it on in pieces
                piece, self.buf = self.buf[:MAX_LINE], self.buf[MAX_LINE:]
                behind = self.sink(self.name, piece.decode("utf-8", "replace")) is False
        self.behind = behind
        if len(lines) == limit and (self.buf or behind):  # more lines may wait, or the sink is behind
            self._pause()
            self.later = True
            loop = asyncio.get_running_loop()
            self.timer = (loop.call_later(FULL_PAUSE, self._turn) if behind and not self.eof
                          else loop.call_soon(self._turn))
        elif self.eof:
            self._finish()
        elif self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def _pause(self) -> None:
        if not self.paused and not self.eof and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        if not self.later:
            self._turn()

    def abort(self) -> None:
        """The attempt is over (cancelled): drop what is left and let go of the pipe."""
        if self.timer is not None:
            self.timer.cancel()
        self.buf = b""
        self.eof = True
        if self.transport is not None:
            self.transport.close()
        if not self.done.done():
            self.done.set_result(None)

    def _finish(self) -> None:
        if self.buf:
            self.sink(self.name, self.buf.decode("utf-8", "replace"))
            self.buf = b""
        if not self.done.done():
            self.done.set_result(None)


async def _read(loop: asyncio.AbstractEventLoop, fd: int, name: str, sink: OutputSink) -> _Lines:
    done: asyncio.Future[None] = loop.create_future()
    _, lines = await loop.connect_read_pipe(lambda: _Lines(name, sink, done), os.fdopen(fd, "rb", buffering=0))
    return lines


async def _wait_exit(loop: asyncio.AbstractEventLoop, proc: subprocess.Popen[bytes]) -> int:
    """The exit status, learnt from a pidfd becoming readable (no thread, no SIGCHLD handler)."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        return await asyncio.to_thread(proc.wait)
    done = loop.create_future()
    def exited() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(pidfd, exited)
    try:
        await done
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    return proc.wait()


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class ProcessRuntime:
    """Runs ``argv`` directly on the host, in a clean environment (see base_env). GPUs are handed over
    with ``CUDA_VISIBLE_DEVICES``."""

    name = "process"

    def __init__(self, base_dir: str | None = None) -> None:
        self.base_dir = base_dir
        self._which: dict[str, str] = {}  # searching PATH costs more than the spawn itself

    def _resolve(self, exe: str) -> str:
        if "/" in exe:
            return exe
        found = self._which.get(exe)
        if found is None:
            found = shutil.which(exe, path=BASE_PATH) or exe
            self._which[exe] = found
        return found

    async def run(self, req: RunRequest, on_output: OutputSink, on_started: StartedSink) -> RunResult:
        loop = asyncio.get_running_loop()
        if req.mounts or req.sidecars:
            return RunResult(None, "mounts and sidecars need a container task (an image)")
        cwd = req.workdir or self.base_dir
        if req.files:
            # The given workdir (made if missing), else work/ in the scratch directory, becomes the cwd.
            if req.workdir is None and (req.scratch is None or req.scratch.dir is None):
                return RunResult(None, "files need a working directory")
            cwd = req.workdir or os.path.join(str(req.scratch and req.scratch.dir), scratch.WORK)
            try:
                await asyncio.to_thread(scratch.write_files, cwd, req.files)
            except (OSError, ValueError) as e:
                return RunResult(None, f"could not write the task's files to {cwd}: {e}")
        # HOME: the task's working directory, else its scratch (its own directory, or the shared one).
        if cwd:
            home = cwd
        elif req.scratch is not None:
            home = req.scratch.dir or os.path.dirname(req.scratch.output)
        else:
            home = tempfile.gettempdir()
        extra = {**base_env(home), **req.env}
        if req.scratch is not None:
            extra.update(scratch.env_for(req.scratch.output, req.scratch.progress))
        if req.gpus:
            extra["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in req.gpus)
        env = {os.fsencode(k): os.fsencode(v) for k, v in extra.items()}
        argv = list(req.entrypoint or []) + list(req.argv)
        if argv and "PATH" not in req.env:
            argv[0] = self._resolve(argv[0])
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w, env=env,
                                    cwd=cwd, start_new_session=True)
        except (OSError, ValueError) as e:
            for fd in (out_r, err_r):
                os.close(fd)
            status = 127 if isinstance(e, FileNotFoundError) else 126 if isinstance(e, PermissionError) else None
            return RunResult(status, f"could not start {argv[0]!r}: {e}")
        finally:
            os.close(out_w)
            os.close(err_w)
        on_started(str(proc.pid))
        pipes = [await _read(loop, out_r, "stdout", on_output), await _read(loop, err_r, "stderr", on_output)]
        try:
            code = await _wait_exit(loop, proc)
            # As in a container, the attempt ends with its main process: what it left running in its
            # group goes too. Output already in the pipes is still read to the end.
            _kill_group(proc.pid)
            await asyncio.gather(*(p.done for p in pipes))
        except asyncio.CancelledError:
            _kill_group(proc.pid)
            for p in pipes:
                p.abort()
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.to_thread(proc.wait))
            raise
        finally:
            # Whatever the main process left running in its group goes with it.
            _kill_group(proc.pid)
        return RunResult(code)

    async def reap(self, node_id: str, keep: set[str]) -> list[str]:
        # Process groups leave no record to find after a worker restart, so nothing to reap here.
        return []
