"""The audit log: who created, cancelled, deleted, drained or changed a permission, and when.

``action`` tells from a request's method and path (never its query or body, which may hold credentials)
what kind of change it made, or None for a request that changes nothing a person should answer for (reads,
and the calls workers make about their own work). It is pure. ``AuditLog`` buffers entries in memory and
writes them in batches (one transaction per flush, not one per request, so the hot submit path pays for
an append only); the API's middleware records every successful change (api/audit.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from corral.store.rows import Row
from corral.store.sql import Store

log = logging.getLogger("corral.audit")

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The calls workers make about their own work and nodes (the native agent routes, Podling's worker
# routes): reports, not decisions of a person.
_WORKER_PREFIXES = ("/v1/agent/",)
_WORKER_SUFFIXES = ("/status", "/heartbeat", "/execute")
# Not changes: a login (the dashboard's too), a token for a password, a search or a check sent as a POST.
_NOT_CHANGES = frozenset({"/login", "/v1/auth/token", "/api/v1/login", "/ui/login", "/ui/logout", "/ui/validate"})
# A path's last segment that names what the request does to the object before it.
_VERBS = frozenset({"cancel", "restart", "pause", "resume", "drain", "purge", "batch-delete", "prune",
                    "deregister", "register", "revoke", "passwd", "undrain", "cordon", "uncordon"})
_PERMISSION_PREFIXES = ("/v1/keys", "/v1/users", "/v1/tokens", "/users", "/v1/namespaces", "/v1/roles")


def action(method: str, path: str) -> str | None:
    """The kind of change ``method path`` makes ('create', 'cancel', 'delete', 'drain', 'permission.create',
    ...), or None when it is not one the audit log keeps."""
    method = method.upper()
    if method not in MUTATING or path in _NOT_CHANGES or path.startswith(_WORKER_PREFIXES):
        return None
    if path.endswith(_WORKER_SUFFIXES) and ("/nodes/" in path or path.startswith("/api/v1/")):
        return None
    last = path.rstrip("/").rsplit("/", 1)[-1]
    if last in _VERBS:
        verb = last
    elif method == "DELETE":
        verb = "delete"
    elif method == "POST":
        verb = "create"
    else:
        verb = "update"
    if path.startswith(_PERMISSION_PREFIXES):
        return f"permission.{verb}"
    return verb


def actor(identity: Any, local: bool, cert_cn: str | None = None) -> str:
    """Who an entry names: the caller's identity's name; without one, the common name of its verified
    client certificate ('cn:NAME'), else 'local' (a server whose access token stands for its owner) or
    'anonymous'."""
    name = getattr(identity, "name", None)
    if name and getattr(identity, "kind", None) != "anonymous":  # an anonymous caller: what else is known
        return str(name)[:200]
    if cert_cn:
        return f"cn:{cert_cn}"[:200]
    return "local" if local else "anonymous"


@dataclass(frozen=True)
class AuditConfig:
    retention: float = 90 * 86400.0  # seconds an entry is kept (corral server --audit-retention)
    max_entries: int = 1_000_000  # the newest this many are kept, whatever their age
    flush_every: float = 0.5  # seconds between writes of the buffer


class AuditLog:
    MAX_BUFFER = 100_000  # entries held while the store is unreachable; older ones are dropped (logged)

    def __init__(self, store: Store, config: AuditConfig | None = None) -> None:
        self.store = store
        self.config = config or AuditConfig()
        self._buf: list[Row] = []
        self._lock = threading.Lock()
        # One flush at a time: a reader's flush waits for a batch the writer thread is still committing, so
        # that what was recorded before a read is in it (not in a transaction beside it).
        self._flushing = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_prune = 0.0

    def record(self, who: str, what: str, method: str, path: str, status: int, address: str | None) -> None:
        entry = {"at": time.time(), "actor": who, "action": what[:32], "method": method[:8],
                 "path": path[:1000], "status": status, "address": (address or "")[:64] or None}
        with self._lock:
            if len(self._buf) >= self.MAX_BUFFER:
                log.error("audit buffer full: dropping the oldest entry (is the store reachable?)")
                del self._buf[0]
            self._buf.append(entry)

    def flush(self) -> int:
        with self._flushing:
            with self._lock:
                batch, self._buf = self._buf, []
            if batch:
                try:
                    with self.store.transaction() as tx:
                        tx.insert_audit(batch)
                except Exception:
                    with self._lock:
                        self._buf[:0] = batch  # kept for the next flush
                    raise
        now = time.time()
        if now - self._last_prune > 60:
            self._last_prune = now
            with self.store.transaction() as tx:
                tx.prune_audit(now - self.config.retention, self.config.max_entries)
        return len(batch)

    def page(self, limit: int, before: int | None = None, who: str | None = None,
             what: str | None = None) -> Sequence[Row]:
        self.flush()  # what was recorded before this read is in it
        with self.store.read() as tx:
            return tx.audit_page(limit, before, who, what)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="corral-audit", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.flush()
        except Exception:
            log.exception("could not write the last audit entries")

    def _run(self) -> None:
        while not self._stop.wait(self.config.flush_every):
            try:
                self.flush()
            except Exception:
                log.exception("audit flush failed; trying again")
