"""history indexes: lists of a million jobs by state, queue and text; a job's executions; finished times

Revision ID: 0018
Revises: 0016
Create Date: 2026-12-01 16:30:00

GET /v1/jobs and the dialects' lists read newest first (seq descending) under a filter: (state, seq) and
(queue, seq) give the first page of a filter without sorting its matches (ix_jobs_state was (state) alone).
The executions of a job (nomad-lite's worker filter, a job's deletion by autoDelete or --retain) had no index
on job_id. finished_at: retention finds the jobs that finished before its cutoff. On PostgreSQL, ``q`` and
``tag`` (substrings of jobs.search) are answered by a trigram GIN index (pg_trgm, a trusted extension since
PostgreSQL 13: the database's owner may create it); where the extension cannot be created, the index is
left out and the same queries scan, as they do on SQLite.
"""
import logging

import sqlalchemy as sa
from alembic import op

revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None

log = logging.getLogger("corral.store")


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.drop_index('ix_jobs_state')
        batch.create_index('ix_jobs_state_seq', ['state', 'seq'])
        batch.create_index('ix_jobs_queue_seq', ['queue', 'seq'])
        batch.create_index('ix_jobs_finished', ['finished_at'])
    op.create_index('ix_exec_job', 'executions', ['job_id'])
    bind = op.get_bind()
    if bind.dialect.name == 'postgresql':
        try:
            with bind.begin_nested():
                bind.execute(sa.text('CREATE EXTENSION IF NOT EXISTS pg_trgm'))
        except sa.exc.DBAPIError as e:
            log.warning("pg_trgm cannot be created (%s): text search in job lists scans the jobs",
                        str(e).splitlines()[0])
            return
        op.create_index('ix_jobs_search_trgm', 'jobs', ['search'], postgresql_using='gin',
                        postgresql_ops={'search': 'gin_trgm_ops'})


def downgrade() -> None:
    op.execute('DROP INDEX IF EXISTS ix_jobs_search_trgm')
    op.drop_index('ix_exec_job', 'executions')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_index('ix_jobs_finished')
        batch.drop_index('ix_jobs_queue_seq')
        batch.drop_index('ix_jobs_state_seq')
        batch.create_index('ix_jobs_state', ['state'])
