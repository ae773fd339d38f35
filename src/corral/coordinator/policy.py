"""What the operator lets a job reach on the host, checked in one place.

``Policy.check`` takes a job specification and ``Policy.check_task`` one task as stored (or as evaluated
from its expressions); every way a task row comes to exist calls one of them: native single and batch
submits, every dialect's submit, schedules when created and again when they fire, subjobs when they open,
restarts, and templates when their expressions have been evaluated. The checks here are pure: no I/O.

The coordinator's check cannot see the worker's file system, so the worker checks bind mounts again where
they are made (``corral.runtime.docker.checked_bind``): the assignment carries the allowed roots and volume
names (``Policy.for_worker``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from corral.domain.paths import under
from corral.domain.resources import parse_size
from corral.domain.spec import JobSpec, TaskSpec, children

DEFAULT_MEMORY = 512 * 2**20  # a container's memory limit when its task asks for none
DEFAULT_CPU = 1.0  # a container's CPU limit (cores) when its task asks for none


# What a hardened container never gets, in the spellings of Docker, Compose, Kubernetes and the seed APIs.
# Containers always run unprivileged, with capabilities dropped, no-new-privileges, in namespaces of their own
# (network, PID, IPC) and with no host device (corral.runtime.docker, corral.runtime.pods_docker); no role or
# flag turns that off, so a request that asks for one of these is refused (400) in every API, never ignored.
ESCALATIONS: dict[str, str] = {
    "privileged": "privileged mode",
    "cap_add": "added capabilities", "capAdd": "added capabilities", "add_capabilities": "added capabilities",
    "network_mode": "the host's network", "networkMode": "the host's network", "hostNetwork": "the host's network",
    "pid": "the host's PID namespace", "pid_mode": "the host's PID namespace", "pidMode": "the host's PID namespace",
    "hostPID": "the host's PID namespace",
    "ipc": "the host's IPC namespace", "ipc_mode": "the host's IPC namespace", "ipcMode": "the host's IPC namespace",
    "hostIPC": "the host's IPC namespace",
    "devices": "host devices", "device_cgroup_rules": "host devices",
    "security_opt": "security options", "securityOpt": "security options",
    "userns_mode": "the host's user namespace", "usernsMode": "the host's user namespace",
}
HARDENED = ("containers run unprivileged, with no added capabilities, host namespaces (network, PID, IPC) or "
            "devices, for every caller")


def escalation_message(field: str) -> str | None:
    """The refusal for a field named ``field`` (its last part is the key), if it asks for an escalation."""
    what = ESCALATIONS.get(field.rsplit(".", 1)[-1].rsplit("]", 1)[-1])
    return f"{field}: {what} is not allowed on this server: {HARDENED}" if what else None


def escalation(data: Mapping[str, Any], where: str = "") -> str | None:
    """For one object of a request (a task or a container as an API takes it): the refusal for its first key
    that asks for what a hardened container never gets, or None."""
    for key in data:
        if key in ESCALATIONS:
            return escalation_message(f"{where}{key}")
    return None


class PolicyError(ValueError):
    """A job asks for something the operator does not allow; the message says what and how to allow it."""


@dataclass(frozen=True)
class Policy:
    bind_roots: tuple[str, ...] = ()  # host directories bind mounts may use; none: bind mounts are refused
    volumes: tuple[str, ...] = ()  # existing named volumes tasks may mount, by name
    networks: tuple[str, ...] = ()  # existing Docker networks container tasks may join; none: networks refused
    webhook_hosts: tuple[str, ...] = ()  # hosts webhooks may reach though they are loopback, private, ...
    default_cpu: float | None = DEFAULT_CPU  # None: no limit (only with --default-cpu 0)
    default_memory: int | None = DEFAULT_MEMORY

    # -- jobs as submitted ----------------------------------------------------------------------
    def check(self, spec: JobSpec) -> None:
        """Raise PolicyError for the first task (at any depth, subjobs and sidecars included) that asks
        for what this server does not allow."""
        for t in _walk(spec.tasks):
            self._mounts(str(t.name), [m.model_dump() for m in t.mounts])
            self._networks(str(t.name), t.networks)

    def check_stored(self, spec: Mapping[str, Any]) -> None:
        """``check`` for a job specification as stored (a job's at restart): validated when it was made."""
        for i, t in enumerate(spec.get("tasks") or ()):
            self.check_task(t, str(t.get("name") or f"task-{i + 1}"))

    # -- one task, as stored or evaluated --------------------------------------------------------
    def check_task(self, task: Mapping[str, Any], name: str) -> None:
        """The checks for one task dict (its sidecars and nested tasks included), such as a template's
        evaluated form."""
        self._mounts(name, list(task.get("mounts") or ()))
        self._networks(name, list(task.get("networks") or ()))
        for i, s in enumerate(task.get("sidecars") or ()):
            self.check_task(s, f"{name}.sidecars[{i}]")
        for key in ("pre", "post"):
            for i, c in enumerate(task.get(key) or ()):
                self.check_task(c, f"{name}.{key}[{i}]")
        for i, c in enumerate((task.get("parallel") or {}).get("tasks") or ()):
            self.check_task(c, f"{name}.parallel.tasks[{i}]")
        if task.get("each"):
            self.check_task(task["each"].get("task") or {}, f"{name}.each.task")
        for i, c in enumerate((task.get("subjob") or {}).get("tasks") or ()):
            self.check_task(c, f"{name}.subjob.tasks[{i}]")

    def _mounts(self, name: str, mounts: Sequence[Mapping[str, Any]]) -> None:
        for m in mounts:
            if m.get("type") != "bind":
                continue  # named volumes are checked on the worker, which can see what exists
            src = str(m.get("source") or "")
            if not self.bind_roots:
                raise PolicyError(f"task '{name}': bind mounts are not allowed on this server "
                                  "(corral server --allow-bind-mount DIR allows them under DIR)")
            if not under(src, self.bind_roots):
                raise PolicyError(f"task '{name}': bind mount source '{src}' is outside the allowed "
                                  f"directories: {', '.join(self.bind_roots)}")

    def _networks(self, name: str, networks: Sequence[str]) -> None:
        for net in networks:
            if net not in self.networks:
                allowed = f"allowed: {', '.join(self.networks)}" if self.networks else "none is allowed"
                raise PolicyError(f"task '{name}': network '{net}' is not one this server lets tasks join ({allowed}; "
                                  f"corral server --allow-network {net} allows it)")

    # -- what the worker is told ------------------------------------------------------------------
    def for_worker(self) -> dict[str, Any]:
        """The part of the policy the worker enforces at mount time, sent with each assignment."""
        return {"bind_roots": list(self.bind_roots), "volumes": list(self.volumes)}

    def limits(self, resources: Mapping[str, Any]) -> tuple[float | None, int | None]:
        """A container's CPU and memory limits: what its task asks for, or this server's defaults (also
        for a request of 0, which Docker would read as no limit at all)."""
        cpu = float(resources.get("cpu") or 0)
        memory = parse_size(resources["memory"]) if resources.get("memory") is not None else 0
        return (cpu or self.default_cpu, memory or self.default_memory)


def _walk(tasks: Sequence[TaskSpec]) -> Iterable[TaskSpec]:
    for t in tasks:
        yield t
        yield from _walk([c for _, c in children(t)])
        if t.subjob:
            yield from _walk(t.subjob.tasks)
