"""Random identifiers for jobs, tasks, executions, nodes, pods: 32 hex digits, a version-4 UUID's bits.

Drawn from the kernel's random source like ``uuid.uuid4()``, but 256 at a time. ``os.urandom`` lets go of
the GIL for its system call; on a busy server, whose scheduler and writer threads wait for the GIL, every
call handed it away and waited for it again (about 80 µs, against 0.4 µs alone: docs/benchmarks.md, "One
job per request"), and one submit draws several ids on the event loop's thread. One call per 256 ids
takes that off the hot path; the ids are as random as before.
"""

from __future__ import annotations

import os
import threading
import uuid

_BATCH = 256  # ids per call to os.urandom
_SIZE = 16  # bytes per id


class _Pool:
    """Random bytes drawn ``_BATCH`` ids at a time, handed out 16 at a time (thread-safe)."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        # Also in a forked child: it must not hand out the ids its parent has left here, nor wait for a
        # lock another thread of the parent held at the fork.
        self._lock = threading.Lock()
        self._buf = b""
        self._at = 0

    def take(self) -> bytes:
        with self._lock:
            if self._at >= len(self._buf):
                self._buf = os.urandom(_SIZE * _BATCH)
                self._at = 0
            self._at += _SIZE
            return self._buf[self._at - _SIZE:self._at]


_pool = _Pool()
os.register_at_fork(after_in_child=_pool._reset)


def new_id() -> str:
    """A new random id: ``uuid.uuid4().hex``'s form (32 lowercase hex digits, version 4), from the pool."""
    return uuid.UUID(bytes=_pool.take(), version=4).hex
