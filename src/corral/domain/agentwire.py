"""What a worker and its coordinator exchange: a registration, the updates and output lines of a report,
and how a batch of lines is kept within the stored log limit.

Plain types with no dependency on the coordinator, so that a worker process imports only these to speak
to it (over HTTP or, standalone, in-process).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

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


def truncation_marker(cap: int) -> str:
    return (f"[corral: log truncated: this task's output passed the stored log limit of {cap} bytes "
            "(--max-log-bytes); the rest of it was dropped]")


def cap_logs(logs: Sequence[LogLine], stored: dict[str, int], cap: int
             ) -> tuple[list[LogLine], dict[str, int]]:
    """The lines of a batch to store, given the bytes each execution has stored (``stored``; lines of
    an execution not in it are dropped), and the executions' new sizes. An execution that goes past
    ``cap`` gets one truncation marker instead of the line that would pass it, and its size is then
    left above the cap, so that it gets no more lines and no second marker."""
    kept: list[LogLine] = []
    sizes: dict[str, int] = {}
    for ln in logs:
        size = sizes.get(ln.execution_id)
        if size is None:
            if ln.execution_id not in stored:
                continue
            size = stored[ln.execution_id]
        if size > cap:
            continue
        n = len(ln.line.encode("utf-8", "replace")) + 1
        if size + n > cap:
            kept.append(LogLine(ln.execution_id, "stderr", truncation_marker(cap), ln.ts))
            sizes[ln.execution_id] = cap + 1
        else:
            kept.append(ln)
            sizes[ln.execution_id] = size + n
    return kept, sizes
