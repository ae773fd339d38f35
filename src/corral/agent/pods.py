"""Pods on the worker: keep what the coordinator wants running here, and say how it goes.

One loop (:meth:`PodAgent.run`) calls ``Transport.sync_pods`` every heartbeat interval, and at once after
any local change, with the status of every pod instance on this node and the pods' output lines. The
answer is the whole desired set for the node: an instance that is missing is started, one that is not
listed (or listed with ``desired: stop``) is stopped (SIGTERM, SIGKILL after its ``grace``) and its
containers removed.

Each instance has a supervisor (:class:`PodInstance`), and each of its containers a loop that starts it,
probes it while it runs (liveness restarts it, readiness sets ``ready``), and applies the pod's restart
policy when it ends, with the crash-loop back-off of ``corral.domain.reconcile`` (the wait shows as
``reason: back-off 10s restarting <container>``).

A container with an image runs on Docker (``corral.runtime.pods_docker``): the pod's first such
container publishes the pod's ports and holds its network namespace, the others join it, so the
containers reach each other on localhost; when the first one is started again, the others are too (their
namespace went with it). A container without an image is a host process (``ProcessRuntime``: the clean
environment of host tasks, its own process group), given ``$PORT`` and ``$PORT_<NAME>``.

A worker that restarts finds its pod containers by their labels and reports them; those the coordinator
still wants are kept (adopted, not restarted), the rest are removed. A worker that stops in good order
stops its pods first: the node leaves, and what ran on it is placed elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import docker.errors
import httpx

from corral.agent.logbuf import LogBuffer
from corral.agent.transport import Refused, Rejected
from corral.domain.podenv import expand, port_env
from corral.domain.reconcile import backoff, backoff_reason, next_streak, pod_phase, restart_decision
from corral.runtime.base import FULL_PAUSE, Escalations, RunRequest, RunResult
from corral.runtime.docker import _in_thread, _Lines
from corral.runtime.pods_docker import DockerPods, Found, PodImageMissing, short_error
from corral.runtime.process import ProcessRuntime, base_env

if TYPE_CHECKING:
    from corral.agent.worker import Agent

log = logging.getLogger("corral.agent.pods")

SYNC_LINES = 2000  # output lines in one sync call
SYNC_LOG_BYTES = 1 << 20  # and their bytes, about
PER_CONTAINER_BYTES = 1 << 20  # output buffered per container before its reader slows down, then drops
TOTAL_LOG_BYTES = 16 << 20
LOG_DELAY_S = 0.25  # output waits at most about this long to be shipped
SHUTDOWN_GRACE_S = 3.0  # a worker stopping in good order gives each pod at most this long
JOIN_RESTART_GRACE_S = 1.0  # a container whose pod network was started again stops this fast
MAX_ERROR = 1000


def _now() -> float:
    return time.time()


async def _wait_event(ev: asyncio.Event, timeout: float) -> bool:
    """Wait for ``ev`` at most ``timeout`` seconds; whether it is set. (Not asyncio.wait_for: on Python
    3.11 it can swallow a cancel that comes as the event is set, and the loop would never end.)"""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await ev.wait()
    return ev.is_set()


def _exit_code(code: int | None) -> int | None:
    """A process killed by a signal as a shell (and Docker) says it: 128 + the signal."""
    return 128 - code if code is not None and code < 0 else code


def _start_time(pid: int) -> str | None:
    """When the process started (clock ticks since boot, from /proc): with its pid, it names one process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def write_pidfile(pid_dir: str, name: str, pid: int) -> str | None:
    path = os.path.join(pid_dir, name)
    try:
        os.makedirs(pid_dir, exist_ok=True)
        with open(path, "w") as f:
            f.write(f"{pid} {_start_time(pid) or ''}\n")
    except OSError as e:
        log.warning("cannot write %s: %s", path, e)
        return None
    return path


def kill_leftovers(pid_dir: str) -> int:
    """Kill the process groups of the pod processes a previous run left (a pid file each, checked against
    the process's start time, so that a pid used again by another process is left alone); how many."""
    try:
        names = os.listdir(pid_dir)
    except OSError:
        return 0
    n = 0
    for name in names:
        path = os.path.join(pid_dir, name)
        try:
            with open(path) as f:
                pid_s, _, start = f.read().strip().partition(" ")
            pid = int(pid_s)
            if start and _start_time(pid) == start:
                os.killpg(pid, signal.SIGKILL)
                n += 1
        except (OSError, ValueError):
            pass
        with contextlib.suppress(OSError):
            os.unlink(path)
    return n


