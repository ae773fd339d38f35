"""Pod containers through the Docker Engine API (the task path is runtime/docker.py).

A pod instance's containers are named ``corral-pod-<instance id>-<container>`` and labelled with the pod,
the instance, the container, the node (``corral.pod.node``: not ``corral.node``, so that the task
runtime's reaper leaves them alone) and the restart count, so that a worker that restarts finds them
again (:meth:`DockerPods.found`) and keeps them. The pod's first container with an image holds the
pod's network namespace and publishes its ports; the others join it (``network_mode=container:<id>``)
and reach it on localhost.

Every call blocks: the agent runs them off its event loop. Containers keep Docker's default capabilities
(as Kubernetes does; a server that changes user or binds a port needs them) less NET_RAW, with
no-new-privileges, a pids limit and a bounded json-file log, but for what an admin's pod was granted
(``corral.runtime.docker.hardening``).
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import docker
import docker.errors
import docker.types

from corral.domain.podenv import expand
from corral.runtime.base import Escalations
from corral.runtime.docker import hardening

POD_LABEL = "corral.pod"
INSTANCE_LABEL = "corral.instance"
CONTAINER_LABEL = "corral.container"
NODE_LABEL = "corral.pod.node"
RESTARTS_LABEL = "corral.restarts"
PIDS_LIMIT = 1024
LOG_CONFIG = {"max-size": "10m", "max-file": "2"}


def container_name(instance_id: str, container: str) -> str:
    return f"corral-pod-{instance_id}-{container}"


def short_error(e: BaseException) -> str:
    text = getattr(e, "explanation", None) or str(e) or type(e).__name__
    return str(text).strip().splitlines()[0][:300]


class PodImageMissing(Exception):
    """The image is not here and could not be pulled; the message is for the user."""


@dataclass(frozen=True, slots=True)
class Found:
    """A pod container this node left running (or exited) before it restarted."""

    id: str
    pod_id: str
    instance_id: str
    container: str
    running: bool
    exit_code: int | None
    started_at: float | None
    finished_at: float | None
    restarts: int


def _time(text: str | None) -> float | None:
    """Docker's RFC 3339 time (nanoseconds, 'Z') as a Unix time; None for its zero time."""
    if not text or text.startswith("0001-"):
        return None
    head, _, frac = text.rstrip("Z").partition(".")
    try:
        t = datetime.fromisoformat(head + "+00:00").timestamp()
    except ValueError:
        return None
    digits = "".join(ch for ch in frac if ch.isdigit())[:6]
    return t + (int(digits) / 10 ** len(digits) if digits else 0.0)


class Output:
    """A followed container log (Docker's multiplexed stream: frames of an 8-byte header, the stream
    (1 stdout, 2 stderr) and a big-endian length, then that many bytes) as (stdout, stderr) chunks. close(),
    from any thread, ends the iteration: it shuts the reading side of the connection down (closing the
    response would wait for the reading thread's lock), and the iteration closes the response as it ends."""

    def __init__(self, response: Any) -> None:
        self.response = response

    def __iter__(self) -> Iterator[tuple[bytes | None, bytes | None]]:
        raw = self.response.raw
        try:
            while True:
                header = raw.read(8)
                if len(header) < 8:
                    return
                kind, size = struct.unpack(">BxxxL", header)
                data = raw.read(size) if size else b""
                if size and not data:
                    return
                yield (data, None) if kind != 2 else (None, data)
        finally:
            self.response.close()

    def close(self) -> None:
        # Through urllib3, which refuses once the response has ended: its connection is then back in the
        # pool, perhaps carrying another request, which a shutdown of the socket here would break.
        with contextlib.suppress(OSError, ValueError, RuntimeError, AttributeError):
            self.response.raw.shutdown()


