"""The dashboard: totals, the batches table (sorted, filtered, paged) and panels."""
from __future__ import annotations

from dataclasses import dataclass

from pyramid.httpexceptions import HTTPBadRequest
from pyramid.view import view_config
from sqlalchemy import case, func, select

from sendit_core.models import Batch, BatchStatus

from sendit_core.listing import Column, Page, Sort, url_with
from .views import TEMPLATES, live_fragment, panels, refresh_seconds

ACTIVE = (BatchStatus.QUEUED, BatchStatus.PROCESSING)

#: Sortable columns; the last expression breaks ties so pages never overlap.
COLUMNS = (
    Column("name", (Batch.name, Batch.id)),
    Column("status", (Batch.status, Batch.updated_at, Batch.id)),
    Column("source", (Batch.source, Batch.id)),
    Column("images", (Batch.image_count, Batch.id), descending_first=True),
    Column("errors", (Batch.error_count, Batch.id), descending_first=True),
    Column("added", (Batch.id,), descending_first=True),  # ids grow with arrival
    Column("modified", (Batch.updated_at, Batch.id), descending_first=True),
)


@dataclass(frozen=True)
class Filters:
    """``?status=DONE&q=study``: a status and part of the name."""

    status: BatchStatus | None
    name: str

    @classmethod
    def from_request(cls, request) -> "Filters":
        raw = request.GET.get("status", "").strip().upper()
        try:
            status = BatchStatus(raw) if raw and raw != "ALL" else None
        except ValueError:
            choices = ", ".join(s.value for s in BatchStatus)
            raise HTTPBadRequest(f"There is no batch status “{raw[:40]}”; choose one of {choices}.") from None
        return cls(status, request.GET.get("q", "").strip()[:255])

    def name_clause(self) -> list:
        return [Batch.name.icontains(self.name, autoescape=True)] if self.name else []

    @property
    def active(self) -> bool:
        return bool(self.status or self.name)


def totals(db) -> dict[str, int]:
    """Every batch, image, error and stored byte, from the batches' counters."""
    row = db.execute(select(
        func.count(),
        func.coalesce(func.sum(Batch.image_count), 0),
        func.coalesce(func.sum(Batch.error_count), 0),
        func.coalesce(func.sum(Batch.total_bytes), 0),
        func.coalesce(func.sum(case((Batch.status.in_(ACTIVE), 1), else_=0)), 0),
        func.coalesce(func.sum(Batch.pending_count), 0),
    )).one()
    keys = ("batches", "images", "errors", "bytes", "active", "pending")
    return dict(zip(keys, (int(v) for v in row)))


def status_counts(db, filters: Filters) -> dict[BatchStatus, int]:
    """Batches per status among those the name filter keeps (one indexed GROUP BY)."""
    rows = db.execute(select(Batch.status, func.count()).where(*filters.name_clause())
                      .group_by(Batch.status)).all()
    counts = {status: 0 for status in BatchStatus}
    counts.update({status: count for status, count in rows})
    return counts


@view_config(route_name="home", renderer=TEMPLATES + "dashboard.jinja2")
def dashboard(request):
    live_fragment(request, "dashboard")
    db = request.dbsession
    filters = Filters.from_request(request)
    counts = status_counts(db, filters)
    matching = counts[filters.status] if filters.status else sum(counts.values())
    sort = Sort.from_request(request, COLUMNS, default="modified")
    page = Page.from_request(request, matching)
    where = [*filters.name_clause(), *([Batch.status == filters.status] if filters.status else [])]
    batches = db.scalars(select(Batch).where(*where).order_by(*sort.order_by())
                         .offset(page.offset).limit(page.size)).all()
    return {
        "batches": batches, "totals": totals(db), "counts": counts, "filters": filters,
        "sort": sort, "page": page, "panels": panels(request, "sendit_dashboard_panels"),
        "status_url": lambda status: url_with(request, status=status, page=None),
        "clear_url": url_with(request, status=None, q=None, page=None),
        "refresh": refresh_seconds(request), "active_nav": "dashboard",
    }
