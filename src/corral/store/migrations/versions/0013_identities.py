"""identities: users, API keys, the token signing key; every job and schedule in a namespace, and who
created each job, schedule, pod and service

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 13:20:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'users',
        sa.Column('name', sa.String(length=63), primary_key=True),
        sa.Column('password_hash', sa.Text(), nullable=False),
        sa.Column('role', sa.String(length=16), nullable=False),
        sa.Column('namespaces', sa.JSON(), nullable=True),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.Column('updated_at', sa.Float(), nullable=False),
    )
    op.create_table(
        'api_keys',
        sa.Column('id', sa.String(length=32), primary_key=True),
        sa.Column('name', sa.String(length=63), nullable=False),
        sa.Column('owner', sa.String(length=80), nullable=False),
        sa.Column('role', sa.String(length=16), nullable=False),
        sa.Column('namespaces', sa.JSON(), nullable=True),
        sa.Column('scopes', sa.JSON(), nullable=True),
        sa.Column('hash', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.Column('expires_at', sa.Float(), nullable=True),
        sa.Column('last_used_at', sa.Float(), nullable=True),
        sa.Column('revoked_at', sa.Float(), nullable=True),
        sa.Index('ix_api_keys_owner', 'owner'),
    )
    op.create_table(
        'auth_secrets',
        sa.Column('name', sa.String(length=32), primary_key=True),
        sa.Column('value', sa.Text(), nullable=False),
        sa.Column('created_at', sa.Float(), nullable=False),
    )
    for table in ('jobs', 'schedules'):
        with op.batch_alter_table(table) as b:
            b.add_column(sa.Column('namespace', sa.String(length=63), nullable=False, server_default='default'))
            b.add_column(sa.Column('created_by', sa.String(length=80), nullable=True))
    for table in ('pods', 'services'):
        with op.batch_alter_table(table) as b:
            b.add_column(sa.Column('created_by', sa.String(length=80), nullable=True))
    op.create_index('ix_jobs_namespace', 'jobs', ['namespace', 'seq'])


def downgrade() -> None:
    op.drop_index('ix_jobs_namespace', 'jobs')
    for table in ('pods', 'services'):
        with op.batch_alter_table(table) as b:
            b.drop_column('created_by')
    for table in ('jobs', 'schedules'):
        with op.batch_alter_table(table) as b:
            b.drop_column('created_by')
            b.drop_column('namespace')
    op.drop_table('auth_secrets')
    op.drop_table('api_keys')
    op.drop_table('users')
