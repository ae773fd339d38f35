"""queue order: a scheduling pass reads each queue's ready tasks in placement order

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-01 19:30:00

A pass read the oldest ready tasks of every queue together, ``ORDER BY priority DESC, job_seq, position``
over ``(state, ready_at)``: a sort of every ready pending task on every pass, and tasks that no node could
take (a queue nobody serves) hid those behind them. It now reads one queue at a time in index order, and
finds the queues that hold pending tasks by skipping through the same index (one probe per queue). A task
that no ready node could hold even empty is parked (``tasks.parked``): the index leaves it out of the read
until the ready nodes change.
"""
import sqlalchemy as sa
from alembic import op

revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tasks') as batch:
        batch.add_column(sa.Column('parked', sa.Boolean, nullable=False, server_default=sa.false()))
    op.create_index('ix_tasks_queue_order', 'tasks',
                    ['state', 'queue', 'parked', sa.text('priority DESC'), 'job_seq', 'position', 'ready_at'])


def downgrade() -> None:
    op.drop_index('ix_tasks_queue_order', table_name='tasks')
    with op.batch_alter_table('tasks') as batch:
        batch.drop_column('parked')
