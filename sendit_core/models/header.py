"""Header fields and values: every data element of every image, indexed for search.

A :class:`HeaderField` is one distinct element *path* (``PatientName``, or
``ReferencedSeriesSequence.SeriesInstanceUID`` inside a sequence, or a private
tag ``(0009,0010)``), stored once; each image's values point to it by id, so
"field F = / like / between V" is an index range scan on
``(field_id, value_text)`` or ``(field_id, value_num)``.
"""
from __future__ import annotations

from sqlalchemy import Float, ForeignKey, Index, Integer, SmallInteger, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from .meta import Base

#: Values longer than this are truncated in ``value_text`` (the file keeps all).
MAX_VALUE_LENGTH = 1024


class HeaderField(Base):
    __tablename__ = "header_field"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: tag path, 8 hex digits per level joined by ".", e.g. ``00081115.0020000E``
    tag_path: Mapped[str] = mapped_column(String(255), unique=True)
    #: keyword path, e.g. ``ReferencedSeriesSequence.SeriesInstanceUID``; private
    #: and unknown elements use their tag ``(0009,1001)`` as keyword
    keyword_path: Mapped[str] = mapped_column(String(512))
    #: the last element's tag as an integer (group << 16 | element)
    tag: Mapped[int] = mapped_column(Integer)
    vr: Mapped[str] = mapped_column(String(2))
    #: nesting depth: 0 for top-level elements
    depth: Mapped[int] = mapped_column(SmallInteger, default=0)
    #: private creator of a private element, when known
    private_creator: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (Index("ix_header_field_keyword_path", "keyword_path"),)


class HeaderValue(Base):
    """One value of one element of one image.

    The primary key (image, field, item, position) doubles as the index for an
    image's header table; on SQLite the table is ``WITHOUT ROWID``, clustered
    on that key, so each insert maintains one B-tree fewer. Searches use
    ``(field_id, value_num)`` for values with a number (numeric VRs, dates,
    times) and ``(field_id, value_text)`` for the others.
    """

    __tablename__ = "header_value"

    image_id: Mapped[int] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"), primary_key=True)
    field_id: Mapped[int] = mapped_column(ForeignKey("header_field.id"), primary_key=True)
    #: sequence item indexes along the path, e.g. ``0`` or ``0.2`` ("" at top level)
    item: Mapped[str] = mapped_column(String(64), primary_key=True, default="")
    #: position among the values of a multi-valued element (0-based)
    position: Mapped[int] = mapped_column(SmallInteger, primary_key=True, default=0)
    value_text: Mapped[str | None] = mapped_column(Text)
    #: numeric value for numeric and date VRs (DS, IS, US, FL, DA, ...), for range searches
    value_num: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        # Each value lands in exactly one search index: numbers and dates in the
        # numeric one, everything else in the text one (a third fewer index writes).
        # Both carry image_id and the text one value_num (always NULL there), so a
        # search reads the index alone; in the text index image_id is a key column
        # ("has image I field F = V" is one seek), in the numeric one it is only
        # included (as a key, PostgreSQL checked a date range per image by
        # scanning the range). text_pattern_ops: a LIKE prefix is an index range
        # in any collation. (Migration 0003, sendit_core/query.py.)
        Index("ix_header_value_field_text", "field_id", "value_text", "image_id", "value_num",
              sqlite_where=text("value_num IS NULL"),
              postgresql_where=text("value_num IS NULL"),
              postgresql_ops={"value_text": "text_pattern_ops"}),
        Index("ix_header_value_field_num", "field_id", "value_num",
              sqlite_where=text("value_num IS NOT NULL"),
              postgresql_where=text("value_num IS NOT NULL"),
              postgresql_include=["image_id"]),
        {"sqlite_with_rowid": False},
    )
