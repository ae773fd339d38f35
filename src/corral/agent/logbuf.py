"""The agent's output buffer: bounded per execution and in total, drained in bounded batches.

Output can come faster than it can be shipped (``yes`` writes gigabytes a minute). Past the limits
the buffer drops lines and counts them; once there is room again, or when the execution ends, one
marker line says how much was dropped. Pure logic: no I/O, no clock.

A report (``next_report``) holds updates and lines within one byte budget, ``REPORT_BYTES``, counted
as they travel in JSON: half the coordinator's limit for the route (8 MiB, ``corral.api.edge``). An
update's ``output`` and ``error`` are cut to fit before they are buffered (``fit_update``), so that
any update fits in a report and within what the coordinator accepts of each.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from typing import Any

PER_EXECUTION_BYTES = 4 * 1024 * 1024
TOTAL_BYTES = 32 * 1024 * 1024
BATCH_LINES = 2000
REPORT_BYTES = 4 * 1024 * 1024  # a report's updates and lines together, on the wire
BATCH_BYTES = REPORT_BYTES // 2  # the most of it lines may take: the rest is the updates'
# What a line costs besides its text: its dict on the wire (execution id, stream, time) and in memory.
LINE_OVERHEAD = 100
UPDATE_OVERHEAD = 300  # about the bytes of an update besides its output and error
# What the coordinator accepts of an update's texts (characters: corral.api.native.agent), and the bytes
# they may take on the wire here; together at most a quarter of a report, so any update fits in one.
OUTPUT_CHARS, OUTPUT_BYTES = 1 << 20, 768 * 1024
ERROR_CHARS, ERROR_BYTES = 1 << 16, 64 * 1024

Entry = tuple[str, str, str, float]  # execution id, stream, line, time


def wire_size(text: str) -> int:
    """The bytes of ``text`` in a JSON body (without its quotes): as many as its characters when they
    are printable ASCII without quotes or backslashes (the usual case, checked fast), else counted."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return len(text)
    return len(json.dumps(text)) - 2


def cost(line: str) -> int:
    return wire_size(line) + LINE_OVERHEAD


def fit(text: str, max_chars: int, max_bytes: int, what: str) -> str:
    """``text`` if it has at most ``max_chars`` characters and ``max_bytes`` bytes on the wire; else its
    longest beginning that fits with a marker saying how much of it was cut."""
    if len(text) <= max_chars and wire_size(text) <= max_bytes:
        return text

    def marker(kept: int) -> str:
        return f"\n[corral: {what} cut to fit a report: {len(text) - kept} of {len(text)} characters not sent]"

    room_chars = max_chars - len(marker(0))  # marker(0) is the longest marker: the most digits
    room_bytes = max_bytes - wire_size(marker(0))
    lo, hi = 0, max(0, min(len(text), room_chars, room_bytes))  # the longest prefix that fits: in [lo, hi]
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if wire_size(text[:mid]) <= room_bytes:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + marker(lo)


def fit_update(fields: dict[str, Any]) -> dict[str, Any]:
    """An update's fields with its ``output`` and ``error`` cut to fit (see ``fit``)."""
    out = dict(fields)
    if isinstance(out.get("output"), str):
        out["output"] = fit(out["output"], OUTPUT_CHARS, OUTPUT_BYTES, "output")
    if isinstance(out.get("error"), str):
        out["error"] = fit(out["error"], ERROR_CHARS, ERROR_BYTES, "error")
    return out


def update_size(u: dict[str, Any]) -> int:
    return UPDATE_OVERHEAD + wire_size(u.get("output") or "") + wire_size(u.get("error") or "")


def drop_marker(lines: int, size: int) -> str:
    return f"[corral: {lines} lines ({_size(size)}) dropped: output faster than it could be shipped]"


