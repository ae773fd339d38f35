"""Brings a database's schema up to date with Alembic, at server start."""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine

log = logging.getLogger("corral.store")
MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATE_LOCK = 0x436F7272  # any constant: the key of the advisory lock that one migrating coordinator holds


def alembic_config(engine: Engine | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine) -> None:
    """Upgrade to head in one transaction. Several coordinators starting at once on one PostgreSQL take
    turns (an advisory lock held until the transaction ends): the first migrates, the others find it done."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATE_LOCK})
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        before = MigrationContext.configure(conn).get_current_revision()
        command.upgrade(cfg, "head")
        after = MigrationContext.configure(conn).get_current_revision()
    if before != after:
        log.info("database schema migrated from %s to %s", before or "empty", after)
