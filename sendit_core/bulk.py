"""The ingest hot path's two writes, straight to the DB-API cursor.

SQLAlchemy's per-row parameter handling costs more than SQLite's own insert
for the ~100 header values of every image, so these two statements bypass it:
images one row at a time (``ON CONFLICT DO NOTHING RETURNING id``, so a UID
another worker committed meanwhile is noticed, not an error) and header values
with ``COPY`` (PostgreSQL) or, on SQLite, from a staging table (below). Values
are converted with the columns' own SQLAlchemy bind processors, so what lands
in the database is exactly what the ORM would write.

A chunk's header values are *staged* before its transaction writes anything,
keyed by each file's job-file id (its image id is known only once its image
row is in), and inserted once the images are. On SQLite the staging table is
a ``TEMP`` table of the connection: writing it takes none of the database's
locks, so the ``executemany`` of ~11,000 rows (the per-row work of Python and
the driver) runs while other import processes hold the single write lock, and
the locked part is one ``INSERT … SELECT``, half the time (``bench/inserts.py``).
On PostgreSQL, where writers do not wait for each other, the rows are kept in
memory and sent with ``COPY``.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy.orm import Session

from .models import HeaderValue, Image

IMAGE_COLUMNS = ("batch_id", "sop_instance_uid", "sop_class_uid", "study_instance_uid",
                 "series_instance_uid", "modality", "instance_number", "transfer_syntax_uid",
                 "stored_path", "original_name", "size", "created_at")
VALUE_COLUMNS = ("image_id", "field_id", "item", "position", "value_text", "value_num")
_STAGED = ", ".join(VALUE_COLUMNS[1:])

#: SQLite: the connection's own staging tables (``temp`` schema: private to the
#: connection, in memory, invisible to other connections, emptied per chunk).
_SQLITE_STAGING = (
    f"CREATE TEMP TABLE IF NOT EXISTS sendit_staged_value (file_id INTEGER NOT NULL, {_STAGED})",
    "CREATE TEMP TABLE IF NOT EXISTS sendit_staged_image (file_id INTEGER PRIMARY KEY, image_id INTEGER NOT NULL)",
)


def placeholder(dialect) -> str:
    """The DB-API driver's positional parameter mark: ``?`` (sqlite3) or ``%s`` (psycopg)."""
    return "?" if dialect.paramstyle == "qmark" else "%s"


class BulkWriter:
    """Raw inserts on the session's connection (inside its transaction).

    Call :meth:`stage_values` first, then :meth:`insert_image` for each image,
    then :meth:`insert_staged`.
    """

    def __init__(self, db: Session):
        connection = db.connection()
        self.dialect = connection.dialect
        self.cursor = connection.connection.driver_connection.cursor()
        self.postgresql = self.dialect.name == "postgresql"
        mark = placeholder(self.dialect)
        self.image_sql = (
            f"INSERT INTO image ({', '.join(IMAGE_COLUMNS)}) "
            f"VALUES ({', '.join([mark] * len(IMAGE_COLUMNS))}) "
            f"ON CONFLICT (batch_id, sop_instance_uid) DO NOTHING RETURNING id"
        )
        created = Image.__table__.c.created_at.type.bind_processor(self.dialect)
        self._created = created or (lambda value: value)
        self._staged: list[tuple] = []

    def stage_values(self, rows: Iterable[tuple]) -> None:
        """Hold header value rows until their images are in; each row is a
        :data:`VALUE_COLUMNS` tuple whose first item is the file's job-file id
        (any key that :meth:`insert_staged` maps to an image id) instead of the
        image id. SQLite: call it before the transaction's first write, so the
        rows are staged without the database's write lock."""
        if self.postgresql:
            self._staged = rows if isinstance(rows, list) else list(rows)
            return
        for statement in _SQLITE_STAGING:
            self.cursor.execute(statement)
        self.cursor.execute("DELETE FROM temp.sendit_staged_value")
        self.cursor.execute("DELETE FROM temp.sendit_staged_image")
        self.cursor.executemany(
            f"INSERT INTO temp.sendit_staged_value VALUES ({', '.join('?' * len(VALUE_COLUMNS))})", rows)

    def insert_image(self, row: dict[str, Any]) -> int | None:
        """Insert one image; its id, or ``None`` when the batch already has the UID."""
        row = {**row, "created_at": self._created(row["created_at"])}
        self.cursor.execute(self.image_sql, [row[name] for name in IMAGE_COLUMNS])
        found = self.cursor.fetchone()
        return found[0] if found else None

    def insert_staged(self, image_ids: Mapping[int, int]) -> None:
        """Insert the staged rows of the keys in ``image_ids`` (key → image id);
        the rows of other keys (files that turned out duplicates) are dropped."""
        if not image_ids:
            return
        if self.postgresql:
            with self.cursor.copy(f"COPY header_value ({', '.join(VALUE_COLUMNS)}) FROM STDIN") as copy:
                for row in self._staged:
                    image_id = image_ids.get(row[0])
                    if image_id is not None:
                        copy.write_row((image_id, *row[1:]))
            self._staged = []
            return
        self.cursor.executemany("INSERT INTO temp.sendit_staged_image VALUES (?, ?)", image_ids.items())
        self.cursor.execute(
            f"INSERT INTO header_value ({', '.join(VALUE_COLUMNS)}) "
            f"SELECT i.image_id, {', '.join('v.' + c for c in VALUE_COLUMNS[1:])} "
            f"FROM temp.sendit_staged_value AS v JOIN temp.sendit_staged_image AS i USING (file_id)")

    def close(self) -> None:
        self.cursor.close()


assert tuple(c.name for c in HeaderValue.__table__.columns) == VALUE_COLUMNS
