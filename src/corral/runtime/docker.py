"""Docker containers through the Engine API: one hardened container per attempt, removed when it ends.

The docker SDK blocks, so every call runs off the event loop. Calls that touch the container (create,
start, kill, remove) run one at a time on a per-attempt thread, so a cleanup after a cancel runs only
after a create still in flight has finished and cannot leave that container behind. Waiting for the
exit and reading the output may block for as long as the task runs; each has a thread of its own, so
a busy worker never runs out of threads to kill a container with.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import docker
import docker.errors
import docker.types

from corral.runtime.base import OutputSink, RunRequest, RunResult, StartedSink

T = TypeVar("T")

PIDS_LIMIT = 512
MAX_LINE = 64 * 1024
DRAIN_TIMEOUT = 10.0  # seconds to wait for the output after the container has exited


class _ImageMissing(Exception):
    """The image is not here and could not be pulled; the message is for the user."""


def _short(e: BaseException) -> str:
    text = getattr(e, "explanation", None) or str(e) or type(e).__name__
    return str(text).strip().splitlines()[0][:300]


def _in_thread(fn: Callable[[], T]) -> asyncio.Future[T]:
    """Run ``fn`` on a thread of its own; the future resolves on the loop after what ``fn`` scheduled."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(value: T | None, error: BaseException | None) -> None:
        if fut.done():
            return
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(value)  # type: ignore[arg-type]  # None only with an error

    def body() -> None:
        value: T | None = None
        error: BaseException | None = None
        try:
            value = fn()
        except BaseException as e:  # handed to the awaiting task
            error = e
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=body, name="corral-docker", daemon=True).start()
    return fut


class _Lines:
    """Splits one stream's chunks into lines and hands them to ``emit``."""

    def __init__(self, name: str, emit: Callable[[str, str], None]) -> None:
        self.name, self.emit, self.buf = name, emit, b""

    def feed(self, chunk: bytes) -> None:
        *lines, self.buf = (self.buf + chunk).split(b"\n")
        for line in lines:
            self.emit(self.name, line.decode("utf-8", "replace"))
        while len(self.buf) > MAX_LINE:  # a line with no end in sight: pass it on in pieces
            piece, self.buf = self.buf[:MAX_LINE], self.buf[MAX_LINE:]
            self.emit(self.name, piece.decode("utf-8", "replace"))

    def flush(self) -> None:
        if self.buf:
            self.emit(self.name, self.buf.decode("utf-8", "replace"))
            self.buf = b""


