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

_BATCH = 256  # ids per call to os.urandom
_SIZE = 16


class _Pool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._buf = b""
        self._at = 0

    def take(self) -> bytearray:
        with self._lock:
            if self._at >= len(self._buf):
                self._buf = os.urandom(_SIZE * _BATCH)
                self._at = 0
            raw = bytearray(self._buf[self._at:self._at + _SIZE])
            self._at += _SIZE
        return raw


_pool = _Pool()
# A forked child must not hand out the ids its parent has left in the pool.
os.register_at_fork(after_in_child=_pool._reset)


def new_id() -> str:
    """A new random id: 32 lowercase hex digits, laid out as ``uuid.uuid4().hex`` (version 4, RFC 4122
    variant)."""
    raw = _pool.take()
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()
