"""node drain: an operator's drain of a worker (corral nodes drain), and the deadline of its running tasks

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01 13:10:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('nodes') as batch:
        batch.add_column(sa.Column('drain_requested_at', sa.Float(), nullable=True))
        batch.add_column(sa.Column('drain_deadline', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('nodes') as batch:
        batch.drop_column('drain_deadline')
        batch.drop_column('drain_requested_at')
