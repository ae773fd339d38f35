"""pods: long-running work (pods, their containers, the ports they hold on nodes, their logs) and the
address a node is reached at

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 10:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('pods',
    sa.Column('seq', SEQ, autoincrement=True, nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('origin', sa.String(length=16), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('namespace', sa.String(length=63), nullable=False),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('desired', sa.String(length=8), nullable=False),
    sa.Column('restart_policy', sa.String(length=16), nullable=False),
    sa.Column('runtime', sa.String(length=16), nullable=False),
    sa.Column('cpu', sa.Float(), nullable=False),
    sa.Column('memory', sa.BigInteger(), nullable=False),
    sa.Column('disk', sa.BigInteger(), nullable=False),
    sa.Column('gpu', sa.Integer(), nullable=False),
    sa.Column('node_selector', sa.JSON(), nullable=False),
    sa.Column('node_id', sa.String(length=32), nullable=True),
    sa.Column('instance_id', sa.String(length=32), nullable=True),
    sa.Column('ready', sa.Boolean(), nullable=False),
    sa.Column('ttl_expires_at', sa.Float(), nullable=True),
    sa.Column('grace', sa.Float(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('scheduled_at', sa.Float(), nullable=True),
    sa.Column('started_at', sa.Float(), nullable=True),
    sa.Column('finished_at', sa.Float(), nullable=True),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('seq'),
    sa.UniqueConstraint('id')
    )
    with op.batch_alter_table('pods', schema=None) as batch_op:
        batch_op.create_index('ix_pods_state', ['state'], unique=False)
        batch_op.create_index('ix_pods_node', ['node_id', 'state'], unique=False)
        batch_op.create_index('ix_pods_namespace', ['namespace', 'seq'], unique=False)
        batch_op.create_index('ix_pods_ttl', ['ttl_expires_at'], unique=False)
        batch_op.create_index('ix_pods_instance', ['instance_id'], unique=False)
    op.create_table('pod_containers',
    sa.Column('pod_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('container_id', sa.String(length=128), nullable=True),
    sa.Column('restart_count', sa.Integer(), nullable=False),
    sa.Column('exit_code', sa.Integer(), nullable=True),
    sa.Column('ready', sa.Boolean(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('started_at', sa.Float(), nullable=True),
    sa.Column('finished_at', sa.Float(), nullable=True),
    sa.Column('log_bytes', sa.BigInteger(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('pod_id', 'name')
    )
    op.create_table('node_ports',
    sa.Column('node_id', sa.String(length=32), nullable=False),
    sa.Column('port', sa.Integer(), nullable=False),
    sa.Column('protocol', sa.String(length=3), nullable=False),
    sa.Column('pod_id', sa.String(length=64), nullable=True),
    sa.Column('instance_id', sa.String(length=32), nullable=True),
    sa.Column('container', sa.String(length=63), nullable=True),
    sa.Column('container_port', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.PrimaryKeyConstraint('node_id', 'port', 'protocol')
    )
    with op.batch_alter_table('node_ports', schema=None) as batch_op:
        batch_op.create_index('ix_node_ports_pod', ['pod_id'], unique=False)
    op.create_table('pod_logs',
    sa.Column('seq', SEQ, autoincrement=True, nullable=False),
    sa.Column('pod_id', sa.String(length=64), nullable=False),
    sa.Column('instance_id', sa.String(length=32), nullable=False),
    sa.Column('container', sa.String(length=63), nullable=False),
    sa.Column('stream', sa.String(length=6), nullable=False),
    sa.Column('line', sa.Text(), nullable=False),
    sa.Column('ts', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('seq')
    )
    with op.batch_alter_table('pod_logs', schema=None) as batch_op:
        batch_op.create_index('ix_pod_logs_pod', ['pod_id', 'seq'], unique=False)
    with op.batch_alter_table('nodes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('address', sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('nodes', schema=None) as batch_op:
        batch_op.drop_column('address')
    with op.batch_alter_table('pod_logs', schema=None) as batch_op:
        batch_op.drop_index('ix_pod_logs_pod')
    op.drop_table('pod_logs')
    with op.batch_alter_table('node_ports', schema=None) as batch_op:
        batch_op.drop_index('ix_node_ports_pod')
    op.drop_table('node_ports')
    op.drop_table('pod_containers')
    with op.batch_alter_table('pods', schema=None) as batch_op:
        batch_op.drop_index('ix_pods_instance')
        batch_op.drop_index('ix_pods_ttl')
        batch_op.drop_index('ix_pods_namespace')
        batch_op.drop_index('ix_pods_node')
        batch_op.drop_index('ix_pods_state')
    op.drop_table('pods')
