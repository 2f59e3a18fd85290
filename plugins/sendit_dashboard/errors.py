"""Every ingest error, newest first, filterable by batch and step."""
from __future__ import annotations

from dataclasses import dataclass

from pyramid.httpexceptions import HTTPBadRequest, HTTPNotFound
from pyramid.view import view_config
from sqlalchemy import func, select

from sendit_core.models import Batch, IngestError

from sendit_core.listing import Column, Page, Sort, url_with
from .views import TEMPLATES, live_fragment, refresh_seconds

#: the pipeline's steps; other values (from other sources) are accepted too
STEPS = ("read", "parse", "store")
#: batches offered in the filter's list (most recently changed first)
BATCH_CHOICES = 200

COLUMNS = (
    Column("time", (IngestError.id,), descending_first=True),
    Column("batch", (IngestError.batch_id, IngestError.id)),
    Column("file", (IngestError.path, IngestError.id)),
    Column("step", (IngestError.step, IngestError.id)),
)


@dataclass(frozen=True)
class Filters:
    batch: Batch | None
    step: str

    @classmethod
    def from_request(cls, request) -> "Filters":
        raw = request.GET.get("batch", "").strip()
        batch = None
        if raw:
            try:
                batch = request.dbsession.get(Batch, int(raw)) if 0 < int(raw) < 2**63 else None
            except ValueError:
                raise HTTPBadRequest(f"“{raw[:40]}” is not a batch number.") from None
            if batch is None:
                raise HTTPNotFound(f"There is no batch {raw}: it may have been deleted.")
        return cls(batch, request.GET.get("step", "").strip()[:32])

    def where(self) -> list:
        clauses = []
        if self.batch is not None:
            clauses.append(IngestError.batch_id == self.batch.id)
        if self.step:
            clauses.append(IngestError.step == self.step)
        return clauses


def count_errors(db, filters: Filters) -> int:
    """From the batches' counters unless a step is chosen."""
    if filters.step:
        return db.scalar(select(func.count()).select_from(IngestError).where(*filters.where()))
    if filters.batch is not None:
        return filters.batch.error_count
    return int(db.scalar(select(func.coalesce(func.sum(Batch.error_count), 0))))


def batch_choices(db, current: Batch | None) -> list[tuple[int, str]]:
    rows = db.execute(select(Batch.id, Batch.name).where(Batch.error_count > 0)
                      .order_by(Batch.updated_at.desc(), Batch.id.desc()).limit(BATCH_CHOICES)).all()
    choices = [(row.id, row.name) for row in rows]
    if current is not None and current.id not in dict(choices):
        choices.insert(0, (current.id, current.name))
    return choices


@view_config(route_name="errors", renderer=TEMPLATES + "errors.jinja2")
def errors_page(request):
    live_fragment(request, "errors")
    db = request.dbsession
    filters = Filters.from_request(request)
    sort = Sort.from_request(request, COLUMNS, default="time")
    page = Page.from_request(request, count_errors(db, filters))
    rows = db.execute(select(IngestError, Batch.name).join(Batch, Batch.id == IngestError.batch_id)
                      .where(*filters.where()).order_by(*sort.order_by())
                      .offset(page.offset).limit(page.size)).all()
    steps = list(STEPS) + ([filters.step] if filters.step and filters.step not in STEPS else [])
    return {"rows": rows, "filters": filters, "sort": sort, "page": page, "steps": steps,
            "batches": batch_choices(db, filters.batch), "refresh": refresh_seconds(request),
            "clear_url": url_with(request, batch=None, step=None, page=None), "active_nav": "errors"}
