"""Upgrading a database that already holds data, from every earlier schema revision, on SQLite and PostgreSQL.

Rows written by Corral itself (a finished job with its log, a job still waiting, a node, a schedule) are copied
into a database migrated only to revision R, keeping the columns R has. For every R, the database is upgraded to
head by the code a starting server runs (``Store``), and the data must be there and work through the real
coordinator: the finished job reads back with its log, the waiting one is handed to a new node and completes, the
schedule is listed. From the oldest revision, a real `corral server` starts on such a database (which upgrades
it) and a real worker runs the waiting job. New revisions are covered as they are added.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from corral.coordinator.schedules import Schedules
from corral.coordinator.service import Coordinator, LogLine, NodeInfo, Update
from corral.domain.spec import JobSpec
from corral.store import schema
from corral.store.migrate import alembic_config
from corral.store.sql import Store
from tests.harness import Cluster


def _earlier_revisions() -> list[str]:
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    return sorted(r.revision for r in script.walk_revisions() if r.revision != head)


def _rows_written_by_corral(tmp: Path) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]:
    """Every row of a database in which Corral finished a job, left one waiting, and made a schedule."""
    store = Store(f"sqlite:///{tmp / 'source.db'}")
    try:
        coord = Coordinator(store)
        node = str(coord.register(NodeInfo(name="old-node", hostname="old", version="t", cpu=2, memory=2**32,
                                           disk=0, runtimes=["process"]))["id"])
        done = coord.submit(JobSpec.model_validate({"name": "finished", "tasks": [{"name": "t", "run": "echo x"}]}))
        coord.schedule_once()
        work, _ = coord.poll(node, [])
        ex = work[0]["execution_id"]
        now = time.time()
        coord.report(node, [Update(ex, "running", now)], [LogLine(ex, "stdout", "from the old schema", now)])
        coord.report(node, [Update(ex, "completed", now, exit_code=0)], [])
        # Queue "later": no node serves it yet, so it is still waiting when the database is copied.
        waiting = coord.submit(JobSpec.model_validate({"name": "waiting", "queue": "later", "tasks": [
            {"name": "t", "run": "echo ran after the upgrade"}]}))
        coord.schedule_once()
        sched = Schedules(coord).create("0 0 1 1 *", JobSpec.model_validate({"tasks": [{"run": "true"}]}),
                                        name="yearly")
        rows = {}
        with store.engine.connect() as conn:
            for table in schema.metadata.sorted_tables:
                rows[table.name] = [dict(r._mapping) for r in conn.execute(sa.select(table))]
    finally:
        store.close()
    return rows, {"done": done["id"], "waiting": waiting["id"], "schedule": sched["id"], "node": node}


# The coordinators' own state (who leads, in which epoch): seeded by its migration and renewed by the running
# coordinators, not data a user wrote; copying it would also clash with the lease row 0015 inserts.
COORDINATION = {"leadership", "coordinators"}


def _database_at(url: str, revision: str, rows: dict[str, list[dict[str, Any]]]) -> set[str]:
    """Migrate an empty database to ``revision`` and insert the rows, with the columns that revision has;
    returns the names of the tables it has."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
        old = sa.MetaData()
        old.reflect(engine)
        with engine.begin() as conn:
            for name, items in rows.items():
                if name not in old.tables or not items or name in COORDINATION:
                    continue
                table = old.tables[name]
                # Typed as the application declares them (JSON, booleans), restricted to this revision's columns.
                typed = schema.metadata.tables[name]
                cols = [c.name for c in table.columns]
                target = sa.Table(name, sa.MetaData(), *(sa.Column(c, typed.c[c].type) for c in cols if c in typed.c))
                conn.execute(sa.insert(target), [{c: r[c] for c in cols if c in r} for r in items])
                if conn.dialect.name == "postgresql" and "seq" in cols:  # rows copied with their own seq
                    conn.execute(sa.text(f"SELECT setval(pg_get_serial_sequence('{name}', 'seq'), "
                                         f"(SELECT max(seq) FROM {name}))"))
        return set(old.tables)
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]:
    """The rows (written once for the module: every case copies them into a database of its own) and ids."""
    return _rows_written_by_corral(tmp_path_factory.mktemp("source"))