@dataclass
class ContainerState:
    """What is known of one container of a pod instance, as sent to the coordinator."""

    spec: dict[str, Any]
    state: str = "waiting"
    reason: str | None = "starting"
    container_id: str | None = None
    restart_count: int = 0
    exit_code: int | None = None
    ready: bool = False
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    killed: str | None = None  # why this run is being stopped (a failed liveness probe)
    crashes: int = 0  # exits in a row, each before it ran 10 minutes (corral.domain.reconcile.next_streak)

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def wire(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "reason": self.reason,
                "container_id": self.container_id, "restart_count": self.restart_count,
                "exit_code": self.exit_code, "ready": self.ready,
                "error": self.error[:MAX_ERROR] if self.error else None,
                "started_at": self.started_at, "finished_at": self.finished_at}


class _Run(Protocol):
    """One start of one container: its id, how to wait for its end, stop it, and reach it."""

    id: str | None

    async def wait(self) -> int | None: ...
    async def stop(self, grace: float) -> None: ...
    async def exec(self, argv: list[str]) -> int: ...
    def target(self, port: int) -> tuple[str, int]: ...
    def close(self) -> None: ...


class _DockerRun:
    def __init__(self, owner: PodAgent, inst: PodInstance, cid: str, net_cid: str) -> None:
        self.owner, self.inst, self.net_cid = owner, inst, net_cid
        self.id: str | None = cid
        self.ip: str | None = None
        self.reader: asyncio.Future[None] | None = None
        self.stream: Any = None
        self._stop_reading = threading.Event()

    @property
    def pods(self) -> DockerPods:
        assert self.owner.docker is not None
        return self.owner.docker

    def follow(self, key: str, everything: bool) -> None:
        """Read the container's output (all of it, or from now on) on a thread of its own into the pods'
        log buffer. Called once it has started: the stream is opened on that thread, so its Engine call
        is not on the way to the start (nor to the status that says it runs)."""
        loop = asyncio.get_running_loop()
        stop = self._stop_reading
        owner = self.owner
        assert self.id is not None
        cid = self.id
        pods = self.pods

        def read() -> None:
            try:
                stream = pods.output(cid, everything)
            except Exception as why:  # removed already, or the Engine is away: its end is the waiter's
                log.debug("cannot read the output of container %s: %s", cid[:12], why)
                return
            self.stream = stream
            if stop.is_set():  # closed while the stream was being opened: the loop below ends at once
                stream.close()
            batch: list[tuple[str, str]] = []
            out, err = _Lines("stdout", batch), _Lines("stderr", batch)
            room = threading.Semaphore(4)

            def deliver(lines: list[tuple[str, str]]) -> None:
                try:
                    for stream_name, line in lines:
                        owner.add_line(key, stream_name, line)
                finally:
                    room.release()

            def hand_on() -> None:
                nonlocal batch
                if not batch:
                    return
                while not room.acquire(timeout=0.5):
                    if stop.is_set():
                        return
                try:
                    loop.call_soon_threadsafe(deliver, batch)
                except RuntimeError:
                    return
                batch = out.out = err.out = []
                if owner.logs.behind(key):
                    time.sleep(FULL_PAUSE)  # the reader pauses: the container's log holds what comes meanwhile

            with contextlib.suppress(Exception):  # a stream closed under us ends like one at its end
                for o, e in stream:
                    if o is not None:
                        out.feed(o)
                    if e is not None:
                        err.feed(e)
                    hand_on()
            out.flush()
            err.flush()
            hand_on()

        self.reader = _in_thread(read)

    async def wait(self) -> int | None:
        assert self.id is not None
        cid = self.id
        try:
            code = await _in_thread(lambda: self.pods.wait(cid))
        except docker.errors.NotFound:
            return None
        if self.reader is not None:  # what it said last goes before its end is reported
            await asyncio.wait({self.reader}, timeout=5)
        return code

    async def stop(self, grace: float) -> None:
        assert self.id is not None
        cid = self.id
        await _in_thread(lambda: self.pods.stop(cid, grace))

    def close(self) -> None:
        if self.reader is not None:
            self._stop_reading.set()
        if self.stream is not None:
            with contextlib.suppress(Exception):
                self.stream.close()

    async def exec(self, argv: list[str]) -> int:
        assert self.id is not None
        cid = self.id
        return await _in_thread(lambda: self.pods.exec(cid, argv))

    def target(self, port: int) -> tuple[str, int]:
        if self.ip:
            return self.ip, port
        host = self.inst.host_port(port)
        return (self.owner.host_ip if self.owner.host_ip != "0.0.0.0" else "127.0.0.1"), host or port


