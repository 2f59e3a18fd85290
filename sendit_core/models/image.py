from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .meta import Base, utcnow


class Image(Base):
    """One stored DICOM file of a batch; its header fields live in HeaderValue."""

    __tablename__ = "image"

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batch.id", ondelete="CASCADE"))
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    sop_class_uid: Mapped[str | None] = mapped_column(String(64))
    study_instance_uid: Mapped[str | None] = mapped_column(String(64))
    series_instance_uid: Mapped[str | None] = mapped_column(String(64))
    modality: Mapped[str | None] = mapped_column(String(16))
    instance_number: Mapped[int | None] = mapped_column(Integer)
    transfer_syntax_uid: Mapped[str | None] = mapped_column(String(64))
    #: path of the stored file, relative to ``sendit.storage_dir``
    stored_path: Mapped[str] = mapped_column(String(1024))
    #: the file name as it arrived (for people; never used as a path)
    original_name: Mapped[str | None] = mapped_column(String(1024))
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    batch = relationship("Batch", back_populates="images", lazy="raise_on_sql")

    __table_args__ = (
        UniqueConstraint("batch_id", "sop_instance_uid", name="uq_image_batch_sop"),
        Index("ix_image_series", "series_instance_uid", "instance_number"),
        Index("ix_image_study", "study_instance_uid"),
        Index("ix_image_sop", "sop_instance_uid"),
        Index("ix_image_modality", "modality"),
    )

    def __repr__(self) -> str:
        return f"<Image {self.id} {self.sop_instance_uid}>"
