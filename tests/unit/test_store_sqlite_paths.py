"""Two short paths of the SQLite store, on a real SQLite file:

- a durable commit (a submission) is on disk before it returns: the write-ahead log is synced after the
  commit, once the write lock is released (the next writer does not wait for the disk);
- ``Store.read_soon`` reads on the caller's thread (the event loop) through its own connection, and in a
  worker thread when that connection is in use or SQLite answers "locked".

``os.fsync`` is watched (not replaced: it still syncs) to see what is synced and when.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from corral.coordinator.flow import job_rows
from corral.domain.spec import JobSpec
from corral.store import sealing
from corral.store.sql import QuickTx, Store, Tx

SPEC = JobSpec.model_validate({"name": "w", "tasks": [{"name": "t", "run": "echo hi"}]})


def _synced(monkeypatch: pytest.MonkeyPatch, store: Store, db: Path) -> list[tuple[str, bool, int]]:
    """Every fsync from now on: (the file's path, whether the write lock was held, jobs another
    connection sees in the database at that moment)."""
    calls: list[tuple[str, bool, int]] = []
    real = os.fsync

    def watched(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        with sqlite3.connect(db) as other:
            seen = other.execute("SELECT count(*) FROM jobs").fetchone()[0]
        assert store._write_lock is not None
        calls.append((path, store._write_lock.locked(), seen))
        real(fd)
    monkeypatch.setattr(os, "fsync", watched)
    return calls


@pytest.mark.parametrize("query", ["", "?timeout=30"])  # a URL's query string is not part of the file's name
def test_a_durable_commit_syncs_the_log_after_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       query: str) -> None:
    monkeypatch.delenv("CORRAL_SQLITE_SYNC", raising=False)  # NORMAL, the default
    db = tmp_path / "corral.db"
    store = Store(f"sqlite:///{db}{query}")
    calls = _synced(monkeypatch, store, db)
    with store.transaction() as tx:  # not durable: nothing synced by the store
        tx.insert_jobs([job_rows(SPEC, time.time())])
    assert calls == []
    with store.transaction(durable=True) as tx:
        tx.insert_jobs([job_rows(SPEC, time.time())])
    # the log, once: after the commit (another connection sees both jobs) and with the lock released
    assert calls == [(f"{db}-wal", False, 2)]


def test_with_sync_off_the_database_file_is_synced_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_SQLITE_SYNC", "OFF")  # checkpoints do not sync either
    db = tmp_path / "corral.db"
    store = Store(f"sqlite:///{db}")
    calls = _synced(monkeypatch, store, db)
    with store.transaction(durable=True) as tx:
        tx.insert_jobs([job_rows(SPEC, time.time())])
    assert calls == [(f"{db}-wal", False, 1), (str(db), False, 1)]


def test_with_sync_full_sqlite_syncs_its_own_commits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_SQLITE_SYNC", "FULL")
    db = tmp_path / "corral.db"
    store = Store(f"sqlite:///{db}")
    calls = _synced(monkeypatch, store, db)
    with store.transaction(durable=True) as tx:
        tx.insert_jobs([job_rows(SPEC, time.time())])
    assert calls == []  # SQLite's commit synced the log itself, under the lock


def _count(tx: Tx) -> tuple[int, int]:
    return threading.get_ident(), int(tx.c.execute(sa.text("SELECT count(*) FROM jobs")).scalar_one())


def test_read_soon_reads_on_the_callers_thread(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'corral.db'}")
    with store.transaction() as tx:
        tx.insert_jobs([job_rows(SPEC, time.time())])

    async def main() -> None:
        here = threading.get_ident()
        assert await store.read_soon(_count) == (here, 1)
        # its connection in use (by another thread): a worker thread reads instead, and sees the same
        with store._inline_lock:
            ident, n = await store.read_soon(_count)
        assert (ident != here, n) == (True, 1)
        # SQLite busy on the first try: read again in a worker thread. The read raises SQLite's "locked"
        # itself: a WAL reader is refused only in rare moments (a checkpoint resetting the log, recovery)
        # that a test cannot bring about on demand.
        tries: list[int] = []

        def busy_once(tx: Tx) -> tuple[int, int]:
            tries.append(threading.get_ident())
            if len(tries) == 1:
                raise sa.exc.OperationalError("SELECT", {}, sqlite3.OperationalError("database is locked"))
            return _count(tx)
        ident, n = await store.read_soon(busy_once)
        assert tries[0] == here and ident != here and n == 1
        # another error is the caller's
        with pytest.raises(ZeroDivisionError):
            await store.read_soon(lambda tx: 1 // 0)
        assert await store.read_soon(_count) == (here, 1)  # and the connection serves the next read
    asyncio.run(main())
    store.close()


def test_quick_reads_give_the_rows_tx_gives(tmp_path: Path) -> None:
    """The job page's reads on the driver's connection (QuickTx) return what Tx returns: every column, JSON
    decoded, secrets unsealed, booleans; the same order and paging."""
    sealing.configure([sealing.new_key()])
    try:
        store = Store(f"sqlite:///{tmp_path / 'corral.db'}")
        spec = JobSpec.model_validate({"name": "w", "tags": ["a", "b"], "secrets": {"token": "s3cr3t"},
                                       "tasks": [{"name": f"t{i}", "run": "echo {{ secrets.token }}",
                                                  "env": {"A": "1"}} for i in range(5)]})
        job, tasks = job_rows(spec, time.time())
        with store.transaction() as tx:
            tx.insert_jobs([(job, tasks)])
            tx.insert_executions([{"id": f"e{i}", "task_id": t["id"], "job_id": job["id"], "attempt": 1,
                                   "node_id": "n1", "state": "running", "cpu": 0.5, "memory": 1 << 20,
                                   "disk": 0, "gpu": 0, "gpus": [{"index": 0}], "scheduled_at": 100.0 - i}
                                  for i, t in enumerate(tasks[:3])])
        with store.engine.connect() as conn:
            plain, quick = Tx(conn), QuickTx(conn)
            got = quick.job(job["id"])
            assert got == plain.job(job["id"]) and got is not None
            assert "s3cr3t" in repr(got["spec"])  # unsealed, as Tx gives it (the views mask it)
            assert quick.job("nope") is None
            raw = conn.connection.driver_connection
            assert raw is not None
            stored = raw.execute("SELECT spec FROM jobs").fetchone()[0]
            assert "s3cr3t" not in stored and sealing.PREFIX in stored  # sealed at rest
            for after, limit in ((0, 2), (0, 10), (2, 2)):
                assert quick.tasks_page(job["id"], after, limit) == plain.tasks_page(job["id"], after, limit)
            ids = [t["id"] for t in plain.tasks_page(job["id"], 0, 10)]
            assert quick.executions_of_tasks(ids) == plain.executions_of_tasks(ids)
            assert [e["id"] for e in quick.executions_of_tasks(ids)] == ["e2", "e1", "e0"]
            assert quick.count_tasks_by_state(job["id"]) == plain.count_tasks_by_state(job["id"])
        store.close()
    finally:
        sealing.configure([])