class _ProcessRun:
    def __init__(self, owner: PodAgent, inst: PodInstance, c: ContainerState, key: str) -> None:
        self.owner, self.inst, self.c, self.key = owner, inst, c, key
        self.started = asyncio.Event()
        self.task: asyncio.Task[RunResult] | None = None
        self.env: dict[str, str] = {}
        self.id: str | None = None
        self.pidfile: str | None = None
        self.workdir: str | None = None

    async def start(self) -> None:
        spec = self.c.spec
        self.env = {**{str(k): str(v) for k, v in (spec.get("env") or {}).items()},
                    **port_env(self.inst.ports, self.c.name)}
        argv = expand([*(spec.get("command") or ()), *(spec.get("args") or ())], self.env)
        if not argv:
            raise ValueError("a container without an image runs a host process: give it a command")
        workdir = spec.get("workingDir") or os.path.join(self.owner.work_dir, self.inst.instance_id, self.c.name)
        await asyncio.to_thread(os.makedirs, workdir, exist_ok=True)
        self.workdir = workdir
        req = RunRequest(execution_id=f"{self.inst.instance_id}-{self.c.name}", job_id=self.inst.pod_id,
                         task_id=self.inst.instance_id, task_name=self.c.name, node_id=self.owner.node_id,
                         argv=argv, env=self.env, workdir=workdir)

        def on_started(pid: str | None) -> None:
            self.id = pid
            self.started.set()
            if pid is not None:  # so that a worker restarted after a crash can end it (see _scan)
                self.pidfile = write_pidfile(self.owner.pid_dir, f"{self.inst.instance_id}-{self.c.name}", int(pid))

        def on_output(stream: str, line: str) -> bool:
            self.owner.add_line(self.key, stream, line)
            return not self.owner.logs.behind(self.key)

        assert self.owner.process is not None
        self.task = asyncio.create_task(self.owner.process.run(req, on_output, on_started))
        started = asyncio.create_task(self.started.wait())
        await asyncio.wait({self.task, started}, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if not self.started.is_set():
            result = self.task.result()
            raise ValueError(result.error or "the process did not start")

    async def wait(self) -> int | None:
        assert self.task is not None
        result = await asyncio.shield(self.task)
        if result.error:
            raise ValueError(result.error)
        return _exit_code(result.exit_code)

    async def stop(self, grace: float) -> None:
        if self.task is None or self.task.done():
            return
        if self.id is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(self.id), signal.SIGTERM)
        await asyncio.wait({self.task}, timeout=grace)
        if not self.task.done():
            self.task.cancel()  # the whole process group is killed
            await asyncio.gather(self.task, return_exceptions=True)

    def close(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self.pidfile is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.pidfile)

    async def exec(self, argv: list[str]) -> int:
        """A probe's command, as the process itself runs: its clean environment, its directory."""
        env = {**base_env(self.workdir or "/"), **self.env}
        cwd = self.workdir

        def run() -> int:
            return subprocess.run(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, check=False, timeout=60,
                                  start_new_session=True).returncode
        return await asyncio.to_thread(run)

    def target(self, port: int) -> tuple[str, int]:
        return "127.0.0.1", self.inst.host_port(port) or port


