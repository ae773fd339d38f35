"""The Runtime interface every way of running a task implements."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

# Called with (stream, line) for each line of output; stream is "stdout" or "stderr".
# The line has no trailing newline. It returns False when the output comes faster than it can be
# shipped (lines may then be dropped): the runtime reads this attempt's output more slowly for a while,
# so that the task waits on its writes.
OutputSink = Callable[[str, str], bool | None]
# How every runtime reads output: a line without a newline is cut at MAX_LINE characters, and while the
# sink says the output is behind, one line is handed on every FULL_PAUSE seconds.
MAX_LINE = 64 * 1024
FULL_PAUSE = 0.02
# Called once the attempt has started, with the container id (None for a host process: its pid as str).
StartedSink = Callable[[str | None], None]


@dataclass(frozen=True, slots=True)
class Mount:
    """A mount of a container task (the coordinator has validated it and decided it is allowed).

    ``volume`` without a source is a fresh anonymous volume, removed with the container; with one, that
    named volume. ``bind`` mounts the host path ``source``; ``tmpfs`` takes no source.
    """

    type: str  # volume | bind | tmpfs
    target: str
    source: str | None = None
    readonly: bool = False


@dataclass(frozen=True, slots=True)
class Sidecar:
    """A container that runs beside a container task's main one, and goes when the main one ends."""

    name: str
    image: str
    argv: list[str] = field(default_factory=list)
    entrypoint: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RegistryAuth:
    """Credentials to pull a task's image with (``registry`` in its spec). The password never shows in a
    repr, so no log line that prints a request carries it."""

    username: str
    password: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class PublishedPort:
    """A container task's port published on its node: ``node_port`` was allocated by the coordinator."""

    port: int
    protocol: str  # tcp | udp
    node_port: int


@dataclass(frozen=True, slots=True)
class Probe:
    """An HTTP GET on the container's ``port`` at ``path`` that must answer 2xx within ``timeout`` seconds
    before the attempt counts as started (Tork's probe)."""

    port: int
    path: str = "/"
    timeout: float = 60.0


@dataclass(frozen=True, slots=True)
class Scratch:
    """Where one execution leaves its output and its progress, as host paths (see scratch.py).

    The runtime points $CORRAL_OUTPUT and $TORK_OUTPUT at ``output``, and $CORRAL_PROGRESS and
    $TORK_PROGRESS at ``progress``, as the task sees them. ``dir``, when set, is a directory of the
    execution's own holding both (and the working directory of a task with files and no workdir, at
    ``dir/work``); a container task needs one, to bind-mount it. Without one the two files lie in a
    directory shared by the agent's executions, under names of their own.
    """

    output: str
    progress: str
    dir: str | None = None


@dataclass(frozen=True, slots=True)
class Escalations:
    """An escalated container's grants (coordinator/policy.py); each absent one stays hardened."""

    privileged: bool = False
    cap_add: tuple[str, ...] = ()
    host_network: bool = False
    host_pid: bool = False
    host_ipc: bool = False
    devices: tuple[str, ...] = ()

    @staticmethod
    def granted(grants: Mapping[str, Any] | None, allowed: Collection[str]) -> Escalations | None:
        """What a worker whose operator allows the kinds ``allowed`` (corral worker --allow-admin-escalation)
        gives an assignment the coordinator granted ``grants`` (kind -> what); None: nothing, hardened.
        ValueError names the kinds this worker does not allow."""
        if not grants:
            return None
        refused = sorted(set(grants) - set(allowed))
        if refused:
            raise ValueError(f"this worker does not allow {', '.join(refused)} "
                             "(corral worker --allow-admin-escalation allows it)")
        return Escalations(privileged=bool(grants.get("privileged")),
                           cap_add=tuple(str(c) for c in grants.get("cap_add") or ()),
                           host_network=bool(grants.get("host_network")), host_pid=bool(grants.get("host_pid")),
                           host_ipc=bool(grants.get("host_ipc")),
                           devices=tuple(str(d) for d in grants.get("devices") or ()))