class DockerPods:
    def __init__(self, client: docker.DockerClient | None = None, pull: bool = True) -> None:
        self.client = client if client is not None else docker.from_env()
        self.pull = pull

    def create(self, *, node_id: str, pod_id: str, instance_id: str, spec: dict[str, Any],
               ports: list[dict[str, Any]], host_ip: str, network: str | None, restarts: int,
               escalations: Escalations | None = None) -> str:
        """Create (not start) one container of a pod instance and return its id. ``network``: the
        container whose network namespace it joins (None: it holds the pod's and publishes ``ports``).
        ``escalations``: what an admin's pod was granted (else hardened; the host's network goes to the
        container that holds the pod's, the others join it).
        A leftover of the same name is removed first; a missing image is pulled (PodImageMissing)."""
        name = container_name(instance_id, spec["name"])
        api = self.client.api
        labels = {POD_LABEL: pod_id, INSTANCE_LABEL: instance_id, CONTAINER_LABEL: spec["name"],
                  NODE_LABEL: node_id, RESTARTS_LABEL: str(restarts)}
        published: dict[str, Any] = {}
        if network is None:
            for p in ports:
                if p.get("hostPort"):
                    key = f"{int(p['containerPort'])}/{str(p.get('protocol') or 'TCP').lower()}"
                    published[key] = (host_ip, int(p["hostPort"]))
        cpu = spec.get("cpu_limit")
        host = api.create_host_config(
            nano_cpus=int(float(cpu) * 1e9) if cpu else None, mem_limit=spec.get("memory_limit") or None,
            **hardening(escalations, cap_drop=("NET_RAW",)), pids_limit=PIDS_LIMIT, port_bindings=published or None,
            network_mode=f"container:{network}" if network else (
                "host" if escalations is not None and escalations.host_network else None),
            log_config=docker.types.LogConfig(type="json-file", config=LOG_CONFIG))
        env = {str(k): str(v) for k, v in (spec.get("env") or {}).items()}
        command = expand(list(spec["args"]), env) if spec.get("args") else None
        entrypoint = expand(list(spec["command"]), env) if spec.get("command") else None

        def make() -> str:
            out = api.create_container(
                spec["image"], command=command, entrypoint=entrypoint, environment=env,
                working_dir=spec.get("workingDir") or None, name=name, detach=True, tty=False,
                stdin_open=False, labels=labels, host_config=host,
                ports=[(int(k.split("/")[0]), k.split("/")[1]) for k in published] or None)
            return str(out["Id"])

        for _ in range(3):
            try:
                return make()
            except docker.errors.ImageNotFound:
                self._pull(spec["image"])
            except docker.errors.APIError as e:
                if e.status_code != 409:
                    raise
                self.remove(name)  # the name is taken: a leftover of an earlier run of this instance
        return make()

    def _pull(self, image: str) -> None:
        if not self.pull:
            raise PodImageMissing(f"image {image!r} is not present and pulling is off")
        try:
            self.client.images.pull(image)
        except docker.errors.DockerException as e:
            raise PodImageMissing(f"image {image!r} could not be pulled: {short_error(e)}") from None

    def start(self, cid: str) -> None:
        self.client.api.start(cid)

    def output(self, cid: str, everything: bool) -> Output:
        """The container's output, followed until it ends: all of it (``everything``: read from its log,
        so a container started before this call loses nothing) or from now on. One Engine call
        (``GET /containers/{id}/logs?follow``), made after the start: docker-py's ``attach`` and ``logs``
        also inspect the container to learn whether it has a TTY (a pod container never has one), and an
        attach has to come before the start, so either put one or two more calls before it."""
        api = self.client.api
        res = api._get(api._url("/containers/{0}/logs", cid), stream=True,
                       params={"stdout": 1, "stderr": 1, "follow": 1, "tail": "all" if everything else "0"})
        api._raise_for_status(res)
        sock = api._get_raw_response_socket(res)
        api._disable_socket_timeout(sock)  # a quiet container is not an error
        return Output(res)

    def wait(self, cid: str) -> int:
        """Block until the container exits; its exit code."""
        return int(self.client.api.wait(cid)["StatusCode"])

    def inspect(self, cid: str) -> dict[str, Any]:
        out: dict[str, Any] = self.client.api.inspect_container(cid)
        return out

    def ip(self, cid: str) -> str | None:
        """The address of the pod's network namespace on its Docker network (probes reach it there)."""
        try:
            nets = self.inspect(cid)["NetworkSettings"]
        except docker.errors.DockerException:
            return None
        if nets.get("IPAddress"):
            return str(nets["IPAddress"])
        for n in (nets.get("Networks") or {}).values():
            if n.get("IPAddress"):
                return str(n["IPAddress"])
        return None

    def stop(self, cid: str, grace: float) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds (Docker's own stop)."""
        with contextlib.suppress(docker.errors.NotFound):
            self.client.api.stop(cid, timeout=max(0, int(round(grace))))

    def kill(self, cid: str) -> None:
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            self.client.api.kill(cid)

    def remove(self, name_or_id: str) -> bool:
        try:
            self.client.api.remove_container(name_or_id, force=True, v=True)
        except docker.errors.NotFound:
            return False
        except docker.errors.APIError as e:
            if e.status_code != 409:  # 409: its removal is already under way
                raise
        return True

    def exec(self, cid: str, argv: list[str]) -> int:
        """Run ``argv`` in the container (a probe) to its end; its exit code."""
        api = self.client.api
        ex = api.exec_create(cid, list(argv), stdout=False, stderr=False)
        api.exec_start(ex["Id"])
        code = api.exec_inspect(ex["Id"]).get("ExitCode")
        return int(code) if code is not None else 1

    def found(self, node_id: str) -> list[Found]:
        """The pod containers of this node, running or not."""
        out = []
        for c in self.client.api.containers(all=True, filters={"label": f"{NODE_LABEL}={node_id}"}):
            labels = c.get("Labels") or {}
            try:
                info = self.inspect(c["Id"])
            except docker.errors.NotFound:
                continue
            state = info.get("State") or {}
            running = bool(state.get("Running"))
            try:
                restarts = int(labels.get(RESTARTS_LABEL) or 0)
            except ValueError:
                restarts = 0
            out.append(Found(id=str(c["Id"]), pod_id=labels.get(POD_LABEL, ""),
                             instance_id=labels.get(INSTANCE_LABEL, ""), container=labels.get(CONTAINER_LABEL, ""),
                             running=running, exit_code=None if running else int(state.get("ExitCode") or 0),
                             started_at=_time(state.get("StartedAt")),
                             finished_at=None if running else _time(state.get("FinishedAt")),
                             restarts=restarts))
        return out
