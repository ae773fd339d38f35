"""Idempotency keys: a client that sends a submission again with the same ``Idempotency-Key`` (after a
lost answer, say) gets what the first one created, not a second job.

A key is scoped to the route it was sent to (``v1/jobs``, ``tork/jobs``, ...) and kept for ``TTL``
seconds. What was submitted is fingerprinted (a hash of the validated specification), so the same key
with a different request is refused with a 409 instead of silently answering for the first. The record
is written in the transaction that creates the job, keyed by (scope, key): of two concurrent duplicates
only one can commit; the other reads what it created.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

TTL = 24 * 3600.0
MAX_KEY = 255
HEADER = "Idempotency-Key"


@dataclass(frozen=True)
class IdemKey:
    scope: str  # the route, e.g. "v1/jobs"
    key: str


def check_key(value: str) -> str:
    """The header's value, or ValueError saying what is wrong with it."""
    if not 1 <= len(value) <= MAX_KEY:
        raise ValueError(f"{HEADER} must be 1-{MAX_KEY} characters")
    if any(not (32 < ord(c) < 127) for c in value):
        raise ValueError(f"{HEADER} may hold only visible ASCII characters (no spaces)")
    return value


def fingerprint(what: Any) -> str:
    """A hash of a submission (JSON types), the same for the same content whatever its key order."""
    text = json.dumps(what, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
