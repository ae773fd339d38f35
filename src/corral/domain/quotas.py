"""Per-namespace quotas: what an admin allows one namespace to hold at once (CPU, memory, GPUs, running
tasks, pods), what the namespace holds now, and whether one more task or pod fits. Pure: no I/O.

What counts is what is allocated: the requests of the namespace's scheduled and running executions and of
its placed pods (the same sums as a node's allocation). Work that would pass a quota waits (pending, with
a reason that names the quota) and is placed when room frees; a stack is refused (503).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from corral.domain.resources import Resources, bounded, format_size, parse_size

MAX_CPU = 1_000_000.0  # cores: far more than any cluster, far inside a float's exact integers
MAX_COUNT = 10_000_000  # tasks, pods, GPUs
# A string's forms (the API document's schema says the same): cores or millicores; a size whose unit keeps it
# within MAX_SIZE.
CPU_PATTERN = r"^([0-9]{1,6}(\.[0-9]{1,6})?|[0-9]{1,9}m)$"
MEMORY_PATTERN = (r"^([0-9]{1,4}(\.[0-9]{1,3})?([kKmMgG]([iI][bB]?|[bB])?)?"
                  r"|[0-9]{1,3}(\.[0-9]{1,3})?[tT]([iI][bB]?|[bB])?|[0-9]{1,15}[bB]?)$")
FIELDS = ("cpu", "memory", "gpus", "tasks", "pods")


@dataclass(frozen=True, slots=True)
class Quota:
    """The bounds of one namespace (None: no bound on that one)."""

    cpu: float | None = None  # cores
    memory: int | None = None  # bytes
    gpus: int | None = None
    tasks: int | None = None  # scheduled or running executions
    pods: int | None = None  # placed pods (scheduled or running)

    def empty(self) -> bool:
        return all(getattr(self, f) is None for f in FIELDS)

    def view(self) -> dict[str, Any]:
        return {"cpu": self.cpu, "memory": self.memory, "gpus": self.gpus, "tasks": self.tasks, "pods": self.pods}


@dataclass(slots=True)
class Usage:
    """What one namespace holds now."""

    cpu: float = 0.0
    memory: int = 0
    gpus: int = 0
    tasks: int = 0
    pods: int = 0

    def view(self) -> dict[str, Any]:
        return {"cpu": round(self.cpu, 3), "memory": self.memory, "gpus": self.gpus, "tasks": self.tasks,
                "pods": self.pods}


def _count(name: str, v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or v != v or v in (math.inf, -math.inf):
        raise ValueError(f"{name} must be a whole number")
    if v < 0 or int(v) != v:
        raise ValueError(f"{name} must be a whole number, 0 or more")
    if v > MAX_COUNT:
        raise ValueError(f"{name} is at most {MAX_COUNT:,}")
    return int(v)


def _cpu(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, str):
        if not re.fullmatch(CPU_PATTERN, v):
            raise ValueError(f"cpu '{v[:40]}' is not a number of cores (such as 8, 0.5 or 500m)")
        v = int(v[:-1]) / 1000 if v.endswith("m") else float(v)
    not_cores = "cpu must be a number of cores (such as 8, 0.5 or 500m)"
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(not_cores)
    return float(bounded(v, "cpu", MAX_CPU, f"{MAX_CPU:,.0f} cores", not_cores))


def parse_quota(data: Any) -> Quota:
    """A quota from an API body or the CLI: ``{"cpu": 8, "memory": "16GB", "gpus": 2, "tasks": 100,
    "pods": 20}`` (any of them; ``null`` or absent: no bound). ValueError says what is wrong."""
    if not isinstance(data, Mapping):
        raise ValueError("a quota is an object with any of cpu, memory, gpus, tasks, pods")
    unknown = sorted(str(k)[:40] for k in data if k not in FIELDS)
    if unknown:
        raise ValueError(f"unknown quota field(s) {', '.join(unknown)}: one of {', '.join(FIELDS)}")
    mem = data.get("memory")
    if isinstance(mem, bool) or not isinstance(mem, str | int | float | None):
        raise ValueError("memory must be a size such as 16GB or 512Mi, or bytes")
    q = Quota(_cpu(data.get("cpu")), None if mem is None else _size(mem), _count("gpus", data.get("gpus")),
              _count("tasks", data.get("tasks")), _count("pods", data.get("pods")))
    if q.empty():
        raise ValueError("a quota bounds at least one of cpu, memory, gpus, tasks, pods "
                         "(to remove one, DELETE it)")
    return q


def _size(v: Any) -> int:
    if isinstance(v, str) and not re.fullmatch(MEMORY_PATTERN, v):
        raise ValueError(f"memory: '{v[:40]}' is not a size such as 16GB, 512Mi or 1Ti (at most 1 PiB)")
    if isinstance(v, float) and math.isfinite(v) and v != int(v):
        raise ValueError("memory must be a whole number of bytes")
    try:
        return parse_size(v)
    except ValueError as e:
        raise ValueError(f"memory: {e}") from None


Kind = Literal["task", "pod"]


def _cores(n: float) -> str:
    return f"{n:g} core{'s' if n != 1 else ''}"


def over(namespace: str, quota: Quota, usage: Usage, need: Resources, kind: Kind) -> str | None:
    """Why one more task (or pod) asking for ``need`` would pass the namespace's quota (None: it fits)."""
    head = f"namespace {namespace} is at its"
    if kind == "task" and quota.tasks is not None and usage.tasks + 1 > quota.tasks:
        return f"{head} running tasks quota: {usage.tasks} of {quota.tasks} tasks placed or running"
    if kind == "pod" and quota.pods is not None and usage.pods + 1 > quota.pods:
        return f"{head} pods quota: {usage.pods} of {quota.pods} pods placed or running"
    if quota.cpu is not None and need.cpu > 0 and usage.cpu + need.cpu > quota.cpu + 1e-9:
        return f"{head} CPU quota: {usage.cpu:g} of {_cores(quota.cpu)} in use, {need.cpu:g} more asked for"
    if quota.memory is not None and need.memory > 0 and usage.memory + need.memory > quota.memory:
        return (f"{head} memory quota: {format_size(usage.memory)} of {format_size(quota.memory)} in use, "
                f"{format_size(need.memory)} more asked for")
    if quota.gpus is not None and need.gpu > 0 and usage.gpus + need.gpu > quota.gpus:
        return f"{head} GPU quota: {usage.gpus} of {quota.gpus} GPUs in use, {need.gpu} more asked for"
    return None


@dataclass(slots=True)
class Budgets:
    """The quotas and usage of the namespaces that have a quota, during one placement pass: ``check``
    before a placement, ``take`` after it. Namespaces without a quota are not bounded."""

    quotas: Mapping[str, Quota] = field(default_factory=dict)
    usage: dict[str, Usage] = field(default_factory=dict)

    def check(self, namespace: str, need: Resources, kind: Kind) -> str | None:
        q = self.quotas.get(namespace)
        if q is None:
            return None
        return over(namespace, q, self.usage.setdefault(namespace, Usage()), need, kind)

    def take(self, namespace: str, need: Resources, kind: Kind) -> None:
        if namespace not in self.quotas:
            return
        u = self.usage.setdefault(namespace, Usage())
        u.cpu += need.cpu
        u.memory += need.memory
        u.gpus += need.gpu
        if kind == "task":
            u.tasks += 1
        else:
            u.pods += 1