class DockerRuntime:
    """Runs each attempt in a container named ``corral-<execution_id>``, labelled for :meth:`reap`."""

    name = "docker"

    def __init__(self, client: docker.DockerClient | None = None, pull: bool = True) -> None:
        self.client = client if client is not None else docker.from_env()
        self.pull = pull

    @classmethod
    def available(cls) -> bool:
        """Whether a Docker Engine answers here (within about two seconds)."""
        try:
            client = docker.from_env(timeout=2)
        except Exception:
            return False
        try:
            return bool(client.ping())
        except Exception:
            return False
        finally:
            client.close()

    def _pull(self, image: str) -> str | None:
        """Pull a missing image; the error to show the user, or None."""
        if not self.pull:
            return f"image {image!r} is not present and pulling is off"
        try:
            self.client.images.pull(image)
            return None
        except docker.errors.DockerException as e:
            return f"image {image!r} could not be pulled: {_short(e)}"

    def _create(self, req: RunRequest, name: str) -> str:
        """Create the container and return its id, with as few Engine calls as `docker run` makes: the
        image is pulled only when the create says it is missing, and a leftover of the same name (after
        a crash) is removed only when the create says the name is taken."""
        api = self.client.api
        gpus = [docker.types.DeviceRequest(device_ids=[str(g) for g in req.gpus], capabilities=[["gpu"]])]
        host = api.create_host_config(
            nano_cpus=int(req.cpu_limit * 1e9) if req.cpu_limit is not None else None,
            mem_limit=req.memory_limit, privileged=False, cap_drop=["ALL"],
            security_opt=["no-new-privileges"], pids_limit=PIDS_LIMIT,
            device_requests=gpus if req.gpus else None,
        )
        labels = {"corral.execution": req.execution_id, "corral.job": req.job_id, "corral.task": req.task_id,
                  "corral.node": req.node_id, "corral.task_name": req.task_name}

        def create() -> str:
            out = api.create_container(
                req.image, command=list(req.argv), entrypoint=req.entrypoint, environment=dict(req.env),
                working_dir=req.workdir, name=name, detach=True, tty=False, stdin_open=False, labels=labels,
                host_config=host)
            return str(out["Id"])

        for _ in range(3):
            try:
                return create()
            except docker.errors.ImageNotFound:
                error = self._pull(str(req.image))
                if error:
                    raise _ImageMissing(error) from None
            except docker.errors.APIError as e:
                if e.status_code != 409:
                    raise
                self._remove(name)  # the name is taken: a leftover from a crash
        return create()

    def _remove(self, name: str) -> bool:
        """Kill and remove the container called ``name`` (or with this id); whether there was one."""
        try:
            self.client.api.remove_container(name, force=True)  # force: SIGKILL first if it runs
        except docker.errors.NotFound:
            return False
        return True

    async def run(self, req: RunRequest, on_output: OutputSink, on_started: StartedSink) -> RunResult:
        if not req.image:
            return RunResult(None, "the docker runtime needs an image")
        name = f"corral-{req.execution_id}"
        loop = asyncio.get_running_loop()
        api = self.client.api

        live = True  # cleared on cancel: output that comes after is dropped, as ProcessRuntime does
        gate = threading.Event()  # no output before on_started

        def deliver(stream: str, line: str) -> None:
            if live:
                on_output(stream, line)

        def emit(stream: str, line: str) -> None:
            loop.call_soon_threadsafe(deliver, stream, line)

        def read(chunks: Any) -> None:
            gate.wait()
            out, err = _Lines("stdout", emit), _Lines("stderr", emit)
            with contextlib.suppress(Exception):  # a stream closed under us ends like one at its end
                for o, e in chunks:
                    if o is not None:
                        out.feed(o)
                    if e is not None:
                        err.feed(e)
            out.flush()
            err.flush()

        serial = ThreadPoolExecutor(1, thread_name_prefix=name)
        chunks: Any = None
        try:
            try:
                cid = await loop.run_in_executor(serial, self._create, req, name)
                chunks = await loop.run_in_executor(serial, lambda: api.attach(
                    cid, stdout=True, stderr=True, stream=True, logs=True, demux=True))
            except _ImageMissing as e:
                return RunResult(None, str(e))
            except docker.errors.DockerException as e:
                await loop.run_in_executor(serial, self._remove, name)
                return RunResult(None, f"could not create container: {_short(e)}")
            reader = _in_thread(lambda: read(chunks))
            try:
                await loop.run_in_executor(serial, api.start, cid)
            except docker.errors.DockerException as e:
                await loop.run_in_executor(serial, self._remove, name)
                return RunResult(None, f"could not start container: {_short(e)}")
            on_started(cid)
            gate.set()
            try:
                status = await _in_thread(lambda: api.wait(cid))
            except docker.errors.DockerException as e:
                await loop.run_in_executor(serial, self._remove, name)
                return RunResult(None, f"lost track of the container: {_short(e)}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(reader), DRAIN_TIMEOUT)
            with contextlib.suppress(docker.errors.DockerException):  # else reap() takes it later
                await loop.run_in_executor(serial, self._remove, name)
            return RunResult(int(status["StatusCode"]))
        except BaseException:  # a cancel or timeout above all: nothing may be left behind
            live = False
            with contextlib.suppress(Exception):
                await asyncio.shield(loop.run_in_executor(serial, self._remove, name))
            raise
        finally:
            live = False
            gate.set()
            if chunks is not None:
                with contextlib.suppress(Exception):  # unblocks a reader still waiting for data
                    chunks.close()
            serial.shutdown(wait=False)

    async def reap(self, node_id: str, keep: set[str]) -> list[str]:
        def sweep() -> list[str]:
            removed: list[str] = []
            for c in self.client.containers.list(all=True, filters={"label": f"corral.node={node_id}"}):
                execution = c.labels.get("corral.execution")
                if execution not in keep:
                    with contextlib.suppress(docker.errors.NotFound):
                        c.remove(force=True)
                        removed.append(str(execution))
            return removed

        return await _in_thread(sweep)
