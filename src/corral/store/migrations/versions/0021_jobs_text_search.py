"""history, part three: SQLite's text filters by an FTS5 trigram index

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-02 02:00:00

On SQLite, ``?q=``, ``?tag=`` and nomad-lite's ``command=`` were ``LIKE '%...%'`` over every job (15 s for a
selective ``q`` at 1,000,000 jobs). ``jobs_fts``, an FTS5 table tokenized in trigrams over ``jobs.search``
and ``jobs.command_search``, keyed by the job's seq and kept by triggers on ``jobs``, now narrows them
(``store.textsearch``); the ``LIKE`` stays, so the answers are the same. Filled here from every job.
PostgreSQL: nothing (its trigram GIN indexes came in 0018 and 0019). A SQLite without the trigram tokenizer
(before 3.34, or built without FTS5) keeps the scan.

A later migration that alters ``jobs`` in batch mode recreates the table and drops these triggers: the store
checks them at every start and rebuilds the index when they are gone (``textsearch.ensure``).
"""
from alembic import op

from corral.store import textsearch

revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == 'sqlite' and textsearch.supported(bind):
        textsearch.rebuild(bind)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == 'sqlite':
        textsearch.drop(bind)
