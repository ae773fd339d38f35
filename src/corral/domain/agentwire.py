"""What a worker and its coordinator exchange: a registration, the updates and output lines of a report,
and how a batch of lines is kept within the stored log limit.

Plain types with no dependency on the coordinator, so that a worker process imports only these to speak
to it (over HTTP or, standalone, in-process).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

NODE_SECRET_HEADER = "X-Corral-Node-Secret"


@dataclass
class NodeInfo:
    """What a worker tells about itself when it registers."""

    name: str
    hostname: str
    version: str
    cpu: float
    memory: int
    disk: int
    gpus: list[dict[str, Any]] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    runtimes: list[str] = field(default_factory=list)
    queues: list[str] = field(default_factory=lambda: ["default"])
    id: str | None = None
    address: str | None = None  # where its pods are reached (corral worker --advertise-address)


@dataclass
class Update:
    """One report from an agent about one execution."""

    execution_id: str
    state: str  # running | completed | failed | cancelled
    ts: float
    exit_code: int | None = None
    error: str | None = None
    container_id: str | None = None
    output: str | None = None  # what the task wrote to $CORRAL_OUTPUT / $TORK_OUTPUT (with its end)
    progress: float | None = None  # 0-100, from $CORRAL_PROGRESS / $TORK_PROGRESS (while it runs)


@dataclass
class LogLine:
    execution_id: str
    stream: str
    line: str
    ts: float


def truncation_marker(cap: int, whose: str = "this task's output") -> str:
    return (f"[corral: log truncated: {whose} passed the stored log limit of {cap} bytes "
            "(--max-log-bytes); the rest of it was dropped]")


K = TypeVar("K", bound=Hashable)


def cap_lines(keys: Sequence[K], texts: Sequence[str], stored: Mapping[K, int], cap: int
              ) -> tuple[list[tuple[int, bool]], dict[K, int]]:
    """Which lines of a batch to store, given each line's key (an execution, a pod's container), its
    text and the bytes each key has stored (``stored``; lines of a key not in it are dropped): ``(index,
    truncated)`` for each line kept, ``truncated`` when it is to be stored as the truncation marker instead,
    and the keys' new sizes. A key that goes past ``cap`` gets one marker instead of the line that would
    pass it, and its size is then left above the cap, so that it gets no more lines and no second marker."""
    kept: list[tuple[int, bool]] = []
    sizes: dict[K, int] = {}
    for i, (k, text) in enumerate(zip(keys, texts, strict=True)):
        size = sizes.get(k)
        if size is None:
            if k not in stored:
                continue
            size = stored[k]
        if size > cap:
            continue
        n = len(text.encode("utf-8", "replace")) + 1
        if size + n > cap:
            kept.append((i, True))
            sizes[k] = cap + 1
        else:
            kept.append((i, False))
            sizes[k] = size + n
    return kept, sizes


def cap_logs(logs: Sequence[LogLine], stored: dict[str, int], cap: int
             ) -> tuple[list[LogLine], dict[str, int]]:
    """``cap_lines`` for a batch of task output lines, keyed by execution."""
    kept, sizes = cap_lines([ln.execution_id for ln in logs], [ln.line for ln in logs], stored, cap)
    out = [LogLine(logs[i].execution_id, "stderr", truncation_marker(cap), logs[i].ts) if cut else logs[i]
           for i, cut in kept]
    return out, sizes


@dataclass
class ContainerStatus:
    """What a node says about one container of a pod instance (POST /v1/agent/nodes/{id}/pods)."""

    name: str
    state: str  # waiting | running | terminated
    reason: str | None = None
    container_id: str | None = None
    restart_count: int = 0
    exit_code: int | None = None
    ready: bool = False
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None


@dataclass
class PodStatus:
    """What a node says about one pod instance it runs (or ran)."""

    instance_id: str
    pod_id: str
    phase: str  # running | succeeded | failed | stopped
    containers: list[ContainerStatus] = field(default_factory=list)
    ts: float = 0.0


@dataclass
class PodLogLine:
    instance_id: str
    container: str
    stream: str
    line: str
    ts: float
