"""Password hashes: argon2id through argon2-cffi, never a home-made hash."""

from __future__ import annotations

import os

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


def _hasher() -> PasswordHasher:
    """argon2id with the library's defaults (RFC 9106's low-memory profile: 3 passes over 64 MiB), which
    ``CORRAL_ARGON2_TIME_COST`` and ``CORRAL_ARGON2_MEMORY_KIB`` change (a small machine; the tests). A
    hash records its own parameters: changing them never locks anyone out."""
    d = PasswordHasher()
    return PasswordHasher(time_cost=int(os.environ.get("CORRAL_ARGON2_TIME_COST", d.time_cost)),
                          memory_cost=int(os.environ.get("CORRAL_ARGON2_MEMORY_KIB", d.memory_cost)),
                          parallelism=d.parallelism if "CORRAL_ARGON2_MEMORY_KIB" not in os.environ else 1)


_HASHER = _hasher()
MIN_LENGTH = 8
MAX_LENGTH = 1024
# Checked when a user is unknown, so that a wrong name costs as much time as a wrong password (made with
# the hasher in use, once).
_DUMMIES: dict[int, str] = {}


def _dummy() -> str:
    if id(_HASHER) not in _DUMMIES:
        _DUMMIES[id(_HASHER)] = _HASHER.hash("corral-not-a-user-password")
    return _DUMMIES[id(_HASHER)]


def check_password(password: str) -> str:
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise ValueError(f"a password must have {MIN_LENGTH} to {MAX_LENGTH} characters")
    return password


def hash_password(password: str) -> str:
    return _HASHER.hash(check_password(password))


def verify_password(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored`` (None: no such user: the same work, always False)."""
    if len(password) > MAX_LENGTH:
        return False
    try:
        return _HASHER.verify(stored or _dummy(), password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
