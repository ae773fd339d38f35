"""What the operator lets a job reach on the host, checked in one place.

``Policy.check`` takes a job specification and ``Policy.check_task`` one task as stored (or as evaluated
from its expressions); every way a task row comes to exist calls one of them: native single and batch
submits, every dialect's submit, schedules when created and again when they fire, subjobs when they open,
restarts, and templates when their expressions have been evaluated; ``Policy.check_pod`` a pod, however it is
made (native, Podling, Stacks), with the same escalation check as a task's. The checks here are pure: no I/O.

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


# What a hardened container does not get, in the spellings of Docker, Compose, Kubernetes and the seed APIs.
# Containers run unprivileged, with capabilities dropped, no-new-privileges, in namespaces of their own
# (network, PID, IPC) and with no host device (corral.runtime.docker, corral.runtime.pods_docker). The
# operator may let admins ask for some of these (``ESCALATION_KINDS``, --allow-admin-escalation), through the
# task fields of the native API and Tork and a pod's securityContext and host namespaces (native, Podling,
# Stacks); every other spelling, and every other caller, is refused (400).
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
# What an operator may let admins have (--allow-admin-escalation KIND,...): kind -> what it grants.
ESCALATION_KINDS: dict[str, str] = {
    "privileged": "privileged mode", "cap_add": "added capabilities", "host_network": "the host's network",
    "host_pid": "the host's PID namespace", "host_ipc": "the host's IPC namespace", "devices": "host devices",
}
_KIND_OF_WHAT = {what: kind for kind, what in ESCALATION_KINDS.items()}
HARDENED = ("containers run unprivileged, with no added capabilities, host namespaces (network, PID, IPC) or "
            "devices")


def how_to_allow(kind: str) -> str:
    """How the operator lets admins have escalation ``kind``."""
    return (f"only an admin may ask for it, on a server started with --allow-admin-escalation {kind} "
            "(a task's field in the native API or Tork; a pod's securityContext, hostNetwork, hostPID or hostIPC)")


def escalation_message(field: str) -> str | None:
    """The refusal for a field named ``field`` (its last part is the key), if it asks for an escalation."""
    what = ESCALATIONS.get(field.rsplit(".", 1)[-1].rsplit("]", 1)[-1])
    if not what:
        return None
    kind = _KIND_OF_WHAT.get(what)
    how = how_to_allow(kind) if kind else "no server allows it"
    return f"{field}: {what} is not allowed here: {HARDENED}; {how}"


def escalation(data: Mapping[str, Any], where: str = "") -> str | None:
    """For one object of a request (a task or a container as an API takes it): the refusal for its first key
    that asks for what a hardened container never gets, or None."""
    for key in data:
        if key in ESCALATIONS:
            return escalation_message(f"{where}{key}")
    return None


def escalations_asked(task: Mapping[str, Any]) -> dict[str, Any]:
    """The escalations one task (as stored: a TaskSpec's fields) asks for: kind -> what it asks."""
    out: dict[str, Any] = {}
    if task.get("privileged"):
        out["privileged"] = True
    if task.get("cap_add"):
        out["cap_add"] = list(task["cap_add"])
    for kind, key in (("host_network", "network_mode"), ("host_pid", "pid"), ("host_ipc", "ipc")):
        if task.get(key) == "host":
            out[kind] = True
    if task.get("devices"):
        out["devices"] = list(task["devices"])
    return out


def pod_container(pod: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, Any]:
    """One container of a pod (both as stored: Kubernetes' names, ``securityContext.privileged``,
    ``capabilities.add``, the pod's ``hostNetwork``/``hostPID``/``hostIPC``) in a task's escalation fields, so
    that pods and batch tasks go through the same checks and grants."""
    sc = container.get("securityContext") or {}
    host = {"network_mode": pod.get("hostNetwork"), "pid": pod.get("hostPID"), "ipc": pod.get("hostIPC")}
    return {"privileged": sc.get("privileged"), "cap_add": (sc.get("capabilities") or {}).get("add"),
            **{k: "host" if v else None for k, v in host.items()}}


def escalations_of(spec: JobSpec) -> list[str]:
    """The kinds of escalation any task of the job asks for (at any depth), in the order first asked."""
    out: list[str] = []
    for t in _walk(spec.tasks):
        for kind in escalations_asked(_asked(t)):
            if kind not in out:
                out.append(kind)
    return out


def parse_escalations(text: str | Iterable[str]) -> frozenset[str]:
    """--allow-admin-escalation's value: kinds separated by commas (or given one by one); 'all' for every
    kind. ValueError names an unknown kind."""
    items = [text] if isinstance(text, str) else list(text)
    kinds = {k.strip() for item in items for k in item.split(",") if k.strip()}
    if "all" in kinds:
        return frozenset(ESCALATION_KINDS)
    unknown = sorted(kinds - set(ESCALATION_KINDS))
    if unknown:
        raise ValueError(f"unknown escalation {', '.join(unknown)}: one of {', '.join(ESCALATION_KINDS)}, or all")
    return frozenset(kinds)


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
    escalations: frozenset[str] = frozenset()  # the kinds admins may ask for (ESCALATION_KINDS); none: hardened

    # -- jobs as submitted ----------------------------------------------------------------------
    def check(self, spec: JobSpec, admin: bool | None = None) -> None:
        """Raise PolicyError for the first task (at any depth, subjobs and sidecars included) that asks
        for what this server does not allow. ``admin``: whether the caller is an admin (escalations);
        None where no caller is (a subjob opening, a schedule firing): the submit checked the caller, and
        what the server allows is checked again."""
        for t in _walk(spec.tasks):
            self._mounts(str(t.name), [m.model_dump() for m in t.mounts])
            self._networks(str(t.name), t.networks)
            if asked := _asked(t):  # read off the model: no dump on the submit path of a task that asks none
                self._escalations(str(t.name), {**asked, **{k: getattr(t, k) for k in _SHARED_NETWORK}}, admin)
            for i, s in enumerate(t.sidecars):
                self._no_escalation(f"{t.name}.sidecars[{i}]", _asked(s))

    def check_stored(self, spec: Mapping[str, Any], admin: bool | None = None) -> None:
        """``check`` for a job specification as stored (a job's at restart): validated when it was made."""
        for i, t in enumerate(spec.get("tasks") or ()):
            self.check_task(t, str(t.get("name") or f"task-{i + 1}"), admin)

    # -- one task, as stored or evaluated --------------------------------------------------------
    def check_task(self, task: Mapping[str, Any], name: str, admin: bool | None = None) -> None:
        """The checks for one task dict (its sidecars and nested tasks included), such as a template's
        evaluated form."""
        self._mounts(name, list(task.get("mounts") or ()))
        self._networks(name, list(task.get("networks") or ()))
        self._escalations(name, task, admin)
        for i, s in enumerate(task.get("sidecars") or ()):
            self._no_escalation(f"{name}.sidecars[{i}]", s)
            self.check_task(s, f"{name}.sidecars[{i}]", admin)
        for key in ("pre", "post"):
            for i, c in enumerate(task.get(key) or ()):
                self.check_task(c, f"{name}.{key}[{i}]", admin)
        for i, c in enumerate((task.get("parallel") or {}).get("tasks") or ()):
            self.check_task(c, f"{name}.parallel.tasks[{i}]", admin)
        if task.get("each"):
            self.check_task(task["each"].get("task") or {}, f"{name}.each.task", admin)
        for i, c in enumerate((task.get("subjob") or {}).get("tasks") or ()):
            self.check_task(c, f"{name}.subjob.tasks[{i}]", admin)

    # -- pods (native, Podling, Stacks) ----------------------------------------------------------
    def check_pod(self, pod: Mapping[str, Any], admin: bool | None = None) -> list[str]:
        """The escalation checks of ``check`` for a pod (as stored: ``dump_pod``), container by container;
        the kinds it asks for (all allowed, else PolicyError)."""
        kinds: list[str] = []
        containers = list(pod.get("containers") or ())
        for c in containers:
            asked = escalations_asked(pod_container(pod, c))
            self.check_escalations(f"pod '{pod.get('name')}', container '{c.get('name')}'", asked, admin)
            kinds += [k for k in asked if k not in kinds]
        if pod.get("hostNetwork") and any(c.get("ports") or _network_probe(c) for c in containers):
            raise PolicyError(f"pod '{pod.get('name')}': hostNetwork cannot go with ports or an httpGet or tcpSocket "
                              "probe: the pod is on the host's network")
        return kinds

    def check_escalations(self, where: str, asked: Mapping[str, Any], admin: bool | None) -> None:
        """PolicyError for the first escalation of ``asked`` (``escalations_asked``'s) that the caller may not
        have: only an admin (``admin`` None: no caller, checked at the submit), and only a kind this server
        allows. ``where`` names what asked ("task 'build'")."""
        for kind in asked:
            what = ESCALATION_KINDS[kind]
            if admin is False:
                raise PolicyError(f"{where}: {what} is not allowed to this caller: {HARDENED}; {how_to_allow(kind)}")
            if kind not in self.escalations:
                raise PolicyError(f"{where}: {what} is not allowed on this server: {HARDENED}; "
                                  f"{how_to_allow(kind)}")

    def _escalations(self, name: str, task: Mapping[str, Any], admin: bool | None) -> None:
        asked = escalations_asked(task)
        if "host_network" in asked and any(task.get(k) for k in _SHARED_NETWORK):
            raise PolicyError(f"task '{name}': network_mode 'host' cannot go with sidecars, ports, networks or a "
                              "probe: the container is on the host's network")
        self.check_escalations(f"task '{name}'", asked, admin)

    @staticmethod
    def _no_escalation(name: str, task: Mapping[str, Any]) -> None:
        for kind in escalations_asked(task):
            raise PolicyError(f"task '{name}': {ESCALATION_KINDS[kind]} is not allowed on a sidecar: only a "
                              "task's main container may be given an escalation")

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

    def grants(self, task: Mapping[str, Any]) -> dict[str, Any]:
        """What an assignment of this stored task is granted: the escalations it asks for that this server
        still allows (the submit checked its caller); the worker grants them only if its own operator
        allows them too (corral worker --allow-admin-escalation)."""
        return {k: v for k, v in escalations_asked(task).items() if k in self.escalations}

    def limits(self, resources: Mapping[str, Any]) -> tuple[float | None, int | None]:
        """A container's CPU and memory limits: what its task asks for, or this server's defaults (also
        for a request of 0, which Docker would read as no limit at all)."""
        cpu = float(resources.get("cpu") or 0)
        memory = parse_size(resources["memory"]) if resources.get("memory") is not None else 0
        return (cpu or self.default_cpu, memory or self.default_memory)


_ESCALATION_FIELDS = {"privileged", "cap_add", "network_mode", "pid", "ipc", "devices"}
_SHARED_NETWORK = {"sidecars", "ports", "networks", "probe"}  # what the host's network cannot go with


def _network_probe(c: Mapping[str, Any]) -> bool:
    return any((c.get(k) or {}).get(a) for k in ("livenessProbe", "readinessProbe") for a in ("httpGet", "tcpSocket"))


def _asked(t: TaskSpec) -> dict[str, Any]:
    """A task's escalation fields that are set."""
    return {k: v for k in _ESCALATION_FIELDS if (v := getattr(t, k)) is not None}


def _walk(tasks: Sequence[TaskSpec]) -> Iterable[TaskSpec]:
    for t in tasks:
        yield t
        yield from _walk([c for _, c in children(t)])
        if t.subjob:
            yield from _walk(t.subjob.tasks)
