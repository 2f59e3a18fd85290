"""search: the value indexes cover a search's rows and carry image_id

A search selects image ids from ``header_value`` by ``(field_id, value_text)``
(rows without a number) or ``(field_id, value_num)`` (numbers, dates, times),
then checks its other conditions per candidate image
(``sendit_core/query.py``). What changes, measured at 20,000 images
(``bench/search.py``):

- the text index gets ``value_num`` (always NULL there): SQLite cannot tell
  that every row of a partial index meets its condition and read each matching
  row of the table to check ``value_num`` (~1.7 us a row: 19 ms for
  ``Modality=CT``); with it the index covers the query (0.6 ms);
- both indexes carry ``image_id``: PostgreSQL answers from the index alone
  (index-only scans; before, one heap fetch per matching row, 70 ms for
  ``PatientSex=F``). In the text index it is a key column, so checking "does
  image I have Modality=CT" is one seek on ``(field_id, value_text,
  image_id)``; in the numeric index it is only carried along (``INCLUDE``),
  because as a key PostgreSQL used it to check a date range per image by
  scanning the whole range (0.8 s where a primary-key lookup takes 10 ms).
  SQLite's index entries already end with the table's key, so its indexes do
  not grow;
- on PostgreSQL the text index uses ``text_pattern_ops``, so a wildcard's prefix
  (``LIKE 'DOE%'``) is an index range whatever the database's collation;
  equality uses it too.

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_header_value_field_text', table_name='header_value')
    op.drop_index('ix_header_value_field_num', table_name='header_value')
    op.create_index('ix_header_value_field_text', 'header_value',
                    ['field_id', 'value_text', 'image_id', 'value_num'], unique=False,
                    sqlite_where=sa.text('value_num IS NULL'),
                    postgresql_where=sa.text('value_num IS NULL'),
                    postgresql_ops={'value_text': 'text_pattern_ops'})
    op.create_index('ix_header_value_field_num', 'header_value',
                    ['field_id', 'value_num'], unique=False,
                    sqlite_where=sa.text('value_num IS NOT NULL'),
                    postgresql_where=sa.text('value_num IS NOT NULL'),
                    postgresql_include=['image_id'])


def downgrade() -> None:
    op.drop_index('ix_header_value_field_text', table_name='header_value')
    op.drop_index('ix_header_value_field_num', table_name='header_value')
    op.create_index('ix_header_value_field_text', 'header_value', ['field_id', 'value_text'],
                    unique=False,
                    sqlite_where=sa.text('value_num IS NULL'),
                    postgresql_where=sa.text('value_num IS NULL'))
    op.create_index('ix_header_value_field_num', 'header_value', ['field_id', 'value_num'],
                    unique=False,
                    sqlite_where=sa.text('value_num IS NOT NULL'),
                    postgresql_where=sa.text('value_num IS NOT NULL'))
