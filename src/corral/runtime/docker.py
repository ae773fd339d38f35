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
import functools
import os
import re
import struct
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import docker
import docker.errors
import docker.types
import httpx

from corral.domain.paths import under
from corral.runtime import scratch
from corral.runtime.base import (
    FULL_PAUSE,
    MAX_LINE,
    Escalations,
    Held,
    OutputSink,
    Probe,
    RegistryAuth,
    RunRequest,
    RunResult,
    StartedSink,
    exec_failure_status,
)

T = TypeVar("T")

PIDS_LIMIT = 512
# Batches of lines handed by a reader thread to the event loop and not yet delivered: past this the
# reader waits (and the container's writes with it), so output can neither pile up in the loop's queue
# nor keep it busy with one call per line.
MAX_BATCHES_IN_FLIGHT = 4
DRAIN_TIMEOUT = 10.0  # seconds to wait for the output after the container has exited
SIDECAR_DRAIN_TIMEOUT = 2.0  # seconds to wait for a sidecar's last output once it is removed
PROBE_EVERY = (0.1, 1.0)  # seconds between a probe's tries: the first wait, doubling up to the second
PROBE_REQUEST_TIMEOUT = 3.0  # seconds one try of a probe may take
SCRATCH_TARGET = "/corral"  # where the execution's scratch directory appears in the main container


def hardening(esc: Escalations | None, cap_drop: tuple[str, ...] = ("ALL",)) -> dict[str, Any]:
    """The host config's hardening of a container (docker's create_host_config arguments): unprivileged,
    ``cap_drop`` dropped, no-new-privileges, namespaces of its own, no device; less only by what an admin's
    task was granted (``esc``, see coordinator/policy.py). A privileged container keeps every capability."""
    if esc is None:
        return {"privileged": False, "cap_drop": list(cap_drop), "security_opt": ["no-new-privileges"]}
    out: dict[str, Any] = {"privileged": esc.privileged}
    if not esc.privileged:  # Docker adds cap_add after it drops cap_drop: the container has just those
        out.update(cap_drop=list(cap_drop), security_opt=["no-new-privileges"])
        if esc.cap_add:
            out["cap_add"] = list(esc.cap_add)
    if esc.host_pid:
        out["pid_mode"] = "host"
    if esc.host_ipc:
        out["ipc_mode"] = "host"
    if esc.devices:
        out["devices"] = list(esc.devices)
    return out


class Refused(ValueError):
    """A mount the operator's policy does not allow, found where the mount is made; the message says why."""


def checked_bind(source: str, roots: tuple[str, ...]) -> str:
    """The real path of a bind mount's ``source`` (every symlink resolved), refused unless it lies under
    one of ``roots`` (resolved too). The real path is what is mounted, so a symlink a task left in an
    allowed directory (``rootlink -> /``) cannot lead the mount out of it."""
    if not roots:
        raise Refused(f"bind mount of '{source}' refused: this server allows no bind mounts")
    real = os.path.realpath(source)
    real_roots = [os.path.realpath(r) for r in roots]
    if not under(real, real_roots):
        shown = f"'{source}'" if real == source else f"'{source}' (really '{real}')"
        raise Refused(f"bind mount of {shown} refused: it is outside the allowed directories "
                      f"{', '.join(roots)}")
    return real


def _host_network(req: RunRequest) -> str | None:
    """'host' for a main container granted the host's network (with no sidecar holding its namespace)."""
    return "host" if req.escalations is not None and req.escalations.host_network else None


def job_volume(job_id: str, name: str) -> str:
    """The Docker volume a job's named volume ``name`` is: one of the job's own."""
    return f"corral-{job_id}-{name}"


class _ImageMissing(Exception):
    """The image is not here and could not be pulled; the message is for the user."""


