"""ingest jobs

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('job',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.Enum('QUEUED', 'CLAIMED', 'DONE', name='job_status', native_enum=False, length=16), nullable=False),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('delete_source', sa.Boolean(), nullable=False),
    sa.Column('file_count', sa.Integer(), nullable=False),
    sa.Column('claimed_by', sa.String(length=255), nullable=True),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['batch_id'], ['batch.id'], name=op.f('fk_job_batch_id_batch'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job'))
    )
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.create_index('ix_job_batch', ['batch_id'], unique=False)
        batch_op.create_index('ix_job_status', ['status', 'heartbeat_at'], unique=False)

    op.create_table('job_file',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('outcome', sa.Enum('PENDING', 'IMPORTED', 'DUPLICATE', 'ERROR', name='file_outcome', native_enum=False, length=16), nullable=False),
    sa.Column('image_id', sa.BigInteger(), nullable=True),
    sa.Column('source_deleted', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['job.id'], name=op.f('fk_job_file_job_id_job'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_file'))
    )
    with op.batch_alter_table('job_file', schema=None) as batch_op:
        batch_op.create_index('ix_job_file_job_outcome', ['job_id', 'outcome', 'id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('job_file', schema=None) as batch_op:
        batch_op.drop_index('ix_job_file_job_outcome')

    op.drop_table('job_file')
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_index('ix_job_status')
        batch_op.drop_index('ix_job_batch')

    op.drop_table('job')
