"""Host processes: each attempt runs in its own process group, killed whole on cancel or timeout."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from corral.runtime.base import OutputSink, RunRequest, RunResult, StartedSink

MAX_LINE = 64 * 1024


async def _pump(stream: asyncio.StreamReader, name: str, sink: OutputSink) -> None:
    while True:
        try:
            line = await stream.readline()
        except ValueError:  # a line longer than the limit: take what is buffered
            line = await stream.read(MAX_LINE)
        if not line:
            return
        sink(name, line.decode("utf-8", "replace").rstrip("\n"))


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class ProcessRuntime:
    """Runs ``argv`` directly on the host. GPUs are handed over with ``CUDA_VISIBLE_DEVICES``."""

    name = "process"

    def __init__(self, base_dir: str | None = None) -> None:
        self.base_dir = base_dir

    async def run(self, req: RunRequest, on_output: OutputSink, on_started: StartedSink) -> RunResult:
        env = dict(os.environ)
        env.update(req.env)
        if req.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in req.gpus)
        argv = list(req.entrypoint or []) + list(req.argv)
        cwd = req.workdir or self.base_dir
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env, cwd=cwd, start_new_session=True, limit=MAX_LINE,
            )
        except (OSError, ValueError) as e:
            return RunResult(None, f"could not start {argv[0]!r}: {e}")
        on_started(str(proc.pid))
        assert proc.stdout is not None and proc.stderr is not None
        pumps = asyncio.gather(_pump(proc.stdout, "stdout", on_output), _pump(proc.stderr, "stderr", on_output))
        try:
            code = await proc.wait()
            await pumps
        except asyncio.CancelledError:
            _kill_group(proc.pid)
            with contextlib.suppress(Exception):
                await asyncio.shield(proc.wait())
            pumps.cancel()
            raise
        finally:
            # Whatever the main process left running in its group goes with it.
            _kill_group(proc.pid)
        return RunResult(code)

    async def reap(self, node_id: str, keep: set[str]) -> list[str]:
        # Process groups die with a killed worker only if they were its children; there is no
        # record of them to find after a restart, so nothing to reap here.
        return []
