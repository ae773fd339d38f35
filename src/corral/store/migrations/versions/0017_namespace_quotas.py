"""namespace quotas: CPU, memory, GPUs, running tasks and pods an admin allows one namespace

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01 16:20:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'namespace_quotas',
        sa.Column('namespace', sa.String(63), primary_key=True),
        sa.Column('cpu', sa.Float(), nullable=True),
        sa.Column('memory', sa.BigInteger(), nullable=True),
        sa.Column('gpus', sa.Integer(), nullable=True),
        sa.Column('tasks', sa.Integer(), nullable=True),
        sa.Column('pods', sa.Integer(), nullable=True),
        sa.Column('updated_by', sa.String(200), nullable=False),
        sa.Column('updated_at', sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('namespace_quotas')
