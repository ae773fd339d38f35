"""Podling's words for Corral's: ids, task and node statuses, the status flow a worker may report, times
and quantities as Podling writes them. Pure: no I/O (api/dialects/podling.py and coordinator/podling.py
use them)."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
# Podling's ids: the time (YYYYMMDDHHMMSS) and 8 random letters or digits, such as 20250119123456-abc12345.
# Its documentation also shows shorter tails (20250119123456-pod123): any 1-16 of them are accepted.
ID_RE = re.compile(r"^[0-9]{14}-[a-z0-9]{1,16}$")
# Podling's task flow: pending -> scheduled -> running -> completed | failed.
TASK_STATUSES = ("pending", "scheduled", "running", "completed", "failed")
# What a worker may report next, from each status (a quick task may end before it was seen running; any
# live task may fail). Nothing leaves completed or failed.
TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"scheduled", "failed"}),
    "scheduled": frozenset({"running", "completed", "failed"}),
    "running": frozenset({"completed", "failed"}),
    "completed": frozenset(),
    "failed": frozenset(),
}
# Corral's task states as Podling's: a cancelled task (or one whose job was cancelled) has failed.
TASK_STATUS = {"pending": "pending", "scheduled": "scheduled", "running": "running",
               "completed": "completed", "failed": "failed", "cancelled": "failed", "skipped": "completed",
               "lost": "failed"}
PORT_LABEL = "podling.io/port"  # a node's Podling port (a worker's --podling-port, a registration's port)
REGISTERED_LABEL = "podling.io/registered"  # "api": registered through Podling's API, not a Corral worker
HEARTBEAT_TIMEOUT = 90.0  # Podling's master calls a node offline after this long without a heartbeat


def new_id(now: float, rand: str | None = None) -> str:
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d%H%M%S")
    return f"{stamp}-{rand or ''.join(secrets.choice(ID_ALPHABET) for _ in range(8))}"


def task_status(state: str) -> str:
    return TASK_STATUS.get(state, state)


def transition_error(current: str, wanted: str) -> str | None:
    """Why a task in ``current`` may not be reported ``wanted`` (None: it may)."""
    if wanted not in TASK_STATUSES:
        return f"unknown status '{wanted}': one of {', '.join(TASK_STATUSES)}"
    if wanted in TRANSITIONS.get(current, frozenset()):
        return None
    if not TRANSITIONS.get(current):
        return f"the task is {current} already; its status cannot change"
    nexts = " or ".join(sorted(TRANSITIONS[current]))
    return f"a {current} task cannot become {wanted} (it can become {nexts})"


def go_time(ts: float | None) -> str | None:
    """A time as Go's encoding/json writes a time.Time (RFC 3339 with nanoseconds, zeros trimmed), in UTC."""
    if ts is None:
        return None
    d = datetime.fromtimestamp(ts, UTC)
    frac = f"{d.microsecond:06d}".rstrip("0")
    return d.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"


_CPU_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m?)$")
_MEM_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4,
              "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4}
_MEM_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([kmgt]i?)?$", re.IGNORECASE)


def parse_cpu(value: str) -> int:
    """Podling's CPU quantity ("2", "500m", "2.5") as millicores."""
    m = _CPU_RE.match(value.strip())
    if not m:
        raise ValueError(f"'{value}' is not a CPU quantity (such as 2, 500m or 2.5)")
    n = float(m.group(1))
    milli = n if m.group(2) else n * 1000
    if milli <= 0 or milli > 1024 * 1000:
        raise ValueError(f"'{value}' is out of range (more than 0, at most 1024 cores)")
    return int(milli)


def parse_memory(value: str) -> int:
    """Podling's memory quantity ("1Gi", "512Mi", "1073741824") as bytes."""
    m = _MEM_RE.match(value.strip())
    if not m:
        raise ValueError(f"'{value}' is not a memory quantity (such as 1Gi, 512Mi or 1073741824)")
    n = int(float(m.group(1)) * _MEM_UNITS[(m.group(2) or "").lower()])
    if n <= 0 or n > 1 << 50:
        raise ValueError(f"'{value}' is out of range (more than 0, at most 1 PiB)")
    return n
