"""coordinators: the coordinators sharing this database, and the one leadership lease with its epoch

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01 13:15:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'coordinators',
        sa.Column('id', sa.String(length=64), primary_key=True),
        sa.Column('node_no', sa.Integer(), nullable=False),
        sa.Column('instance', sa.String(length=64), nullable=False),
        sa.Column('address', sa.String(length=256), nullable=False),
        sa.Column('started_at', sa.Float(), nullable=False),
        sa.Column('last_seen', sa.Float(), nullable=False),
        sa.Column('draining', sa.Boolean(), nullable=False),
        sa.UniqueConstraint('node_no', name='uq_coordinators_node_no'),
    )
    leadership = op.create_table(
        'leadership',
        sa.Column('id', sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column('leader_id', sa.String(length=64)),
        sa.Column('holder', sa.String(length=64)),
        sa.Column('epoch', sa.BigInteger(), nullable=False),
        sa.Column('expires_at', sa.Float(), nullable=False),
        sa.Column('transfer_to', sa.String(length=64)),
        sa.Column('changed_at', sa.Float(), nullable=False),
    )
    op.bulk_insert(leadership, [{'id': 1, 'leader_id': None, 'holder': None, 'epoch': 0, 'expires_at': 0.0,
                                 'transfer_to': None, 'changed_at': 0.0}])


def downgrade() -> None:
    op.drop_table('leadership')
    op.drop_table('coordinators')
