"""initial schema

Revision ID: 0001
Revises: 
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('batch',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('status', sa.Enum('QUEUED', 'PROCESSING', 'DONE', 'EMPTY', 'ERROR', name='batch_status', native_enum=False, length=16), nullable=False),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('image_count', sa.Integer(), nullable=False),
    sa.Column('error_count', sa.Integer(), nullable=False),
    sa.Column('pending_count', sa.Integer(), nullable=False),
    sa.Column('total_bytes', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_batch'))
    )
    with op.batch_alter_table('batch', schema=None) as batch_op:
        batch_op.create_index('ix_batch_name', ['name'], unique=False)
        batch_op.create_index('ix_batch_status_updated', ['status', 'updated_at'], unique=False)
        batch_op.create_index('ix_batch_updated_at', ['updated_at'], unique=False)

    op.create_table('header_field',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tag_path', sa.String(length=255), nullable=False),
    sa.Column('keyword_path', sa.String(length=512), nullable=False),
    sa.Column('tag', sa.Integer(), nullable=False),
    sa.Column('vr', sa.String(length=2), nullable=False),
    sa.Column('depth', sa.SmallInteger(), nullable=False),
    sa.Column('private_creator', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_header_field')),
    sa.UniqueConstraint('tag_path', name=op.f('uq_header_field_tag_path'))
    )
    with op.batch_alter_table('header_field', schema=None) as batch_op:
        batch_op.create_index('ix_header_field_keyword_path', ['keyword_path'], unique=False)

    op.create_table('image',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('sop_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('sop_class_uid', sa.String(length=64), nullable=True),
    sa.Column('study_instance_uid', sa.String(length=64), nullable=True),
    sa.Column('series_instance_uid', sa.String(length=64), nullable=True),
    sa.Column('modality', sa.String(length=16), nullable=True),
    sa.Column('instance_number', sa.Integer(), nullable=True),
    sa.Column('transfer_syntax_uid', sa.String(length=64), nullable=True),
    sa.Column('stored_path', sa.String(length=1024), nullable=False),
    sa.Column('original_name', sa.String(length=1024), nullable=True),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['batch_id'], ['batch.id'], name=op.f('fk_image_batch_id_batch'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_image')),
    sa.UniqueConstraint('batch_id', 'sop_instance_uid', name='uq_image_batch_sop')
    )
    with op.batch_alter_table('image', schema=None) as batch_op:
        batch_op.create_index('ix_image_modality', ['modality'], unique=False)
        batch_op.create_index('ix_image_series', ['series_instance_uid', 'instance_number'], unique=False)
        batch_op.create_index('ix_image_sop', ['sop_instance_uid'], unique=False)
        batch_op.create_index('ix_image_study', ['study_instance_uid'], unique=False)

    op.create_table('ingest_error',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('path', sa.String(length=1024), nullable=False),
    sa.Column('step', sa.String(length=32), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['batch_id'], ['batch.id'], name=op.f('fk_ingest_error_batch_id_batch'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ingest_error'))
    )
    with op.batch_alter_table('ingest_error', schema=None) as batch_op:
        batch_op.create_index('ix_ingest_error_batch', ['batch_id', 'id'], unique=False)

    op.create_table('header_value',
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('field_id', sa.Integer(), nullable=False),
    sa.Column('item', sa.String(length=64), nullable=False),
    sa.Column('position', sa.SmallInteger(), nullable=False),
    sa.Column('value_text', sa.Text(), nullable=True),
    sa.Column('value_num', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['field_id'], ['header_field.id'], name=op.f('fk_header_value_field_id_header_field')),
    sa.ForeignKeyConstraint(['image_id'], ['image.id'], name=op.f('fk_header_value_image_id_image'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('image_id', 'field_id', 'item', 'position', name=op.f('pk_header_value')),
    sqlite_with_rowid=False
    )
    with op.batch_alter_table('header_value', schema=None) as batch_op:
        batch_op.create_index('ix_header_value_field_num', ['field_id', 'value_num'], unique=False,
                              sqlite_where=sa.text('value_num IS NOT NULL'),
                              postgresql_where=sa.text('value_num IS NOT NULL'))
        batch_op.create_index('ix_header_value_field_text', ['field_id', 'value_text'], unique=False,
                              sqlite_where=sa.text('value_num IS NULL'),
                              postgresql_where=sa.text('value_num IS NULL'))



def downgrade() -> None:
    with op.batch_alter_table('header_value', schema=None) as batch_op:
        batch_op.drop_index('ix_header_value_field_text')
        batch_op.drop_index('ix_header_value_field_num')

    op.drop_table('header_value')
    with op.batch_alter_table('ingest_error', schema=None) as batch_op:
        batch_op.drop_index('ix_ingest_error_batch')

    op.drop_table('ingest_error')
    with op.batch_alter_table('image', schema=None) as batch_op:
        batch_op.drop_index('ix_image_study')
        batch_op.drop_index('ix_image_sop')
        batch_op.drop_index('ix_image_series')
        batch_op.drop_index('ix_image_modality')

    op.drop_table('image')
    with op.batch_alter_table('header_field', schema=None) as batch_op:
        batch_op.drop_index('ix_header_field_keyword_path')

    op.drop_table('header_field')
    with op.batch_alter_table('batch', schema=None) as batch_op:
        batch_op.drop_index('ix_batch_updated_at')
        batch_op.drop_index('ix_batch_status_updated')
        batch_op.drop_index('ix_batch_name')

    op.drop_table('batch')
