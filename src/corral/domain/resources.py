"""Resource sizes ("256Mi", "1Gi"), durations ("30s", "5m") and whether a request fits."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

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


# -- JSON schemas of sizes and durations (for the OpenAPI document) -------------------------------------------
# What parse_size and parse_duration accept, said as JSON Schema: a number within the bounds, or text of the
# nearest stricter form (one unit, lower case for durations, no spaces, as many digits as the bound allows).
def _digits(factor: float, at_most: float) -> int:
    """The most digits a whole number of units of ``factor`` may have, a fraction of up to 3 digits after them,
    and stay within ``at_most``."""
    d = 0
    while 10 ** (d + 1) * factor <= at_most:
        d += 1
    return d


def _amount(d: int, positive: bool) -> str:
    if positive:  # at least one digit other than 0 before the point: more than zero
        return f"0{{0,2}}[1-9][0-9]{{0,{d - 1}}}(?:\\.[0-9]{{1,3}})?"
    return f"[0-9]{{1,{d}}}(?:\\.[0-9]{{1,3}})?"


_SIZE_SUFFIXES = {"": 1, "[kK]": 10**3, "[kK]i": 2**10, "[mM]": 10**6, "[mM]i": 2**20, "[gG]": 10**9,
                  "[gG]i": 2**30, "[tT]": 10**12, "[tT]i": 2**40}


def size_schema(description: str) -> dict[str, Any]:
    """A size: bytes (a number), or text such as '256Mi', '1Gi', '500M' (parse_size), at most MAX_SIZE."""
    forms = [f"{_amount(_digits(f, MAX_SIZE), False)}{u}{'[bB]?' if u else ''}" for u, f in _SIZE_SUFFIXES.items()]
    return {"anyOf": [{"type": "number", "minimum": 0, "maximum": MAX_SIZE},
                      {"type": "string", "pattern": f"^(?:{'|'.join(forms)})$"}],
            "description": description}


def duration_schema(description: str, *, positive: bool = False, at_most: float = MAX_DURATION) -> dict[str, Any]:
    """A duration: seconds (a number), or text such as '30s', '5m', '500ms' (parse_duration), at most ``at_most``
    seconds, and more than zero where ``positive``."""
    units = {"": 1.0, "s": 1.0, **{u: f for u, f in _DURATION_UNITS.items() if u != "s"}}
    forms = [f"{_amount(d, positive)}{u}" for u, f in units.items() if (d := _digits(f, at_most)) > 0]
    number: dict[str, Any] = {"type": "number", "maximum": at_most,
                              **({"exclusiveMinimum": 0} if positive else {"minimum": 0})}
    return {"anyOf": [number, {"type": "string", "pattern": f"^(?:{'|'.join(forms)})$"}],
            "description": description}
