"""Resource sizes ("256Mi", "1Gi"), durations ("30s", "5m") and whether a request fits."""

from __future__ import annotations

import re
from dataclasses import dataclass

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "ki": 2**10, "kib": 2**10,
    "m": 10**6, "mb": 10**6, "mi": 2**20, "mib": 2**20,
    "g": 10**9, "gb": 10**9, "gi": 2**30, "gib": 2**30,
    "t": 10**12, "tb": 10**12, "ti": 2**40, "tib": 2**40,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
MAX_SIZE = 2**50  # 1 PiB: more than any machine has, and far inside a 64-bit column
MAX_DURATION = 366 * 86400.0  # a year: longer than any timeout, backoff or retention is meant to be


def bounded(n: float, what: str, most: float, shown_most: str, not_finite: str | None = None) -> float:
    """``n`` if it is a finite number from 0 to ``most``; else ValueError that names ``what`` ('a size')
    and ``shown_most`` ('1,024 cores'). Compared, never converted first: an integer too large for a float
    is refused as too large."""
    if n != n or n in (float("inf"), float("-inf")):
        raise ValueError(not_finite or f"{what} must be a finite number")
    if n < 0:
        raise ValueError(f"{what} cannot be negative")
    if n > most:
        raise ValueError(f"{what} is at most {shown_most}")
    return n


def _bounded_size(n: float) -> int:
    return int(bounded(n, "a size", MAX_SIZE, f"{MAX_SIZE:,} bytes (1 PiB)"))


def _bounded_duration(n: float) -> float:
    return float(bounded(n, "a duration", MAX_DURATION, f"{MAX_DURATION:,.0f} seconds (366 days)"))


def parse_size(value: str | int | float) -> int:
    """Bytes in a size such as ``256Mi``, ``1Gi``, ``512M`` or a plain number of bytes."""
    if isinstance(value, bool):
        raise ValueError("a size must be a number of bytes or a string such as '256Mi'")
    if isinstance(value, int | float):
        return _bounded_size(value)
    m = _SIZE_RE.match(value) if len(value) <= 100 else None
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"'{value[:100]}' is not a size: use a number with a unit such as 256Mi, 1Gi or 500M")
    return _bounded_size(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


def format_size(n: int) -> str:
    for unit, factor in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if n >= factor and n % (factor // 1024 or 1) == 0:
            v = n / factor
            return f"{v:.0f}{unit}" if v == int(v) else f"{v:.1f}{unit}"
    return f"{n}"


def parse_duration(value: str | int | float) -> float:
    """Seconds in a duration such as ``30s``, ``5m``, ``1h30m``, ``500ms`` or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration must be seconds or a string such as '30s'")
    if isinstance(value, int | float):
        return _bounded_duration(value)
    text = value.strip().lower()
    if len(text) > 100:
        raise ValueError("a duration is at most 100 characters, such as 30s, 5m, 1h30m or 500ms")
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return _bounded_duration(float(text))
    parts = _DURATION_RE.findall(text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise ValueError(f"'{value}' is not a duration: use forms such as 30s, 5m, 1h30m or 500ms")
    return _bounded_duration(sum(float(n) * _DURATION_UNITS[u] for n, u in parts))


@dataclass(frozen=True, slots=True)
class Resources:
    """What a task asks for, or what a node has: CPU cores, bytes of memory and disk, whole GPUs."""

    cpu: float = 0.0
    memory: int = 0
    disk: int = 0
    gpu: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu + other.cpu, self.memory + other.memory, self.disk + other.disk,
                         self.gpu + other.gpu)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpu - other.cpu, self.memory - other.memory, self.disk - other.disk,
                         self.gpu - other.gpu)

    def fits_in(self, free: Resources) -> bool:
        return (self.cpu <= free.cpu + 1e-9 and self.memory <= free.memory and self.disk <= free.disk
                and self.gpu <= free.gpu)

    def shortfall(self, free: Resources) -> list[str]:
        """What does not fit, in words ("cpu 4 > 2"), for pending reasons."""
        out = []
        if self.cpu > free.cpu + 1e-9:
            out.append(f"cpu {self.cpu:g} > {max(free.cpu, 0):g}")
        if self.memory > free.memory:
            out.append(f"memory {format_size(self.memory)} > {format_size(max(free.memory, 0))}")
        if self.disk > free.disk:
            out.append(f"disk {format_size(self.disk)} > {format_size(max(free.disk, 0))}")
        if self.gpu > free.gpu:
            out.append(f"gpu {self.gpu} > {max(free.gpu, 0)}")
        return out

    def to_dict(self) -> dict[str, float | int]:
        return {"cpu": self.cpu, "memory": self.memory, "disk": self.disk, "gpu": self.gpu}

    @classmethod
    def from_dict(cls, d: dict[str, float | int] | None) -> Resources:
        d = d or {}
        return cls(float(d.get("cpu", 0.0)), int(d.get("memory", 0)), int(d.get("disk", 0)),
                   int(d.get("gpu", 0)))


# What a task reserves when it asks for nothing: small, so many light tasks share a node (Nomad's
# default of 100 MHz is about 0.04 of a core), yet never zero, so no node takes unbounded work: 20 such
# tasks per core.
DEFAULT_TASK_RESOURCES = Resources(cpu=0.05, memory=64 * 2**20, disk=0, gpu=0)
