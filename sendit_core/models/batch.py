from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Enum, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .meta import Base, utcnow


class BatchStatus(str, enum.Enum):
    """Where a batch is in the ingest pipeline."""

    QUEUED = "QUEUED"          #: files handed over, no worker has started yet
    PROCESSING = "PROCESSING"  #: a worker is importing its files
    DONE = "DONE"              #: every file processed; some may have errors
    EMPTY = "EMPTY"            #: processed, but no file could be imported or none given
    ERROR = "ERROR"            #: processed, every file failed


class Batch(Base):
    """A set of images that arrived together (a watched folder, an upload session)."""

    __tablename__ = "batch"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    status: Mapped[BatchStatus] = mapped_column(
        Enum(BatchStatus, name="batch_status", native_enum=False, length=16),
        default=BatchStatus.QUEUED,
    )
    source: Mapped[str] = mapped_column(String(64), default="cli")
    image_count: Mapped[int] = mapped_column(Integer, default=0)
    error_count: Mapped[int] = mapped_column(Integer, default=0)
    #: files handed over and not yet processed
    pending_count: Mapped[int] = mapped_column(Integer, default=0)
    total_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    images = relationship("Image", back_populates="batch", lazy="raise_on_sql",
                          passive_deletes=True)
    errors = relationship("IngestError", back_populates="batch", lazy="raise_on_sql",
                          passive_deletes=True)

    __table_args__ = (
        Index("ix_batch_name", "name"),
        Index("ix_batch_status_updated", "status", "updated_at"),
        Index("ix_batch_updated_at", "updated_at"),
    )

    def __repr__(self) -> str:
        return f"<Batch {self.id} {self.name!r} {self.status.value}>"