@dataclass(frozen=True, slots=True)
class RunRequest:
    execution_id: str
    job_id: str
    task_id: str
    task_name: str
    node_id: str
    argv: list[str]
    image: str | None = None
    entrypoint: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    cpu_limit: float | None = None  # cores; None: no limit
    memory_limit: int | None = None  # bytes; None: no limit
    gpus: tuple[int, ...] = ()
    # File name (a plain name) -> content, written into the task's working directory before it starts.
    files: dict[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()  # container tasks only
    sidecars: tuple[Sidecar, ...] = ()  # container tasks only
    # Where the task writes its output and progress (made by the caller, see scratch.py); None: nowhere.
    scratch: Scratch | None = None
    # The operator's policy, enforced where mounts are made: host directories a bind mount's real path
    # (symlinks resolved) must lie under (none: bind mounts are refused), and existing named volumes a
    # task may mount by name (any other name is a volume of the job's own, see DockerRuntime).
    bind_roots: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    registry: RegistryAuth | None = None  # container tasks: to pull a missing image with
    networks: tuple[str, ...] = ()  # container tasks: Docker networks (existing on the node) to join
    ports: tuple[PublishedPort, ...] = ()  # container tasks: ports to publish on the node
    publish_ip: str = "0.0.0.0"  # the node's address the ports are published on
    probe: Probe | None = None  # container tasks: must answer before the attempt counts as started
    # What the main container is granted beyond the hardened default (an admin's task, on a server and a
    # worker whose operators both allowed it: --allow-admin-escalation): the runtime only applies it.
    escalations: Escalations | None = None


@dataclass(frozen=True, slots=True)
class RunResult:
    exit_code: int | None
    error: str | None = None  # set when the attempt could not run at all (bad image, spawn failure)


def exec_failure_status(message: str) -> int | None:
    """The shell's exit status for a command that could not be executed, from the reason given: 127 when
    it was not found, 126 when it may not be run (as a shell and `docker run` answer); else None."""
    m = message.lower()
    if "executable file not found" in m or "no such file or directory" in m:
        return 127
    if "permission denied" in m:
        return 126
    return None


@dataclass(frozen=True, slots=True)
class Held:
    """An attempt that a previous run of this worker started and that this runtime still holds after a
    restart (see :meth:`Runtime.held`): still running, or ended with an exit status it can read."""

    execution_id: str
    running: bool
    exit_code: int | None = None  # when it has ended
    handle: str | None = None  # the container id, or the host process's pid
    # Host processes: the read ends of its stdout and stderr pipes, as fds of ``handle`` (see process.py).
    fds: tuple[int, int] | None = None


class RuntimeError_(Exception):
    """An attempt that could not be started; the message is shown to the user as the task's error."""


class Runtime(Protocol):
    name: str

    async def run(self, req: RunRequest, on_output: OutputSink, on_started: StartedSink) -> RunResult:
        """Run the attempt to its end and return how it ended.

        Output lines are passed to ``on_output`` as they appear, and every line is delivered before this
        returns. If the calling asyncio task is cancelled (a cancel or a timeout), the runtime kills
        what it started (the container, or the process group), removes it, and re-raises.
        """
        ...

    async def reap(self, node_id: str, keep: set[str]) -> list[str]:
        """Kill and remove what this runtime left behind for ``node_id`` (say, after a crash), except
        the executions in ``keep``. Returns the execution ids it removed."""
        ...


class Adopting(Runtime, Protocol):
    """A runtime whose attempts outlive their worker: a worker killed and started again (same data dir,
    same node id) finds them with :meth:`held`, claims them at registration, and :meth:`resume` s those
    the coordinator keeps; :meth:`reap` removes the others."""

    async def held(self, node_id: str, scratch_base: str) -> list[Held]:
        """The attempts of ``node_id`` that a previous run of the worker left: running, or ended with
        an exit status that can be read."""
        ...

    async def resume(self, held: Held, skip_bytes: int, on_output: OutputSink,
                     on_started: StartedSink) -> RunResult:
        """Follow a held attempt to its end, as :meth:`Runtime.run` does (cancelling kills it). Output
        comes from where the runtime can read it again: lines whose bytes (text and newline) add up to
        no more than ``skip_bytes`` (what the coordinator has stored already) are skipped when the
        runtime reads the output from its start."""
        ...
