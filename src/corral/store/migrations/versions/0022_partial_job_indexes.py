"""partial job indexes: webhooks and autoDelete index only the jobs that have them

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-02 11:40:00

``ix_jobs_hooks`` (``hooks_done``) and ``ix_jobs_autodelete`` (``auto_delete_after``) held an entry for every
job, though only jobs with webhooks or an autoDelete time have a value there: every submit wrote two index
entries for nothing, and once the store is analyzed (SQLite's ANALYZE counts NULLs as one value), the
planner took an index whose every entry holds the same NULL for useless and read the whole table instead: at
1,000,000 jobs the webhook loop's look for restarted jobs and the autoDelete pass each scanned it, 150 ms
every second, beside the submits. Each now holds only the jobs that have the value.
"""
import sqlalchemy as sa
from alembic import op

revision = '0022'
down_revision = '0021'
branch_labels = None
depends_on = None

_PARTIAL = {'ix_jobs_hooks': 'hooks_done', 'ix_jobs_autodelete': 'auto_delete_after'}


def upgrade() -> None:
    for name, column in _PARTIAL.items():
        op.drop_index(name, table_name='jobs')
        where = sa.text(f'{column} IS NOT NULL')
        op.create_index(name, 'jobs', [column], sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    for name, column in _PARTIAL.items():
        op.drop_index(name, table_name='jobs')
        op.create_index(name, 'jobs', [column])