class PodInstance:
    """The supervisor of one pod instance on this node."""

    def __init__(self, owner: PodAgent, a: dict[str, Any], adopted: dict[str, Found]) -> None:
        self.owner = owner
        self.instance_id = str(a["instance_id"])
        self.pod_id = str(a["pod_id"])
        self.policy = str(a.get("restart_policy") or "Always")
        grace = a.get("grace")
        self.grace = float(grace) if isinstance(grace, int | float) else 10.0
        self.ports: list[dict[str, Any]] = list(a.get("ports") or ())
        self.containers = [ContainerState(dict(c)) for c in a.get("containers") or ()]
        self.adopted = dict(adopted)
        self.stopping = False
        self.stopped = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.runs: dict[str, _Run] = {}
        # The pod's network: held by its first container with an image; the others join it.
        self.holder = next((c for c in self.containers if c.spec.get("image")), None)
        self.net_cid: str | None = None
        self.net_gen = 0
        self.net_changed = asyncio.Event()
        self.creating: set[asyncio.Future[str]] = set()  # containers being created (see stop)

    # -- what the coordinator sees ------------------------------------------------------------------
    def phase(self) -> str:
        if self.stopped.is_set():
            return "stopped"
        return pod_phase(self.policy, [(c.state, c.exit_code) for c in self.containers])

    def status(self) -> dict[str, Any]:
        return {"instance_id": self.instance_id, "pod_id": self.pod_id, "phase": self.phase(),
                "containers": [c.wire() for c in self.containers], "ts": _now()}

    def host_port(self, container_port: int) -> int | None:
        for p in self.ports:
            if int(p.get("containerPort") or 0) == container_port and p.get("hostPort"):
                return int(p["hostPort"])
        return None

    # -- life ---------------------------------------------------------------------------------------
    def start(self) -> None:
        for c in self.containers:
            self.tasks.append(asyncio.create_task(self._supervise(c), name=f"pod-{self.instance_id}-{c.name}"))

    async def stop(self, grace: float | None = None) -> None:
        """Stop every container (SIGTERM, SIGKILL after the grace period; all at once) and remove them."""
        if self.stopping:
            await self.stopped.wait()
            return
        self.stopping = True
        self.net_changed.set()  # wakes a container waiting for the network
        g = self.grace if grace is None else min(grace, self.grace)
        for c in self.containers:
            if c.state == "waiting":
                c.reason = "stopping"
        self.owner.changed()
        await asyncio.gather(*(self._stop_one(r, g) for r in self.runs.values()))  # all at once, as kubelet
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.creating:
            await asyncio.wait(set(self.creating), timeout=60)
        if self.owner.docker is not None and self.holder is not None:
            await _in_thread(lambda: self._remove_all())
        for c in self.containers:
            if c.state != "terminated":
                c.state, c.finished_at = "terminated", c.finished_at or _now()
            c.reason, c.ready = "stopped", False
        self.stopped.set()
        self.owner.changed()

    async def _stop_one(self, run: _Run, grace: float) -> None:
        with contextlib.suppress(Exception):
            await run.stop(grace)

    def _remove_all(self) -> None:
        from corral.runtime.pods_docker import container_name
        assert self.owner.docker is not None
        for c in self.containers:
            if c.spec.get("image"):
                with contextlib.suppress(docker.errors.DockerException):
                    self.owner.docker.remove(container_name(self.instance_id, c.name))

    async def _network(self, c: ContainerState) -> tuple[str, int]:
        """The container whose network ``c`` joins, once it runs (and its generation)."""
        while self.net_cid is None and not self.stopping:
            if c.state != "waiting" or c.reason != f"waiting for {self.holder.name if self.holder else '?'}":
                c.state, c.reason = "waiting", f"waiting for {self.holder.name if self.holder else '?'}"
                self.owner.changed()
            self.net_changed.clear()
            await self.net_changed.wait()
        if self.stopping or self.net_cid is None:
            raise asyncio.CancelledError
        return self.net_cid, self.net_gen

    async def _start(self, c: ContainerState, key: str) -> tuple[_Run, int]:
        """Start ``c`` (or take the container a previous worker left, if it still runs)."""
        found = self.adopted.pop(c.name, None)
        gen = self.net_gen
        if not c.spec.get("image"):
            if self.owner.process is None:
                raise ValueError("this node has no process runtime: a container without an image needs one")
            prun = _ProcessRun(self.owner, self, c, key)
            await prun.start()
            return prun, gen
        pods = self.owner.docker
        if pods is None:
            raise ValueError("this node has no docker runtime")
        joins = c is not self.holder
        net = ""
        if joins:
            net, gen = await self._network(c)
        if found is not None and found.running:
            run = _DockerRun(self.owner, self, found.id, net or found.id)
            run.follow(key, everything=False)
            c.restart_count = max(c.restart_count, found.restarts)
            c.started_at = found.started_at
            log.info("pod %s: adopted container %s (%s)", self.pod_id, c.name, found.id[:12])
        else:
            if found is not None:  # it ended while the worker was away: that counts as an end
                c.restart_count = max(c.restart_count, found.restarts)
            # An admin's escalations, granted by the server: given only if this worker's operator allows them.
            escalations = Escalations.granted(c.spec.get("escalations"), self.owner.agent.config.escalations)
            creating = _in_thread(lambda: pods.create(
                node_id=self.owner.node_id, pod_id=self.pod_id, instance_id=self.instance_id, spec=c.spec,
                ports=self.ports, host_ip=self.owner.host_ip, network=net or None,
                restarts=c.restart_count, escalations=escalations))
            # A stop meanwhile waits for the create to finish before it removes what was made (a create
            # cannot be called back: the container would be left behind).
            self.creating.add(creating)
            creating.add_done_callback(self.creating.discard)
            cid = await asyncio.shield(creating)
            run = _DockerRun(self.owner, self, cid, net or cid)
            # create + start, as `docker run -d`; the output is read from the container's log after the
            # start (all of it: nothing written meanwhile is lost).
            await _in_thread(lambda: pods.start(cid))
            c.started_at = _now()
            run.follow(key, everything=True)
        if any((c.spec.get(k) or {}).get(a) for k in ("livenessProbe", "readinessProbe")
               for a in ("httpGet", "tcpSocket")):  # where its network probes go (one more Engine call)
            net_cid = run.net_cid
            run.ip = await _in_thread(lambda: pods.ip(net_cid))
        return run, gen

    async def _supervise(self, c: ContainerState) -> None:
        key = f"{self.instance_id}/{c.name}"
        found = self.adopted.get(c.name)
        ended_away = found is not None and not found.running
        while not self.stopping:
            run: _Run | None = None
            code: int | None = None
            error: str | None = None
            rejoin = False
            ran_from = _now()
            try:
                if ended_away and found is not None:  # it ended while the worker was away: an end like any
                    ended_away = False
                    self.adopted.pop(c.name, None)
                    c.restart_count, c.container_id = max(c.restart_count, found.restarts), found.id
                    code, ran_from = found.exit_code, found.started_at or _now()
                else:
                    run, gen = await self._start(c, key)
                    self.runs[c.name] = run
                    # exit_code and error stay those of its last end (why it was restarted) until the next.
                    c.state, c.reason, c.container_id, c.finished_at = "running", None, run.id, None
                    c.ready = not c.spec.get("readinessProbe")
                    ran_from = c.started_at or _now()
                    if c is self.holder and run.id is not None:
                        self.net_cid, self.net_gen = run.id, self.net_gen + 1
                        self.net_changed.set()
                    self.owner.changed()
                    probes = [asyncio.create_task(self._probe(c, run, kind))
                              for kind in ("livenessProbe", "readinessProbe") if c.spec.get(kind)]
                    try:
                        code, rejoin = await self._wait(c, run, gen)
                    finally:
                        for p in probes:
                            p.cancel()
                        await asyncio.gather(*probes, return_exceptions=True)
            except asyncio.CancelledError:
                if self.stopping:
                    return
                raise
            except (PodImageMissing, ValueError, OSError, docker.errors.DockerException) as e:
                error = short_error(e) if isinstance(e, docker.errors.DockerException) else str(e)
                log.warning("pod %s: container %s: %s", self.pod_id, c.name, error)
            finally:
                if run is not None:
                    run.close()
                if c is self.holder:
                    self.net_cid = None  # whoever joins next waits for its next start
            if self.stopping:
                c.state, c.exit_code, c.finished_at, c.ready = "terminated", code, _now(), False
                return
            if rejoin:  # the pod's network was started again: so is this container (not a crash)
                continue
            c.state, c.ready, c.finished_at = "terminated", False, _now()
            c.exit_code = code
            c.error, c.killed = error or c.killed, None  # why it ended, if not by itself
            c.reason = "Completed" if code == 0 and not error else "Error"
            self.owner.changed()
            if not restart_decision(self.policy, None if error else code):
                await self.stopped.wait()  # ended for good: nothing to do until the pod is stopped
                return
            c.crashes = next_streak(c.crashes, _now() - ran_from)
            delay = backoff(c.crashes)
            if delay > 0:
                c.state, c.reason = "waiting", backoff_reason(c.name, delay)
                self.owner.changed()
                log.info("pod %s: container %s ended (%s); restarting in %gs", self.pod_id, c.name,
                         error or f"exit code {code}", delay)
                await _wait_event(self.stopped, delay)
                if self.stopping:
                    return
            c.restart_count += 1

    async def _wait(self, c: ContainerState, run: _Run, gen: int) -> tuple[int | None, bool]:
        """Wait for the container's end: (its exit code, False); or, for one that joined the pod's
        network, until that network is started again: it is stopped, and (None, True)."""
        ended = asyncio.ensure_future(run.wait())
        if c is self.holder or not c.spec.get("image"):
            return await ended, False
        while True:
            changed = asyncio.ensure_future(self.net_changed.wait())
            await asyncio.wait({ended, changed}, return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
            if ended.done():
                return ended.result(), False
            if self.stopping:
                return await ended, False
            if self.net_gen != gen:
                await run.stop(JOIN_RESTART_GRACE_S)
                with contextlib.suppress(Exception):
                    await ended
                return None, True
            self.net_changed.clear()

    # -- probes -------------------------------------------------------------------------------------
    async def _probe(self, c: ContainerState, run: _Run, kind: str) -> None:
        spec = c.spec[kind]
        period = float(spec.get("periodSeconds") or 10)
        timeout = float(spec.get("timeoutSeconds") or 1)
        failure_threshold = int(spec.get("failureThreshold") or 3)
        success_threshold = int(spec.get("successThreshold") or 1)
        await asyncio.sleep(float(spec.get("initialDelaySeconds") or 0))
        successes = failures = 0
        while True:
            why = await self._check(c, run, spec, timeout)
            if why is None:
                successes, failures = successes + 1, 0
            else:
                successes, failures = 0, failures + 1
            if kind == "readinessProbe":
                ready = c.ready
                if why is None and successes >= success_threshold:
                    ready = True
                elif why is not None and failures >= failure_threshold:
                    ready = False
                if ready != c.ready:
                    c.ready = ready
                    if not ready:
                        c.error = f"readiness probe failed: {why}"
                    elif c.error and c.error.startswith("readiness probe failed"):
                        c.error = None
                    self.owner.changed()
            elif failures >= failure_threshold:
                c.error = c.killed = f"liveness probe failed {failures} times: {why}"
                log.info("pod %s: container %s: %s; restarting it", self.pod_id, c.name, c.error)
                self.owner.changed()
                await run.stop(self.grace)
                return
            await asyncio.sleep(period)

    def _port(self, c: ContainerState, port: Any) -> int:
        if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
            return int(port)
        for cs in self.containers:
            for p in cs.spec.get("ports") or ():
                if p.get("name") == port:
                    return int(p["containerPort"])
        raise ValueError(f"no port named {port!r}")

    async def _check(self, c: ContainerState, run: _Run, spec: dict[str, Any], timeout: float) -> str | None:
        """None when the probe succeeds, else why it failed. A probe reaches its own pod only: a ``host``
        in it is not followed (the worker's network is not the pod's to probe)."""
        try:
            async with asyncio.timeout(timeout):
                if spec.get("exec"):
                    code = await run.exec(list(spec["exec"].get("command") or ()))
                    return None if code == 0 else f"exit code {code}"
                if spec.get("httpGet"):
                    g = spec["httpGet"]
                    host, port = run.target(self._port(c, g.get("port")))
                    path = str(g.get("path") or "/")
                    scheme = str(g.get("scheme") or "HTTP").lower()
                    url = f"{scheme}://{host}:{port}{path if path.startswith('/') else '/' + path}"
                    r = await self.owner.http.get(url)
                    return None if 200 <= r.status_code < 400 else f"HTTP {r.status_code} from {path}"
                if spec.get("tcpSocket"):
                    host, port = run.target(self._port(c, spec["tcpSocket"].get("port")))
                    _, w = await asyncio.open_connection(host, port)
                    w.close()
                    with contextlib.suppress(Exception):
                        await w.wait_closed()
                    return None
                return "no probe handler (exec, httpGet or tcpSocket)"
        except TimeoutError:
            return f"timed out after {timeout:g}s"
        except (OSError, ValueError, httpx.HTTPError, docker.errors.DockerException) as e:
            return short_error(e) if isinstance(e, docker.errors.DockerException) else (str(e) or type(e).__name__)


@dataclass
class _Gone:
    status: dict[str, Any]
    sent: bool = False


@dataclass
class PodAgent:
    """The agent's pods: the sync loop and a supervisor per instance."""

    agent: Agent
    host_ip: str = "0.0.0.0"
    instances: dict[str, PodInstance] = field(default_factory=dict)
    gone: dict[str, _Gone] = field(default_factory=dict)
    found: dict[str, dict[str, Found]] = field(default_factory=dict)  # left by a previous run
    log_full: set[str] = field(default_factory=set)  # "<instance>/<container>" whose stored log is full
    synced: bool = False  # a sync has been answered since the start
    closing: bool = False  # the worker stops: nothing new starts

    def __post_init__(self) -> None:
        self.logs = LogBuffer(PER_CONTAINER_BYTES, TOTAL_LOG_BYTES)
        self._changed = asyncio.Event()
        rt = self.agent.runtimes.get("docker")
        client = getattr(rt, "client", None)
        self.docker: DockerPods | None = DockerPods(client) if client is not None else None
        self.process: ProcessRuntime | None = (ProcessRuntime() if "process" in self.agent.runtimes else None)
        self.work_dir = os.path.abspath(os.path.join(self.agent.config.data_dir, "pods"))
        self.pid_dir = os.path.join(self.work_dir, "pids")
        # Probes: no proxy from the worker's environment; an HTTPS probe does not check the pod's
        # certificate (as kubelet: a pod's own certificate is rarely one the node trusts).
        self.http = httpx.AsyncClient(follow_redirects=False, trust_env=False, verify=False)
        self._stopping: set[asyncio.Task[None]] = set()

    @property
    def node_id(self) -> str:
        return self.agent.node_id or ""

    def changed(self) -> None:
        self._changed.set()

    def add_line(self, key: str, stream: str, line: str) -> None:
        if key in self.log_full:
            return
        if self.logs.add(key, stream, line, _now()) and len(self.logs) >= 500:
            self._changed.set()

    # -- the loop -----------------------------------------------------------------------------------
    async def run(self) -> None:
        await self._scan()
        self._changed.set()  # the first sync at once: what this node has, and what it should run
        delay = 0.2
        while True:
            # Output waiting goes within LOG_DELAY_S; otherwise a sync every heartbeat, or at a change.
            await _wait_event(self._changed, min(self.agent.heartbeat_interval, LOG_DELAY_S)
                              if self.logs else self.agent.heartbeat_interval)
            await asyncio.sleep(0.02)  # changes that come together travel together
            self._changed.clear()
            try:
                await self.sync_once()
                delay = 0.2
            except (asyncio.CancelledError, Refused):
                raise
            except Exception as e:
                log.warning("pod sync failed (%s); retrying in %.1fs", e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                self._changed.set()

    async def _scan(self) -> None:
        """Find the pod containers a previous run of this worker left (running or not); end the host
        processes it left (they cannot be adopted: they are started again if still wanted)."""
        ended = await asyncio.to_thread(kill_leftovers, self.pid_dir)
        if ended:
            log.info("ended %d pod process group(s) left from a previous run", ended)
        if self.docker is None or not self.node_id:
            return
        pods = self.docker
        node = self.node_id
        try:
            found = await _in_thread(lambda: pods.found(node))
        except docker.errors.DockerException as e:
            log.warning("cannot list the pod containers left from a previous run: %s", short_error(e))
            return
        for f in found:
            self.found.setdefault(f.instance_id, {})[f.container] = f
        if found:
            log.info("found %d pod container(s) of %d instance(s) from a previous run", len(found), len(self.found))

    def _found_status(self, instance_id: str, cs: dict[str, Found]) -> dict[str, Any]:
        any_f = next(iter(cs.values()))
        containers = [{"name": f.container, "state": "running" if f.running else "terminated",
                       "reason": None if f.running else "Error" if f.exit_code else "Completed",
                       "container_id": f.id, "restart_count": f.restarts, "exit_code": f.exit_code,
                       "ready": False, "error": None, "started_at": f.started_at, "finished_at": f.finished_at}
                      for f in cs.values()]
        return {"instance_id": instance_id, "pod_id": any_f.pod_id, "phase": "running", "containers": containers,
                "ts": _now()}

    def body(self) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
        """The next sync's body, the lines it holds (put back if it fails), and the ids of the gone
        instances it reports."""
        pods = [inst.status() for inst in self.instances.values()]
        pods += [self._found_status(i, cs) for i, cs in self.found.items() if i not in self.instances and cs]
        pods += [g.status for g in self.gone.values()]
        taken = self.logs.take(SYNC_LINES, SYNC_LOG_BYTES)
        lines = []
        for t in taken:
            instance_id, _, container = t["execution_id"].rpartition("/")
            lines.append({"instance_id": instance_id, "container": container, "stream": t["stream"],
                          "line": t["line"], "ts": t["ts"]})
        return {"pods": pods, "logs": lines}, taken, list(self.gone)

    async def sync_once(self) -> None:
        if not self.node_id:
            return
        body, taken, gone = self.body()
        try:
            out = await self.agent.transport.sync_pods(self.node_id, body)
        except Rejected as e:
            log.warning("the coordinator refused a pod sync (%s); its %d output line(s) are dropped", e, len(taken))
            if not taken:
                raise
            return
        except Exception:
            self.logs.put_back(taken)
            raise
        for i in gone:
            if i in self.gone:
                self.gone[i].sent = True
        self.apply(out if isinstance(out, dict) else {})
        self.synced = True
        if self.logs:
            self._changed.set()

    def apply(self, out: dict[str, Any]) -> None:
        """Make this node run what the answer lists, and only that."""
        wanted = {str(a["instance_id"]): a for a in out.get("pods") or () if a.get("instance_id")}
        # Output whose stored log is full is not wanted: per container when the answer says which.
        if "log_full_containers" in out:
            full = {f"{x['instance_id']}/{x['container']}" for x in out.get("log_full_containers") or ()}
        else:
            full = {f"{i}/{c.name}" for i in out.get("log_full") or () if i in self.instances
                    for c in self.instances[i].containers}
        if full - self.log_full:
            self.log_full |= full
            self.logs.forget(full)
        for iid, inst in list(self.instances.items()):
            a = wanted.get(iid)
            if (a is None or a.get("desired") == "stop") and not inst.stopping:
                grace = a.get("grace") if a is not None else None
                self._stop_later(inst, float(grace) if grace is not None else None)
        for iid, a in wanted.items():
            if a.get("desired", "run") != "run" or iid in self.instances or self.closing:
                continue
            self.gone.pop(iid, None)
            inst = PodInstance(self, a, self.found.pop(iid, {}))
            self.instances[iid] = inst
            inst.start()
            log.info("pod %s: starting instance %s", inst.pod_id, iid)
        for iid, g in list(self.gone.items()):
            if g.sent and iid not in wanted:
                del self.gone[iid]
        # Left by a previous run and not wanted now (not listed, or to stop): removed, then said stopped.
        for iid in [i for i in self.found if wanted.get(i, {}).get("desired", "stop") != "run"]:
            cs = self.found.pop(iid)
            grace = wanted.get(iid, {}).get("grace")
            t = asyncio.create_task(self._remove_found(iid, cs, float(grace) if isinstance(grace, int | float)
                                                       else 2.0))
            self._stopping.add(t)
            t.add_done_callback(self._stopping.discard)

    def _stop_later(self, inst: PodInstance, grace: float | None) -> None:
        async def stop() -> None:
            try:
                await inst.stop(grace)
            finally:
                if self.instances.get(inst.instance_id) is inst:
                    del self.instances[inst.instance_id]
                self.log_full -= {f"{inst.instance_id}/{c.name}" for c in inst.containers}
                self.gone[inst.instance_id] = _Gone(inst.status())
                self.changed()
        t = asyncio.create_task(stop())
        self._stopping.add(t)
        t.add_done_callback(self._stopping.discard)

    async def _remove_found(self, instance_id: str, found: dict[str, Found], grace: float) -> None:
        pods = self.docker
        if pods is None:
            return

        def remove(f: Found) -> None:
            pods.stop(f.id, grace)
            pods.remove(f.id)

        log.info("removing the %d pod container(s) of instance %s: the coordinator no longer wants them",
                 len(found), instance_id)
        status = self._found_status(instance_id, found)
        with contextlib.suppress(docker.errors.DockerException):
            await asyncio.gather(*(_in_thread(functools.partial(remove, f)) for f in found.values()))
        for c in status["containers"]:
            c.update(state="terminated", reason="stopped", ready=False, finished_at=c["finished_at"] or _now())
        self.gone[instance_id] = _Gone({**status, "phase": "stopped", "ts": _now()})
        self.changed()

    async def close(self, grace: float = SHUTDOWN_GRACE_S) -> None:
        """The worker stops in good order: stop every pod (within ``grace`` each), tell the coordinator."""
        self.closing = True
        insts = list(self.instances.values())
        for inst in insts:
            self._stop_later(inst, grace)
        if self._stopping:
            await asyncio.wait(set(self._stopping), timeout=grace + 5)
        if insts and self.node_id:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self.sync_once()
        await self.http.aclose()

