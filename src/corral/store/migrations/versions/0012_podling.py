"""podling: a Podling task's id (YYYYMMDDHHMMSS-xxxxxxxx) and the native job of one task it runs as

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 10:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'podling_tasks',
        sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), primary_key=True,
                  autoincrement=True),
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('job_id', sa.String(length=32), nullable=False),
        sa.Column('extra', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.UniqueConstraint('id', name='uq_podling_tasks_id'),
        sa.UniqueConstraint('job_id', name='uq_podling_tasks_job'),
    )


def downgrade() -> None:
    op.drop_table('podling_tasks')
