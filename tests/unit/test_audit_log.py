"""The audit log's buffer: a read has every entry recorded before it, even one the writer thread is
committing at that moment."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from corral.coordinator.audit import AuditLog
from corral.coordinator.service import Coordinator, Settings
from corral.store.audit import AuditQueries
from corral.store.rows import Row
from corral.store.sql import Store


def test_a_read_waits_for_the_batch_being_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    Coordinator(store, Settings())  # the schema
    audit = AuditLog(store)
    audit.flush()  # the first flush also prunes: done, so the next ones only write
    audit.record("admin", "create", "POST", "/v1/jobs", 201, "127.0.0.1")
    written, commit = threading.Event(), threading.Event()
    insert = AuditQueries.insert_audit

    def held_open(self: AuditQueries, rows: Sequence[Row]) -> None:  # inside the writer's transaction
        insert(self, rows)
        written.set()
        commit.wait(10)
    monkeypatch.setattr(AuditQueries, "insert_audit", held_open)
    writer = threading.Thread(target=audit.flush)  # as the writer thread does every half second
    writer.start()
    try:
        assert written.wait(10)
        threading.Timer(0.2, commit.set).start()
        entries = audit.page(10)  # a GET /v1/audit meanwhile
        assert commit.is_set()
        assert [(e["actor"], e["action"], e["path"]) for e in entries] == [("admin", "create", "/v1/jobs")]
    finally:
        commit.set()
        writer.join(10)
    store.close()
