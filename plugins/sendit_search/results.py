"""Running a search: counts, a sorted page of images, groups, the rows an export writes.

Shared by the page (:mod:`.views`), its CSV/JSON export and ``sendit query``
(:mod:`.commands`), so all three answer a query with the same images.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session

from sendit_core.models import Batch, HeaderField, HeaderValue, Image
from sendit_core.query import quote_value

#: Header fields shown beside each image (tag path -> column name).
HEADER_COLUMNS = {
    "00100010": "PatientName",
    "00100020": "PatientID",
    "00080020": "StudyDate",
    "0008103E": "SeriesDescription",
    "00200011": "SeriesNumber",
}
GROUPS = ("image", "series", "study", "batch")


def _header_value(tag_path: str, numeric: bool = False):
    """The first value of a top-level field of the image, as a correlated subquery."""
    hv = HeaderValue
    column = hv.value_num if numeric else hv.value_text
    return (select(column)
            .where(hv.image_id == Image.id,
                   hv.field_id == select(HeaderField.id).where(HeaderField.tag_path == tag_path)
                   .scalar_subquery())
            .order_by(hv.item, hv.position).limit(1).scalar_subquery())


#: Sort keys of the image list: the columns they order by (ties by image id).
IMAGE_SORTS: dict[str, tuple] = {
    "imported": (Image.id,),
    "batch": (Image.batch_id, Image.id),
    "patient": (_header_value("00100010"), Image.id),
    "date": (_header_value("00080020", numeric=True), Image.id),
    "modality": (Image.modality, Image.id),
    "series": (Image.series_instance_uid, Image.instance_number, Image.id),
    "instance": (Image.instance_number, Image.id),
}
#: The sort keys whose first click is descending.
DESCENDING_FIRST = {"imported", "date", "count"}


@dataclass
class Summary:
    images: int
    series: int
    studies: int
    batches: int


def summary(db: Session, cond) -> Summary:
    """How many images match, and in how many series, studies and batches."""
    row = db.execute(select(func.count(), func.count(distinct(Image.series_instance_uid)),
                            func.count(distinct(Image.study_instance_uid)),
                            func.count(distinct(Image.batch_id))).where(cond)).one()
    return Summary(*row)


def count(db: Session, cond) -> int:
    return db.execute(select(func.count()).select_from(Image).where(cond)).scalar_one()


@dataclass
class ImageRow:
    id: int
    batch_id: int
    batch_name: str
    sop_instance_uid: str
    study_instance_uid: str | None
    series_instance_uid: str | None
    modality: str | None
    instance_number: int | None
    stored_path: str
    headers: dict[str, str | None] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = {"id": self.id, "batch_id": self.batch_id, "batch": self.batch_name,
                "sop_instance_uid": self.sop_instance_uid,
                "study_instance_uid": self.study_instance_uid,
                "series_instance_uid": self.series_instance_uid,
                "modality": self.modality, "instance_number": self.instance_number}
        data.update({name: self.headers.get(name) for name in HEADER_COLUMNS.values()})
        data["stored_path"] = self.stored_path
        return data


#: The fields of :meth:`ImageRow.as_dict`, in order (CSV header, table columns).
ROW_FIELDS = ("id", "batch_id", "batch", "sop_instance_uid", "study_instance_uid",
              "series_instance_uid", "modality", "instance_number", *HEADER_COLUMNS.values(),
              "stored_path")


def _order(sort: str, descending: bool) -> list:
    exprs = IMAGE_SORTS.get(sort, IMAGE_SORTS["imported"])
    return [e.desc() if descending else e.asc() for e in exprs]


def image_rows(db: Session, cond, sort: str = "imported", descending: bool = False,
               offset: int = 0, limit: int | None = 50) -> list[ImageRow]:
    """One page of matching images with their batch and the :data:`HEADER_COLUMNS`."""
    stmt = (select(Image, Batch.name).join(Batch, Batch.id == Image.batch_id).where(cond)
            .order_by(*_order(sort, descending)).offset(offset))
    if limit is not None:
        stmt = stmt.limit(limit)
    rows = [_row(image, name) for image, name in db.execute(stmt)]
    _add_headers(db, rows)
    return rows


def _row(image: Image, batch_name: str) -> ImageRow:
    return ImageRow(image.id, image.batch_id, batch_name, image.sop_instance_uid,
                    image.study_instance_uid, image.series_instance_uid, image.modality,
                    image.instance_number, image.stored_path)


def _add_headers(db: Session, rows: list[ImageRow]) -> None:
    """Fill each row's :data:`HEADER_COLUMNS` (one query, a primary key seek per image)."""
    if not rows:
        return
    by_id = {row.id: row for row in rows}
    hv = HeaderValue
    found = db.execute(
        select(hv.image_id, HeaderField.tag_path, hv.value_text)
        .join(HeaderField, HeaderField.id == hv.field_id)
        .where(hv.image_id.in_(list(by_id)), HeaderField.tag_path.in_(list(HEADER_COLUMNS)),
               hv.item == "")
        .order_by(hv.image_id, hv.position.desc()))
    for image_id, tag_path, value in found:  # position 0 comes last: it wins
        by_id[image_id].headers[HEADER_COLUMNS[tag_path]] = value