@pytest.mark.parametrize("revision", _earlier_revisions())
def test_a_database_with_data_upgrades_from_an_earlier_revision(
        database_url: str, revision: str, written: tuple[dict[str, list[dict[str, Any]]], dict[str, str]]) -> None:
    rows, ids = written
    tables = _database_at(database_url, revision, rows)
    assert {"jobs", "tasks", "executions", "logs", "nodes"} <= tables

    store = Store(database_url)  # upgrades to head, as `corral server` does at start
    try:
        coord = Coordinator(store)
        job, tasks, executions = coord.get_job(ids["done"])
        assert job["state"] == "completed" and job["name"] == "finished", job
        assert [t["state"] for t in tasks] == ["completed"]
        assert [e["exit_code"] for e in executions] == [0]
        with store.read() as tx:
            assert [r["line"] for r in tx.logs(ids["done"])] == ["from the old schema"]
            assert tx.node(ids["node"]) is not None

        node = str(coord.register(NodeInfo(name="new", hostname="new", version="t", cpu=2, memory=2**32, disk=0,
                                           runtimes=["process"], queues=["later"]))["id"])
        coord.schedule_once()
        work, _ = coord.poll(node, [])
        assert [w["job_id"] for w in work] == [ids["waiting"]], work
        ex = work[0]["execution_id"]
        now = time.time()
        coord.report(node, [Update(ex, "running", now)], [LogLine(ex, "stdout", "ran after the upgrade", now)])
        coord.report(node, [Update(ex, "completed", now, exit_code=0)], [])
        assert coord.job_row(ids["waiting"])["state"] == "completed"
        with store.read() as tx:
            assert [r["line"] for r in tx.logs(ids["waiting"])] == ["ran after the upgrade"]

        if "schedules" in tables:
            sched = Schedules(coord).get(ids["schedule"])
            assert sched["name"] == "yearly" and sched["state"] == "active" and sched["cron"] == "0 0 1 1 *"
        new = coord.submit(JobSpec.model_validate({"tasks": [{"run": "echo new", "queue": "later"}]}))
        coord.schedule_once()
        work, _ = coord.poll(node, [])
        assert [w["job_id"] for w in work] == [new["id"]], work
    finally:
        store.close()


@pytest.mark.slow
def test_a_server_upgrades_a_database_with_data_from_the_oldest_revision(
        database_url: str, cluster: Cluster,
        written: tuple[dict[str, list[dict[str, Any]]], dict[str, str]]) -> None:
    """The real processes, once per store, on the longest walk: every migration runs under a starting server."""
    # database_url first: its database is dropped after the cluster stops, not under it
    rows, ids = written
    tables = _database_at(database_url, _earlier_revisions()[0], rows)
    assert {"jobs", "tasks", "executions", "logs", "nodes"} <= tables

    cluster.start_server(database_url=database_url)  # upgrades to head at start
    done = cluster.job(ids["done"])
    assert done["state"] == "completed" and done["name"] == "finished", done
    assert [t["state"] for t in done["tasks"]] == ["completed"]
    assert done["tasks"][0]["executions"][0]["exit_code"] == 0
    assert cluster.logs(ids["done"]) == "from the old schema\n"
    assert ids["node"] in {n["id"] for n in cluster.nodes()}

    cluster.add_worker("new", "--runtime", "process", "--queue", "later")
    ran = cluster.wait_job(ids["waiting"])
    assert ran["state"] == "completed", ran
    assert cluster.logs(ids["waiting"]) == "ran after the upgrade\n"

    if "schedules" in tables:
        sched = cluster.get(f"/v1/schedules/{ids['schedule']}")
        assert sched["name"] == "yearly" and sched["state"] == "active" and sched["cron"] == "0 0 1 1 *"
    new = cluster.submit({"tasks": [{"run": "echo new", "queue": "later"}]})
    assert cluster.wait_job(new["id"])["state"] == "completed"
