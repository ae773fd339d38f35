"""job roots: the job at the top of the tree a subjob (detached too) was spawned from, for the size limit

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 07:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('root_job_id', sa.String(length=32), nullable=True))
        batch_op.create_index('ix_jobs_root', ['root_job_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_root')
        batch_op.drop_column('root_job_id')
