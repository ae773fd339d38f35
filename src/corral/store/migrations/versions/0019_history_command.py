"""history, part two: nomad-lite's command filter by a column; a time window in the past by (created_at, seq)

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-01 19:30:00

nomad-lite's ``GET /api/jobs?command=`` is a case-insensitive substring of the job's first task's command:
it read every task's JSON spec (a sequential scan of tasks, 6 s at 600,000 jobs). ``jobs.command_search``
now holds that command, lower-cased in Python as it is written (``store.sql.command_search``, the same on
both stores), with a trigram GIN index on PostgreSQL where pg_trgm exists (as ``jobs.search`` has since
0018). Existing jobs are filled here, in batches of their seq, from their first task's spec.

``ix_jobs_created`` (created_at) becomes ``ix_jobs_created_seq`` (created_at, seq): a window's page of seqs
is read from the index alone, its rows after.
"""
import json
import logging
from typing import Any

import sqlalchemy as sa
from alembic import op

from corral.store.rows import command_search

revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None

log = logging.getLogger("corral.store")
BATCH = 5000


def _fill(bind: sa.Connection) -> None:
    """command_search of every job from its first top-level task, BATCH jobs a statement."""
    read = sa.text("SELECT j.seq, t.spec FROM jobs j JOIN tasks t ON t.job_id = j.id AND t.position = 0 "
                   "AND t.parent_id IS NULL WHERE j.seq > :after ORDER BY j.seq LIMIT :n")
    write = sa.text("UPDATE jobs SET command_search = :c WHERE seq = :s")
    after = 0
    while True:
        rows = bind.execute(read, {"after": after, "n": BATCH}).all()
        if not rows:
            return
        params: list[dict[str, Any]] = []
        for seq, spec in rows:
            spec = json.loads(spec) if isinstance(spec, str) else spec
            text = command_search(spec if isinstance(spec, dict) else {})
            if text:
                params.append({"s": seq, "c": text})
        if params:
            bind.execute(write, params)
        after = rows[-1][0]


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('command_search', sa.Text))
        batch.drop_index('ix_jobs_created')
        batch.create_index('ix_jobs_created_seq', ['created_at', 'seq'])
    bind = op.get_bind()
    _fill(bind)
    if bind.dialect.name == 'postgresql':
        has_trgm = bind.execute(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")).first()
        if has_trgm is None:
            log.warning("pg_trgm is not installed: nomad-lite's command filter scans the jobs")
            return
        op.create_index('ix_jobs_command_trgm', 'jobs', ['command_search'], postgresql_using='gin',
                        postgresql_ops={'command_search': 'gin_trgm_ops'})


def downgrade() -> None:
    op.execute('DROP INDEX IF EXISTS ix_jobs_command_trgm')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_index('ix_jobs_created_seq')
        batch.create_index('ix_jobs_created', ['created_at'])
        batch.drop_column('command_search')
