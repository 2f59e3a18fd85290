"""image: drop the sha256 column, which nothing ever filled

The column was planned for a checksum of each stored file and the API showed
it as ``"sha256": null`` on every image. Filling it would cost a full read
and hash of every file at import (about 0.35 ms a 512x512 CT file, a sixth of
its import), so it goes instead; duplicates are still told apart by comparing
the bytes of the file already stored under the same SOP Instance UID.

SQLite drops the column in place (``ALTER TABLE ... DROP COLUMN``, SQLite
3.35 and newer), not by copying the table: a copy would mean dropping the old
``image`` table, which the header values reference.

Revision ID: 0004
Revises: 0003
"""
import sqlite3

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
        raise RuntimeError(f"sendit's schema upgrade 0004 needs SQLite 3.35 or newer to drop a "
                           f"column in place; this Python has SQLite {sqlite3.sqlite_version}")
    op.drop_column("image", "sha256")


def downgrade() -> None:
    op.add_column('image', sa.Column('sha256', sa.String(length=64), nullable=True))