def iter_rows(db: Session, cond, sort: str = "imported", descending: bool = False,
              limit: int | None = None, chunk: int = 1000) -> Iterator[ImageRow]:
    """Every matching image (or the first ``limit``), fetched ``chunk`` at a time
    by keyset on the image id (an export never holds the whole result)."""
    if sort != "imported":
        offset = 0
        while limit is None or offset < limit:
            size = chunk if limit is None else min(chunk, limit - offset)
            rows = image_rows(db, cond, sort, descending, offset, size)
            yield from rows
            if len(rows) < size:
                return
            offset += size
        return
    last = None
    sent = 0
    while limit is None or sent < limit:
        size = chunk if limit is None else min(chunk, limit - sent)
        stmt = (select(Image, Batch.name).join(Batch, Batch.id == Image.batch_id).where(cond)
                .order_by(Image.id.desc() if descending else Image.id).limit(size))
        if last is not None:
            stmt = stmt.where(Image.id < last if descending else Image.id > last)
        rows = [_row(image, name) for image, name in db.execute(stmt)]
        _add_headers(db, rows)
        yield from rows
        sent += len(rows)
        if len(rows) < size:
            return
        last = rows[-1].id


# -- groups -----------------------------------------------------------------------


@dataclass
class Group:
    """One series, study or batch of the matching images."""

    kind: str
    key: Any
    images: int
    first_image: int
    #: series count (studies), modality (series), name (batches) ...
    details: dict[str, Any] = field(default_factory=dict)

    def query(self, q: str) -> str:
        """The query that narrows ``q`` to this group."""
        if self.kind == "batch":
            narrow = f"batch:{self.key}"
        else:
            field_ = "SeriesInstanceUID" if self.kind == "series" else "StudyInstanceUID"
            narrow = f"{field_}={quote_value(self.key)}" if self.key else f"-has:{field_}"
        return f"({q}) {narrow}" if q.strip() else narrow


GROUP_SORTS = ("count", "key")


def group_count(db: Session, cond, kind: str) -> int:
    column = _group_column(kind)
    return db.execute(select(func.count(distinct(column))).where(cond)).scalar_one() + (
        1 if kind != "batch" and db.execute(
            select(Image.id).where(cond, column.is_(None)).limit(1)).first() else 0)


def _group_column(kind: str):
    return {"series": Image.series_instance_uid, "study": Image.study_instance_uid,
            "batch": Image.batch_id}[kind]


def groups(db: Session, cond, kind: str, sort: str = "count", descending: bool = True,
           offset: int = 0, limit: int = 50) -> list[Group]:
    """A page of the groups of matching images, with their image counts."""
    column = _group_column(kind)
    images = func.count().label("images")
    first = func.min(Image.id).label("first")
    extra = []
    if kind == "series":
        extra = [func.min(Image.modality).label("modality")]
    elif kind == "study":
        extra = [func.count(distinct(Image.series_instance_uid)).label("series")]
    order = images if sort == "count" else column
    stmt = (select(column.label("key"), images, first, *extra).where(cond).group_by(column)
            .order_by(order.desc() if descending else order.asc(), column)
            .offset(offset).limit(limit))
    result = [Group(kind, row.key, row.images, row.first,
                    {name: getattr(row, name) for name in ("modality", "series") if name in row._fields})
              for row in db.execute(stmt)]
    if not result:
        return result
    if kind == "batch":
        names = dict(db.execute(select(Batch.id, Batch.name)
                                .where(Batch.id.in_([g.key for g in result]))).all())
        for group in result:
            group.details["name"] = names.get(group.key, f"batch {group.key}")
    firsts = image_rows(db, Image.id.in_([g.first_image for g in result]), limit=None)
    by_id = {row.id: row for row in firsts}
    for group in result:
        group.details["example"] = by_id.get(group.first_image)
    return result
