"""services: a stable name and port in front of the ready pods a label selector matches

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 10:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'services',
        sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), primary_key=True,
                  autoincrement=True),
        sa.Column('id', sa.String(length=64), nullable=False, unique=True),
        sa.Column('origin', sa.String(length=16), nullable=False),
        sa.Column('name', sa.String(length=63), nullable=False),
        sa.Column('namespace', sa.String(length=63), nullable=False),
        sa.Column('type', sa.String(length=16), nullable=False),
        sa.Column('spec', sa.JSON(), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.Column('updated_at', sa.Float(), nullable=False),
        sa.UniqueConstraint('namespace', 'name', name='uq_services_name'),
    )
    op.create_index('ix_services_type', 'services', ['type'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_services_type', table_name='services')
    op.drop_table('services')