def _host_name(name: str) -> str:
    """A task's name as a host name on its networks: lowercase letters, digits and '-' (at most 63)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:63].strip("-")


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


def _log_frames(api: Any, cid: str) -> Iterator[tuple[bytes | None, bytes | None]]:
    """A container's log from its start, followed until it ends, as ``(stdout, stderr)`` chunks (one of
    the two None). docker-py's ``logs`` would merge the two streams; this reads the Engine's multiplexed
    frames (an 8-byte header: the stream, then the length) itself, from the chunked response."""
    res = api._get(api._url("/containers/{0}/logs", cid),
                    params={"stdout": 1, "stderr": 1, "follow": 1, "tail": "all"}, stream=True)
    api._raise_for_status(res)

    def frames() -> Iterator[tuple[bytes | None, bytes | None]]:
        try:
            while True:
                head = res.raw.read(8)
                if len(head) < 8:
                    return
                kind, n = struct.unpack(">BxxxL", head)
                data = res.raw.read(n)
                yield (data, None) if kind == 1 else (None, data)
        finally:
            res.close()

    return frames()


class _Lines:
    """Splits one stream's chunks into lines and appends them, as (stream, line), to ``out``."""

    def __init__(self, name: str, out: list[tuple[str, str]]) -> None:
        self.name, self.out, self.buf = name, out, b""

    def feed(self, chunk: bytes) -> None:
        *lines, self.buf = (self.buf + chunk).split(b"\n")
        name = self.name
        self.out.extend((name, line.decode("utf-8", "replace")) for line in lines)
        while len(self.buf) > MAX_LINE:  # a line with no end in sight: pass it on in pieces
            piece, self.buf = self.buf[:MAX_LINE], self.buf[MAX_LINE:]
            self.out.append((name, piece.decode("utf-8", "replace")))

    def flush(self) -> None:
        if self.buf:
            self.out.append((self.name, self.buf.decode("utf-8", "replace")))
            self.buf = b""


def _exited_early(exited: asyncio.Future[Any]) -> str:
    code = exited.result()["StatusCode"] if exited.exception() is None else "?"
    return f"the container exited (status {code}) before its probe answered"