def _size(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    if n < 1_000_000:
        return f"{n / 1e3:.1f} kB"
    return f"{n / 1e6:.1f} MB"


@dataclass
class _Dropped:
    lines: int = 0
    size: int = 0


class LogBuffer:
    """Lines waiting to be shipped, oldest first."""

    def __init__(self, per_execution: int = PER_EXECUTION_BYTES, total: int = TOTAL_BYTES) -> None:
        self.per_execution, self.total = per_execution, total
        self._lines: deque[Entry] = deque()
        self._size = 0
        self._by_exec: dict[str, int] = {}  # execution -> bytes buffered
        self._dropped: dict[str, _Dropped] = {}  # executions dropping lines now
        self.dropped_lines = 0  # since the start, for the log and tests

    def __len__(self) -> int:
        return len(self._lines)

    @property
    def size(self) -> int:
        return self._size

    def pending(self, ex_id: str) -> bool:
        """Whether lines (or a drop marker) of this execution wait to be shipped."""
        return ex_id in self._by_exec or ex_id in self._dropped

    def behind(self, ex_id: str) -> bool:
        """Whether this execution's output comes faster than it is shipped: a quarter of its room (or
        of the total) is taken. Its reader should slow down before lines have to be dropped."""
        return (self._by_exec.get(ex_id, 0) > self.per_execution // 4 or self._size > self.total // 4
                or ex_id in self._dropped)

    def add(self, ex_id: str, stream: str, line: str, ts: float) -> bool:
        """Buffer one line; False when it was dropped for want of room."""
        c = cost(line)
        dropped = self._dropped.get(ex_id)
        held = self._by_exec.get(ex_id, 0)
        # Once dropping, an execution drops until half of its room is free again: one marker per long
        # stretch of dropped lines, not one every few lines.
        per, total = (self.per_execution, self.total) if dropped is None else (self.per_execution // 2,
                                                                               self.total // 2)
        if held + c > per or self._size + c > total:
            if dropped is None:
                dropped = self._dropped[ex_id] = _Dropped()
            dropped.lines += 1
            dropped.size += len(line) + 1
            self.dropped_lines += 1
            return False
        if dropped is not None:  # room again: say what is missing before what follows
            self._marker(ex_id, ts)
            held = self._by_exec.get(ex_id, 0)
        self._push(ex_id, stream, line, ts, c, held)
        return True

    def close(self, ex_id: str, ts: float) -> None:
        """The execution has ended: its drop marker, if it owes one, goes in whatever the room."""
        if ex_id in self._dropped:
            self._marker(ex_id, ts)

    def _marker(self, ex_id: str, ts: float) -> None:
        d = self._dropped.pop(ex_id)
        line = drop_marker(d.lines, d.size)
        self._push(ex_id, "stderr", line, ts, cost(line), self._by_exec.get(ex_id, 0))

    def _push(self, ex_id: str, stream: str, line: str, ts: float, c: int, held: int) -> None:
        self._lines.append((ex_id, stream, line, ts))
        self._by_exec[ex_id] = held + c
        self._size += c

    def take(self, max_lines: int = BATCH_LINES, max_bytes: int = BATCH_BYTES) -> list[dict[str, Any]]:
        """Up to ``max_lines`` lines and about ``max_bytes`` (at least one line), oldest first."""
        out: list[dict[str, Any]] = []
        size = 0
        while self._lines and len(out) < max_lines:
            ex_id, stream, line, ts = self._lines[0]
            c = cost(line)
            if out and size + c > max_bytes:
                break
            self._lines.popleft()
            size += c
            self._release(ex_id, c)
            out.append({"execution_id": ex_id, "stream": stream, "line": line, "ts": ts})
        return out

    def put_back(self, batch: list[dict[str, Any]]) -> None:
        """A batch that could not be shipped goes back in front, whatever the room: it was in before."""
        for r in reversed(batch):
            c = cost(r["line"])
            self._lines.appendleft((r["execution_id"], r["stream"], r["line"], r["ts"]))
            self._by_exec[r["execution_id"]] = self._by_exec.get(r["execution_id"], 0) + c
            self._size += c

    def forget(self, ex_ids: set[str]) -> None:
        """Drop every line of these executions (their stored log is full): nothing is owed for them."""
        if not ex_ids:
            return
        kept: deque[Entry] = deque()
        for e in self._lines:
            if e[0] in ex_ids:
                self._release(e[0], cost(e[2]))
            else:
                kept.append(e)
        self._lines = kept
        for ex_id in ex_ids:
            self._dropped.pop(ex_id, None)

    def _release(self, ex_id: str, c: int) -> None:
        self._size -= c
        left = self._by_exec[ex_id] - c
        if left > 0:
            self._by_exec[ex_id] = left
        else:
            del self._by_exec[ex_id]


Report = tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]


def next_report(updates: list[dict[str, Any]], buf: LogBuffer, budget: int = REPORT_BYTES) -> Report:
    """The next report: ``(lines, updates to send, updates held for later)``, within ``budget`` bytes
    together. Lines come first (at most half the budget), then updates in order while they fit (the
    first is always sent: with its texts cut by ``fit_update``, it fits). An execution's final update
    waits while more of its output is still to go, so that a finished task's log is complete when it
    shows as finished."""
    logs = buf.take(max_bytes=budget // 2)
    room = budget - sum(cost(r["line"]) for r in logs)
    send: list[dict[str, Any]] = []
    held: list[dict[str, Any]] = []
    full_batch = False
    for u in updates:
        size = update_size(u)
        if full_batch or (send and size > room):
            full_batch = True  # this and all after it go in the next report, in order
            held.append(u)
        elif u["state"] != "running" and buf.pending(u["execution_id"]):
            held.append(u)  # more of its output is still to go
        else:
            send.append(u)
            room -= size
    return logs, send, held
