"""The agent's output buffer: bounded per execution and in total, drained in bounded batches.

Output can come faster than it can be shipped (``yes`` writes gigabytes a minute). Past the limits
the buffer drops lines and counts them; once there is room again, or when the execution ends, one
marker line says how much was dropped. Pure logic: no I/O, no clock.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from typing import Any

PER_EXECUTION_BYTES = 4 * 1024 * 1024
TOTAL_BYTES = 32 * 1024 * 1024
BATCH_LINES = 2000
BATCH_BYTES = 2 * 1024 * 1024
# What a line costs besides its text: its dict on the wire (execution id, stream, time) and in memory.
LINE_OVERHEAD = 100

Entry = tuple[str, str, str, float]  # execution id, stream, line, time


def wire_size(text: str) -> int:
    """The bytes of ``text`` in a JSON body (without its quotes): as many as its characters when they
    are printable ASCII without quotes or backslashes (the usual case, checked fast), else counted."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return len(text)
    return len(json.dumps(text)) - 2


def cost(line: str) -> int:
    return wire_size(line) + LINE_OVERHEAD


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