async def _probe(probe: Probe, host_port: int, exited: asyncio.Future[Any]) -> str | None:
    """Ask the probe until it answers 2xx (None), the container exits, or its time is up (the error)."""
    url = f"http://127.0.0.1:{host_port}{probe.path}"
    last = "no answer yet"
    pause = PROBE_EVERY[0]
    async with httpx.AsyncClient(timeout=PROBE_REQUEST_TIMEOUT, trust_env=False) as client:
        try:
            async with asyncio.timeout(probe.timeout):
                while True:
                    if exited.done():
                        return _exited_early(exited)
                    try:
                        r = await client.get(url)
                        if 200 <= r.status_code < 300:
                            return None
                        last = f"HTTP {r.status_code}"
                    except httpx.HTTPError as e:
                        last = type(e).__name__
                    await asyncio.wait([exited], timeout=pause)
                    pause = min(pause * 2, PROBE_EVERY[1])
        except TimeoutError:
            return (f"probe GET :{probe.port}{probe.path} did not answer 2xx within {probe.timeout:g}s "
                    f"(last: {last})")


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

    def _pull(self, image: str, registry: RegistryAuth | None = None) -> str | None:
        """Pull a missing image (with the task's registry credentials, if it has them); the error to show
        the user, or None."""
        if not self.pull:
            return f"image {image!r} is not present and pulling is off"
        try:
            if registry is not None:
                self.client.images.pull(image, auth_config={"username": registry.username,
                                                            "password": registry.password})
            else:
                self.client.images.pull(image)
            return None
        except docker.errors.DockerException as e:
            return f"image {image!r} could not be pulled: {_short(e)}"

    def _create(self, image: str, name: str, labels: dict[str, str], host: dict[str, Any], *,
                argv: list[str], entrypoint: list[str] | None, env: dict[str, str], workdir: str | None,
                registry: RegistryAuth | None = None, ports: list[tuple[int, str]] | None = None) -> str:
        """Create the container and return its id, with as few Engine calls as `docker run` makes: the
        image is pulled only when the create says it is missing, and a leftover of the same name (after
        a crash) is removed only when the create says the name is taken."""
        api = self.client.api

        def create() -> str:
            out = api.create_container(
                image, command=list(argv), entrypoint=entrypoint, environment=dict(env),
                working_dir=workdir, name=name, detach=True, tty=False, stdin_open=False, labels=labels,
                host_config=host, ports=ports or None)
            return str(out["Id"])

        for _ in range(3):
            try:
                return create()
            except docker.errors.ImageNotFound:
                error = self._pull(image, registry)
                if error:
                    raise _ImageMissing(error) from None
            except docker.errors.APIError as e:
                if e.status_code != 409:
                    raise
                self._remove(name)  # the name is taken: a leftover from a crash
        return create()

    def _host(self, *, cpu_limit: float | None = None, memory_limit: int | None = None, gpus: tuple[int, ...] = (),
              mounts: list[docker.types.Mount] | None = None, network_mode: str | None = None,
              port_bindings: dict[str, Any] | None = None, escalations: Escalations | None = None) -> dict[str, Any]:
        requests = [docker.types.DeviceRequest(device_ids=[str(g) for g in gpus], capabilities=[["gpu"]])]
        host: dict[str, Any] = self.client.api.create_host_config(
            nano_cpus=int(cpu_limit * 1e9) if cpu_limit is not None else None,
            mem_limit=memory_limit, pids_limit=PIDS_LIMIT,
            device_requests=requests if gpus else None, mounts=mounts or None, network_mode=network_mode,
            port_bindings=port_bindings or None, **hardening(escalations),
        )
        return host

    def _mounts(self, req: RunRequest) -> list[docker.types.Mount]:
        """The task's mounts as Docker makes them, after the operator's policy: a bind mount's real path
        must lie under an allowed directory; a named volume is one the operator allowed by name, or else
        one of the job's own (``corral-<job id>-<name>``, created and labelled here), so that a task never
        reaches another application's volume."""
        out = []
        for m in req.mounts:
            source = m.source
            if m.type == "bind":
                source = checked_bind(str(m.source), req.bind_roots)
            elif m.type == "volume" and source is not None and source not in req.volumes:
                source = job_volume(req.job_id, source)
                try:
                    vol = self.client.api.inspect_volume(source)
                except docker.errors.NotFound:
                    vol = self.client.api.create_volume(source, labels={
                        "corral.job": req.job_id, "corral.node": req.node_id, "corral.volume": str(m.source)})
                if (vol.get("Labels") or {}).get("corral.job") != req.job_id:
                    raise Refused(f"volume '{m.source}' refused: '{source}' exists and is not this job's")
            out.append(docker.types.Mount(m.target, source, type=m.type, read_only=m.readonly))
        return out

    def _prepare(self, req: RunRequest) -> tuple[list[docker.types.Mount], dict[str, str], str | None]:
        """The main container's mounts, environment and working directory; writes the task's files.

        The execution's scratch directory (the agent gives a container task one) is bind-mounted at
        /corral, open to every user: the container's user is not ours to know, and even its root has no
        CAP_DAC_OVERRIDE here. Files go to its work/, which is the working directory: at /corral/work,
        or bind-mounted at the task's workdir. A scratch without a directory is not seen in the
        container: its task has no $CORRAL_OUTPUT.
        """
        mounts = self._mounts(req)
        env = dict(req.env)
        workdir = req.workdir
        own = req.scratch.dir if req.scratch is not None else None
        if own is not None:
            os.chmod(own, 0o777)
            mounts.append(docker.types.Mount(SCRATCH_TARGET, own, type="bind"))
            env.update(scratch.env_for(f"{SCRATCH_TARGET}/{scratch.OUTPUT}", f"{SCRATCH_TARGET}/{scratch.PROGRESS}"))
        if req.files:
            if own is None:
                raise ValueError("files need a scratch directory")
            scratch.write_files(os.path.join(own, scratch.WORK), req.files, mode=0o777)
            if workdir is None:
                workdir = f"{SCRATCH_TARGET}/{scratch.WORK}"
            else:
                mounts.append(docker.types.Mount(workdir, os.path.join(own, scratch.WORK), type="bind"))
        return mounts, env, workdir

    def _join(self, cid: str, networks: tuple[str, ...], alias: str) -> None:
        """Attach the container to the task's networks (before it starts), reachable there as ``alias``
        (its task's name, as a host name). A network the node does not have is refused, saying so."""
        for net in networks:
            try:
                self.client.api.inspect_network(net)
            except docker.errors.NotFound:
                raise Refused(f"network {net!r} does not exist on this node: create it first "
                              f"(docker network create {net})") from None
            self.client.api.connect_container_to_network(cid, net, aliases=[alias] if alias else None)

    def _probe_port(self, cid: str, port: int) -> int | None:
        """The host port Docker gave the probe's container port (published on 127.0.0.1)."""
        ports = (self.client.api.inspect_container(cid).get("NetworkSettings") or {}).get("Ports") or {}
        for b in ports.get(f"{port}/tcp") or ():
            if b.get("HostPort"):
                return int(b["HostPort"])
        return None

    def _remove(self, name: str) -> bool:
        """Kill and remove the container called ``name`` (or with this id), and its anonymous volumes;
        whether there was one."""
        try:
            self.client.api.remove_container(name, force=True, v=True)  # force: SIGKILL first if it runs
        except docker.errors.NotFound:
            return False
        return True

    def _remove_all(self, names: list[str]) -> None:
        """Remove each of these containers that exists; one that cannot be removed is left to reap()."""
        for name in names:
            with contextlib.suppress(docker.errors.DockerException):
                self._remove(name)

    async def run(self, req: RunRequest, on_output: OutputSink, on_started: StartedSink) -> RunResult:
        """Run the main container, after its sidecars if it has any.

        Sidecars and the main container share one network namespace, the first sidecar's: it is
        started first (the others and then the main container join it with ``network_mode:
        container:<id>``), so a sidecar is already up when the main container starts and answers it on
        127.0.0.1. Should the first sidecar exit early, the others keep only the loopback interface.
        Sidecars are hardened as the main container is, each with the same CPU and memory limits (never
        none) and without its GPUs; their
        output goes to the task's log as "[sidecar <name>] <line>". They are removed once the main
        container has ended, however it ended.
        """
        if not req.image:
            return RunResult(None, "the docker runtime needs an image")
        name = f"corral-{req.execution_id}"
        side_names = [f"{name}-sidecar-{i}" for i in range(len(req.sidecars))]
        alias = _host_name(req.task_name)  # what the task is called on its networks
        everything = [name, *side_names]  # in the order of removal: the main container first
        loop = asyncio.get_running_loop()
        api = self.client.api
        labels = {"corral.execution": req.execution_id, "corral.job": req.job_id, "corral.task": req.task_id,
                  "corral.node": req.node_id, "corral.task_name": req.task_name}

        live = True  # cleared on cancel: output that comes after is dropped, as ProcessRuntime does
        gate = threading.Event()  # no output before on_started

        done_reading = threading.Event()  # the attempt is over: readers waiting for room give up
        exited = False  # the main container has: what is left of its output goes at full speed

        def read(chunks: Any, prefix: str) -> None:
            gate.wait()
            room = threading.BoundedSemaphore(MAX_BATCHES_IN_FLIGHT)
            batch: list[tuple[str, str]] = []
            out, err = _Lines("stdout", batch), _Lines("stderr", batch)

            def deliver(lines: list[tuple[str, str]], i: int = 0) -> None:
                """Hand on a batch's lines; while the sink says the output is behind (and the container
                runs), one line every FULL_PAUSE. The batch's room is freed once it is all out (or the
                attempt is over)."""
                n = len(lines)
                try:
                    while live and i < n:
                        stream, line = lines[i]
                        i += 1
                        if on_output(stream, prefix + line) is False and i < n and not exited:
                            loop.call_later(FULL_PAUSE, deliver, lines, i)
                            return
                except BaseException:
                    room.release()
                    raise
                room.release()

            def hand_on() -> bool:
                """Hand the batch to the loop once it has room for it; False once the attempt is over."""
                nonlocal batch
                if not batch:
                    return True
                while not room.acquire(timeout=0.5):
                    if done_reading.is_set():
                        return False
                try:
                    loop.call_soon_threadsafe(deliver, batch)
                except RuntimeError:  # the loop has closed
                    room.release()
                    return False
                batch = out.out = err.out = []
                return True

            with contextlib.suppress(Exception):  # a stream closed under us ends like one at its end
                for o, e in chunks:
                    if o is not None:
                        out.feed(o)
                    if e is not None:
                        err.feed(e)
                    if not hand_on():
                        return
            out.flush()
            err.flush()
            hand_on()

        serial = ThreadPoolExecutor(1, thread_name_prefix=name)
        streams: list[Any] = []  # attach streams, closed at the end
        side_readers: list[asyncio.Future[None]] = []

        async def attach(cid: str, prefix: str) -> asyncio.Future[None]:
            # Before the start, and live output only: the Engine subscribes an attach to the container's
            # streams before it answers, so nothing is missed; with logs=True it would also replay the log
            # file, and a line written between the subscription and that replay came twice (seen under load).
            chunks = await loop.run_in_executor(serial, lambda: api.attach(
                cid, stdout=True, stderr=True, stream=True, logs=False, demux=True))
            streams.append(chunks)
            return _in_thread(lambda: read(chunks, prefix))

        async def fail(message: str, status: int | None = None) -> RunResult:
            await loop.run_in_executor(serial, self._remove_all, everything)
            return RunResult(status, message)

        # The ports go on the container that holds the task's network namespace (the first sidecar's, or
        # the main one's). A probe is asked on its port's node port, or, for a port not published, on a
        # port Docker picks on 127.0.0.1 (as Tork does).
        bindings: dict[str, Any] = {f"{p.port}/{p.protocol}": (req.publish_ip, p.node_port) for p in req.ports}
        probe_at: int | None = None
        if req.probe is not None:
            probe_at = next((p.node_port for p in req.ports if p.port == req.probe.port and p.protocol == "tcp"),
                            None)
            if probe_at is None:
                bindings[f"{req.probe.port}/tcp"] = ("127.0.0.1", None)
        exposed = [(int(k.split("/")[0]), k.split("/")[1]) for k in bindings]
        holder: str | None = None  # the container that publishes them

        try:
            try:
                mounts, env, workdir = await loop.run_in_executor(serial, self._prepare, req)
            except Refused as e:
                return RunResult(None, str(e))
            except docker.errors.DockerException as e:
                return RunResult(None, f"could not prepare the task's volumes: {_short(e)}")
            except (OSError, ValueError) as e:
                return RunResult(None, f"could not prepare the task's directory: {e}")
            network: str | None = None
            for sc, sc_name in zip(req.sidecars, side_names, strict=True):
                what = f"sidecar {sc.name!r}"
                try:
                    sid = await loop.run_in_executor(serial, functools.partial(
                        self._create, sc.image, sc_name, {**labels, "corral.sidecar": sc.name},
                        self._host(cpu_limit=req.cpu_limit, memory_limit=req.memory_limit, network_mode=network,
                                   port_bindings=bindings if network is None else None),
                        argv=sc.argv, entrypoint=sc.entrypoint,
                        env=sc.env, workdir=None, ports=exposed if network is None else None))
                    holder = holder or sid
                    if network is None and req.networks:  # the first holds the network namespace
                        await loop.run_in_executor(serial, self._join, sid, req.networks, alias)
                    side_readers.append(await attach(sid, f"[sidecar {sc.name}] "))
                    await loop.run_in_executor(serial, api.start, sid)
                except Refused as e:
                    return await fail(str(e))
                except _ImageMissing as e:
                    return await fail(f"{what}: {e}")
                except docker.errors.DockerException as e:
                    return await fail(f"could not start {what}: {_short(e)}")
                network = network or f"container:{sid}"
            try:
                cid = await loop.run_in_executor(serial, functools.partial(
                    self._create, req.image, name, labels,
                    self._host(cpu_limit=req.cpu_limit, memory_limit=req.memory_limit, gpus=req.gpus,
                               mounts=mounts, network_mode=network or _host_network(req),
                               port_bindings=bindings if network is None else None, escalations=req.escalations),
                    argv=req.argv, entrypoint=req.entrypoint, env=env, workdir=workdir, registry=req.registry,
                    ports=exposed if network is None else None))
                holder = holder or cid
                if network is None and req.networks:
                    await loop.run_in_executor(serial, self._join, cid, req.networks, alias)
                reader = await attach(cid, "")
            except (Refused, _ImageMissing) as e:
                return await fail(str(e))
            except docker.errors.DockerException as e:
                return await fail(f"could not create container: {_short(e)}")
            try:
                await loop.run_in_executor(serial, api.start, cid)
            except docker.errors.DockerException as e:
                message = f"could not start container: {_short(e)}"
                return await fail(message, exec_failure_status(message))  # 127 or 126, as `docker run`
            waiting = _in_thread(lambda: api.wait(cid))
            if req.probe is not None:
                if probe_at is None:
                    try:
                        probe_at = await loop.run_in_executor(serial, self._probe_port, holder, req.probe.port)
                    except docker.errors.DockerException as e:
                        return await fail(f"could not read the probe's port: {_short(e)}")
                    if probe_at is None:  # a container that has exited has no ports any more
                        await asyncio.wait([waiting], timeout=2)
                        return await fail(_exited_early(waiting) if waiting.done()
                                          else f"the probe's port {req.probe.port} was not published")
                error = await _probe(req.probe, probe_at, waiting)
                if error is not None:
                    gate.set()  # what it said meanwhile is kept
                    return await fail(error)
            on_started(cid)
            gate.set()
            try:
                status = await waiting
            except docker.errors.DockerException as e:
                return await fail(f"lost track of the container: {_short(e)}")
            exited = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(reader), DRAIN_TIMEOUT)
            await loop.run_in_executor(serial, self._remove_all, everything)
            if side_readers:  # their streams end with their containers: what they said last is kept
                await asyncio.wait(side_readers, timeout=SIDECAR_DRAIN_TIMEOUT)
            return RunResult(int(status["StatusCode"]))
        except BaseException:  # a cancel or timeout above all: nothing may be left behind
            live = False
            with contextlib.suppress(Exception):
                await asyncio.shield(loop.run_in_executor(serial, self._remove_all, everything))
            raise
        finally:
            live = False
            gate.set()
            done_reading.set()
            for chunks in streams:
                with contextlib.suppress(Exception):  # unblocks a reader still waiting for data
                    chunks.close()
            serial.shutdown(wait=False)

    async def held(self, node_id: str, scratch_base: str) -> list[Held]:
        """The main containers of ``node_id`` that run, or have exited (with their status); a task with
        sidecars is not adopted (it is reaped and placed again, as before)."""
        def find() -> list[Held]:
            found: dict[str, Held] = {}
            with_sidecars: set[str] = set()
            for c in self.client.containers.list(all=True, filters={"label": f"corral.node={node_id}"}):
                execution = c.labels.get("corral.execution")
                if not execution:
                    continue
                if "corral.sidecar" in c.labels:
                    with_sidecars.add(execution)
                elif c.status == "running":
                    found[execution] = Held(execution, True, None, c.id)
                elif c.status == "exited":
                    code = (c.attrs.get("State") or {}).get("ExitCode")
                    if isinstance(code, int):
                        found[execution] = Held(execution, False, code, c.id)
            return [h for i, h in found.items() if i not in with_sidecars]

        return await _in_thread(find)

    async def resume(self, held: Held, skip_bytes: int, on_output: OutputSink,
                     on_started: StartedSink) -> RunResult:
        """Follow a container a previous run of the worker started: its output read again from its log
        (followed to its end), less the first ``skip_bytes`` (what the coordinator has stored); then its
        status, and the container removed. A line the previous run had read but not shipped is thus read
        again rather than lost. The bytes are counted in the log's order, which for a container that
        has exited is not always the order its stdout and stderr lines were first read in: where a task
        wrote to both, a line may come twice or be skipped."""
        cid = str(held.handle)
        loop = asyncio.get_running_loop()
        api = self.client.api
        live = True

        def deliver(lines: list[tuple[str, str]]) -> None:
            for stream, line in lines:
                if live:
                    on_output(stream, line)

        def read(chunks: Any) -> None:
            batch: list[tuple[str, str]] = []
            out, err = _Lines("stdout", batch), _Lines("stderr", batch)
            skip = skip_bytes

            def hand_on() -> None:
                nonlocal batch, skip
                keep: list[tuple[str, str]] = []
                for item in batch:
                    n = len(item[1].encode("utf-8", "replace")) + 1
                    if skip >= n:
                        skip -= n
                    else:
                        skip = 0
                        keep.append(item)
                if keep:
                    with contextlib.suppress(RuntimeError):
                        loop.call_soon_threadsafe(deliver, keep)
                batch.clear()

            with contextlib.suppress(Exception):
                for o, e in chunks:
                    if o is not None:
                        out.feed(o)
                    if e is not None:
                        err.feed(e)
                    hand_on()
            out.flush()
            err.flush()
            hand_on()

        chunks: Any = None
        try:
            if held.running:
                on_started(cid)
            chunks = await _in_thread(lambda: _log_frames(api, cid))
            reader = _in_thread(lambda: read(chunks))
            status = await _in_thread(lambda: api.wait(cid))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(reader), DRAIN_TIMEOUT)
            await asyncio.sleep(0)  # the last batch handed to the loop goes out first
            await _in_thread(lambda: self._remove_all([f"corral-{held.execution_id}"]))
            return RunResult(int(status["StatusCode"]))
        except docker.errors.DockerException as e:
            return RunResult(held.exit_code, None if held.exit_code is not None
                             else f"lost track of the container after a worker restart: {_short(e)}")
        except BaseException:
            live = False
            with contextlib.suppress(Exception):
                await asyncio.shield(_in_thread(lambda: self._remove_all([f"corral-{held.execution_id}"])))
            raise
        finally:
            live = False
            if chunks is not None:
                with contextlib.suppress(Exception):
                    chunks.close()

    async def reap(self, node_id: str, keep: set[str]) -> list[str]:
        def sweep() -> list[str]:
            # Main containers and sidecars alike carry the node's and the execution's labels.
            removed: dict[str, None] = {}
            for c in self.client.containers.list(all=True, filters={"label": f"corral.node={node_id}"}):
                execution = c.labels.get("corral.execution")
                if execution in keep:
                    continue
                try:
                    c.remove(force=True, v=True)
                except docker.errors.NotFound:
                    continue
                except docker.errors.APIError as e:
                    if e.status_code != 409:  # 409: its removal is already under way
                        raise
                removed[str(execution)] = None
            return list(removed)

        return await _in_thread(sweep)
