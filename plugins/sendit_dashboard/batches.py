"""A batch's page, its zip download and its deletion; an image's page."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from urllib.parse import quote

from pyramid.httpexceptions import HTTPSeeOther
from pyramid.response import Response
from pyramid.view import view_config
from sqlalchemy import delete, not_, select

from sendit_core.models import Batch, BatchStatus, HeaderField, HeaderValue, Image, IngestError
from sendit_core.storage import remove_stored

from .listing import Column, Page, Sort
from .views import TEMPLATES, get_or_404, is_partial, live_fragment, panels, refresh_seconds
from .zipstream import ascii_name, safe_path, zip_batch

log = logging.getLogger(__name__)

ACTIVE = (BatchStatus.QUEUED, BatchStatus.PROCESSING)

IMAGE_COLUMNS = (
    Column("instance", (Image.instance_number, Image.id)),
    Column("series", (Image.series_instance_uid, Image.instance_number, Image.id)),
    Column("modality", (Image.modality, Image.id)),
    Column("uid", (Image.sop_instance_uid,)),  # unique in a batch
    Column("size", (Image.size, Image.id), descending_first=True),
)


def is_busy(batch: Batch) -> bool:
    """Files are still waiting for a worker (or being imported)."""
    return batch.status in ACTIVE and batch.pending_count > 0


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
    if is_busy(batch):
        request.session.flash(f"Batch “{batch.name}” is still being imported "
                              f"({batch.pending_count:,} files to go); delete it once it has finished.",
                              "error")
        return HTTPSeeOther(request.route_url("batch", id=batch.id))
    db = request.dbsession
    storage = Path(request.registry.settings["sendit.storage_dir"])
    strays = db.scalars(select(Image.stored_path).where(
        Image.batch_id == batch.id, not_(Image.stored_path.startswith(f"{batch.id}/")))).all()
    db.execute(delete(Batch).where(Batch.id == batch.id))
    request.tm.get().addAfterCommitHook(_remove_files, args=(storage, batch.id, strays))
    request.session.flash(f"Deleted batch “{batch.name}”: {batch.image_count:,} images, "
                          f"{batch.error_count:,} errors and the stored files.", "success")
    return HTTPSeeOther(request.route_url("home"))


def _remove_files(committed: bool, storage: Path, batch_id: int, strays: list[str]) -> None:
    """After the commit: the batch's storage folder, and any file stored elsewhere."""
    if not committed:
        return
    try:
        shutil.rmtree(storage / str(int(batch_id)), ignore_errors=False)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("batch %s deleted, but its folder could not be removed: %s", batch_id, exc)
    for relpath in strays:
        try:
            remove_stored(storage, relpath)
        except OSError as exc:
            log.warning("batch %s deleted, but %s could not be removed: %s", batch_id, relpath, exc)


@view_config(route_name="image", renderer=TEMPLATES + "image.jinja2")
def image_page(request):
    image = get_or_404(request, Image, "image")
    rows = request.dbsession.execute(
        select(HeaderField.tag_path, HeaderField.keyword_path, HeaderField.vr, HeaderField.depth,
               HeaderValue.item, HeaderValue.position, HeaderValue.value_text)
        .join(HeaderValue, HeaderValue.field_id == HeaderField.id)
        .where(HeaderValue.image_id == image.id)
        .order_by(HeaderValue.item, HeaderField.tag_path, HeaderValue.position)
    ).all()
    batch = request.dbsession.get(Batch, image.batch_id)
    return {"image": image, "batch": batch, "rows": rows, "active_nav": "dashboard",
            "panels": panels(request, "sendit_image_panels", image=image)}
