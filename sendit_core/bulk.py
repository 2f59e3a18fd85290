"""The ingest hot path's two writes, straight to the DB-API cursor.

SQLAlchemy's per-row parameter handling costs more than SQLite's own insert
for the ~100 header values of every image, so these two statements bypass it:
images one row at a time (``ON CONFLICT DO NOTHING RETURNING id``, so a UID
another worker committed meanwhile is noticed, not an error) and header values
with ``executemany`` (SQLite) or ``COPY`` (PostgreSQL). Values are converted
with the columns' own SQLAlchemy bind processors, so what lands in the database
is exactly what the ORM would write.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from .models import HeaderValue, Image

IMAGE_COLUMNS = ("batch_id", "sop_instance_uid", "sop_class_uid", "study_instance_uid",
                 "series_instance_uid", "modality", "instance_number", "transfer_syntax_uid",
                 "stored_path", "original_name", "size", "created_at")
VALUE_COLUMNS = ("image_id", "field_id", "item", "position", "value_text", "value_num")


class BulkWriter:
    """Raw inserts on the session's connection (inside its transaction)."""

    def __init__(self, db: Session):
        connection = db.connection()
        self.dialect = connection.dialect
        self.cursor = connection.connection.driver_connection.cursor()
        self.postgresql = self.dialect.name == "postgresql"
        mark = "%s" if self.postgresql else "?"
        self.image_sql = (
            f"INSERT INTO image ({', '.join(IMAGE_COLUMNS)}) "
            f"VALUES ({', '.join([mark] * len(IMAGE_COLUMNS))}) "
            f"ON CONFLICT (batch_id, sop_instance_uid) DO NOTHING RETURNING id"
        )
        self.value_sql = (f"INSERT INTO header_value ({', '.join(VALUE_COLUMNS)}) "
                          f"VALUES ({', '.join([mark] * len(VALUE_COLUMNS))})")
        created = Image.__table__.c.created_at.type.bind_processor(self.dialect)
        self._created = created or (lambda value: value)

    def insert_image(self, row: dict[str, Any]) -> int | None:
        """Insert one image; its id, or ``None`` when the batch already has the UID."""
        row = {**row, "created_at": self._created(row["created_at"])}
        self.cursor.execute(self.image_sql, [row[name] for name in IMAGE_COLUMNS])
        found = self.cursor.fetchone()
        return found[0] if found else None

    def insert_values(self, rows: Sequence[tuple]) -> None:
        """Insert header value rows, each a tuple in :data:`VALUE_COLUMNS` order."""
        if not rows:
            return
        if self.postgresql:
            with self.cursor.copy(f"COPY header_value ({', '.join(VALUE_COLUMNS)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            self.cursor.executemany(self.value_sql, rows)

    def close(self) -> None:
        self.cursor.close()


assert tuple(c.name for c in HeaderValue.__table__.columns) == VALUE_COLUMNS
