"""bounded jobs: tasks paged by job and creation order; unstarted tasks of finished jobs end cancelled

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 06:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.create_index('ix_tasks_job_seq', ['job_id', 'seq'], unique=False)
    # A failed or cancelled job's tasks that never started used to stay pending (and counted as waiting
    # work); they end cancelled now, as new failures leave them. A restart runs them again.
    op.execute(sa.text(
        "UPDATE tasks SET state = 'cancelled', ready_at = NULL, reason = NULL, "
        "error = 'not run: the job ' || (SELECT jobs.state FROM jobs WHERE jobs.id = tasks.job_id) "
        "WHERE state = 'pending' AND job_id IN (SELECT id FROM jobs WHERE state IN ('failed', 'cancelled'))"))


def downgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_index('ix_tasks_job_seq')
