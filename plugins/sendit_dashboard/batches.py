"""A batch's page, its zip download and its deletion (an image's page is in :mod:`.image_page`)."""
from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import quote

from pyramid.httpexceptions import HTTPSeeOther
from pyramid.response import Response
from pyramid.view import view_config
from sqlalchemy import select

from sendit_core.models import Batch, Image, IngestError
from sendit_core import batches
from sendit_core.batches import ACTIVE, is_busy

from sendit_core.listing import Column, Page, Sort
from .views import TEMPLATES, get_or_404, is_partial, live_fragment, panels, refresh_seconds
from .zipstream import ascii_name, safe_path, zip_batch

log = logging.getLogger(__name__)


IMAGE_COLUMNS = (
    Column("instance", (Image.instance_number, Image.id)),
    Column("series", (Image.series_instance_uid, Image.instance_number, Image.id)),
    Column("modality", (Image.modality, Image.id)),
    Column("uid", (Image.sop_instance_uid,)),  # unique in a batch
    Column("size", (Image.size, Image.id), descending_first=True),
)


@view_config(route_name="batch", renderer=TEMPLATES + "batch.jinja2")
def batch_page(request):
    live_fragment(request, "batch")
    batch = get_or_404(request, Batch, "batch")
    db = request.dbsession
    sort = Sort.from_request(request, IMAGE_COLUMNS, default="series")
    page = Page.from_request(request, batch.image_count)
    images = db.scalars(select(Image).where(Image.batch_id == batch.id).order_by(*sort.order_by())
                        .offset(page.offset).limit(page.size)).all()
    errors = db.scalars(select(IngestError).where(IngestError.batch_id == batch.id)
                        .order_by(IngestError.id).limit(page.size)).all() if batch.error_count else []
    return {"batch": batch, "images": images, "errors": errors, "sort": sort, "page": page,
            "active": batch.status in ACTIVE, "refresh": refresh_seconds(request),
            "panels": {} if is_partial(request) else panels(request, "sendit_batch_panels", batch=batch),
            "active_nav": "dashboard"}


@view_config(route_name="batch_download", request_method="GET")
def download(request):
    """The batch's stored files as one zip, streamed as it is written."""
    batch = get_or_404(request, Batch, "batch")
    folder = safe_path(batch.name, f"batch-{batch.id}").replace("/", "_")
    response = Response(content_type="application/zip", app_iter=zip_batch(
        request.registry["dbsession_factory"], Path(request.registry.settings["sendit.storage_dir"]),
        batch.id, folder))
    response.content_disposition = (f'attachment; filename="{ascii_name(folder)}.zip"; '
                                    f"filename*=UTF-8''{quote(folder)}.zip")
    response.cache_control = "no-store"
    return response


@view_config(route_name="batch_delete", request_method="GET", renderer=TEMPLATES + "delete.jinja2")
def delete_form(request):
    batch = get_or_404(request, Batch, "batch")
    return {"batch": batch, "busy": is_busy(batch), "active_nav": "dashboard"}


@view_config(route_name="batch_delete", request_method="POST")
def delete_batch(request):
    """Delete the batch's rows (images, header values, errors and jobs cascade)
    and, once that has committed, its stored files."""
    batch = get_or_404(request, Batch, "batch")
    try:
        batches.delete_batch(request.dbsession, request.tm.get(), batch,
                             settings=request.registry.settings, pm=request.registry["sendit.pm"])
    except batches.BatchBusy as exc:
        request.session.flash(str(exc), "error")
        return HTTPSeeOther(request.route_url("batch", id=batch.id))
    request.session.flash(f"Deleted batch “{batch.name}”: {batch.image_count:,} images, "
                          f"{batch.error_count:,} errors and the stored files.", "success")
    return HTTPSeeOther(request.route_url("home"))
