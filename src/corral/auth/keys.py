"""API keys: ``crl_<id>_<secret>``, 256 random bits, shown once; the store keeps only their SHA-256.

A fast hash is right here: the key is random, not a password, so nobody can guess it from its hash
faster than guessing it. A request with a key costs a parse, a dictionary lookup (``KeyCache``) and one
SHA-256: no password hash, and no store read once the key is in the cache. The cache is invalidated by a
revoke in this process and keeps an entry at most ``ttl`` seconds, so a revoke by another process on the
same database takes effect within that time too.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

PREFIX = "crl_"


def new_key() -> tuple[str, str]:
    """(key id, the whole key)."""
    key_id = secrets.token_hex(8)
    return key_id, f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(key: str) -> str | None:
    """The id inside ``key``, or None when it is not shaped as a Corral key."""
    if not key.startswith(PREFIX) or len(key) > 200:
        return None
    key_id, sep, rest = key[len(PREFIX):].partition("_")
    return key_id if sep and rest and len(key_id) == 16 and all(c in "0123456789abcdef" for c in key_id) else None


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def matches(key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(key_hash(key), stored_hash)


@dataclass(frozen=True)
class KeyRecord:
    """What a request needs of a key's row."""

    id: str
    name: str
    owner: str
    role: str
    namespaces: tuple[str, ...] | None
    scopes: tuple[str, ...] | None
    hash: str
    expires_at: float | None
    revoked: bool

    def usable(self, now: float) -> bool:
        return not self.revoked and (self.expires_at is None or now < self.expires_at)


class KeyCache:
    """Key id -> its record, for at most ``ttl`` seconds, ``size`` entries (least recently used go)."""

    def __init__(self, ttl: float = 2.0, size: int = 10_000) -> None:
        self.ttl = ttl
        self.size = size
        self._items: OrderedDict[str, tuple[float, KeyRecord | None]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key_id: str, now: float | None = None) -> tuple[bool, KeyRecord | None]:
        """(found, record); a record of None means "no such key", cached too."""
        now = time.monotonic() if now is None else now
        with self._lock:
            item = self._items.get(key_id)
            if item is None or now - item[0] > self.ttl:
                return False, None
            self._items.move_to_end(key_id)
            return True, item[1]

    def put(self, key_id: str, record: KeyRecord | None, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._items[key_id] = (now, record)
            self._items.move_to_end(key_id)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def forget(self, key_id: str) -> None:
        with self._lock:
            self._items.pop(key_id, None)
