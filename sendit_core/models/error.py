from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .meta import Base, utcnow


class IngestError(Base):
    """One failure while importing: which file, which step, and why."""

    __tablename__ = "ingest_error"

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batch.id", ondelete="CASCADE"))
    #: the file as the source named it (upload name, path in the data folder)
    path: Mapped[str] = mapped_column(String(1024))
    #: the pipeline step that failed: read, parse, store, index, ...
    step: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    batch = relationship("Batch", back_populates="errors", lazy="raise_on_sql")

    __table_args__ = (Index("ix_ingest_error_batch", "batch_id", "id"),)
