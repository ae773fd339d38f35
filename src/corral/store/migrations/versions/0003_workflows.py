"""workflows: composite tasks, outputs, subjobs, webhooks, autoDelete

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 12:45:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('parent_job_id', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('parent_task_id', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('output', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('auto_delete_after', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('hook_marks', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('hooks_done', sa.Boolean(), nullable=True))
        batch_op.create_index('ix_jobs_parent', ['parent_job_id'], unique=False)
        batch_op.create_index('ix_jobs_hooks', ['hooks_done'], unique=False)
        batch_op.create_index('ix_jobs_autodelete', ['auto_delete_after'], unique=False)
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=16), server_default='run', nullable=False))
        batch_op.add_column(sa.Column('parent_id', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('template', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('output', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('progress', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('subjob_id', sa.String(length=32), nullable=True))
        batch_op.create_index('ix_tasks_parent', ['parent_id', 'state', 'position'], unique=False)
        batch_op.create_index('ix_tasks_kind', ['kind', 'state', 'ready_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_index('ix_tasks_kind')
        batch_op.drop_index('ix_tasks_parent')
        for c in ('subjob_id', 'progress', 'output', 'template', 'parent_id', 'kind'):
            batch_op.drop_column(c)
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_autodelete')
        batch_op.drop_index('ix_jobs_hooks')
        batch_op.drop_index('ix_jobs_parent')
        for c in ('hooks_done', 'hook_marks', 'auto_delete_after', 'output', 'parent_task_id', 'parent_job_id'):
            batch_op.drop_column(c)
