"""Ingest jobs: the database, not the broker, is the source of truth for work.

A source hands files over with :func:`sendit_core.pipeline.submit`, which
records a :class:`Job` per chunk of files and a :class:`JobFile` per file; the
broker message only wakes a worker. A worker claims a job, processes its
pending files in chunks (each chunk one transaction that also marks the files
done), and a recovery sweep re-queues jobs whose worker died.
"""
from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    BigInteger, Boolean, DateTime, Enum, ForeignKey, Index, Integer, String, Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from .meta import Base, utcnow


class JobStatus(str, enum.Enum):
    QUEUED = "QUEUED"    #: waiting for a worker
    CLAIMED = "CLAIMED"  #: a worker is processing it
    DONE = "DONE"        #: every file has an outcome


class FileOutcome(str, enum.Enum):
    PENDING = "PENDING"      #: not processed yet
    IMPORTED = "IMPORTED"    #: stored as a new image
    DUPLICATE = "DUPLICATE"  #: an identical file with the same UID was already in the batch
    ERROR = "ERROR"          #: an error row was recorded


class Job(Base):
    __tablename__ = "job"

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batch.id", ondelete="CASCADE"))
    status: Mapped[JobStatus] = mapped_column(
        Enum(JobStatus, name="job_status", native_enum=False, length=16), default=JobStatus.QUEUED
    )
    source: Mapped[str] = mapped_column(String(64), default="cli")
    #: delete each source file once its outcome is committed (never on error)
    delete_source: Mapped[bool] = mapped_column(Boolean, default=False)
    file_count: Mapped[int] = mapped_column(Integer, default=0)
    #: "host:pid:token" of the worker that claimed it
    claimed_by: Mapped[str | None] = mapped_column(String(255))
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_job_status", "status", "heartbeat_at"),
                      Index("ix_job_batch", "batch_id"))


class JobFile(Base):
    __tablename__ = "job_file"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"))
    #: absolute path of the file to import
    path: Mapped[str] = mapped_column(Text)
    #: the name people know it by (upload name, path relative to the folder)
    name: Mapped[str] = mapped_column(Text)
    outcome: Mapped[FileOutcome] = mapped_column(
        Enum(FileOutcome, name="file_outcome", native_enum=False, length=16),
        default=FileOutcome.PENDING,
    )
    image_id: Mapped[int | None] = mapped_column(BigInteger)
    #: the source file was removed after a successful import
    source_deleted: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (Index("ix_job_file_job_outcome", "job_id", "outcome", "id"),)
