"""stacks: what a stack of the Stacks API holds beyond its pod, and its batch-delete jobs

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 10:45:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('stacks',
    sa.Column('seq', SEQ, autoincrement=True, nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('pod_spec', sa.Text(), nullable=False),
    sa.Column('target_ports', sa.JSON(), nullable=False),
    sa.Column('cpu_milli', sa.BigInteger(), nullable=False),
    sa.Column('memory_bytes', sa.BigInteger(), nullable=False),
    sa.Column('ttl_expires_at', sa.Float(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('seq'),
    sa.UniqueConstraint('id')
    )
    op.create_index('ix_stacks_ttl', 'stacks', ['ttl_expires_at'], unique=False)
    op.create_table('stack_batch_jobs',
    sa.Column('seq', SEQ, autoincrement=True, nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('stack_ids', sa.JSON(), nullable=False),
    sa.Column('done', sa.Integer(), nullable=False),
    sa.Column('deleted', sa.Integer(), nullable=False),
    sa.Column('not_found', sa.Integer(), nullable=False),
    sa.Column('failed', sa.Integer(), nullable=False),
    sa.Column('errors', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('seq'),
    sa.UniqueConstraint('id')
    )
    op.create_index('ix_stack_batch_jobs_status', 'stack_batch_jobs', ['status'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_stack_batch_jobs_status', table_name='stack_batch_jobs')
    op.drop_table('stack_batch_jobs')
    op.drop_index('ix_stacks_ttl', table_name='stacks')
    op.drop_table('stacks')
