"""The upload page, its form posts, the import's progress, and the buttons.

``POST`` goes to :func:`sendit_core.uploads.receive_upload`. The page's script
asks for JSON (``Accept: application/json``) and sends the CSRF token in the
``X-CSRF-Token`` header; the plain form (no JavaScript) sends it as the first
field and gets a redirect to the batch page, or the page again with the error.
"""
from __future__ import annotations

import os

from markupsafe import Markup
from pyramid.httpexceptions import HTTPNotFound, HTTPSeeOther
from pyramid.renderers import render, render_to_response
from pyramid.view import view_config

from sendit_core import Panel
from sendit_core.models import Batch, BatchStatus
from sendit_core.uploads import MB, Limits, UploadError, failed_uploads, receive_upload

TEMPLATES = "sendit_upload:templates/"
ACTIVE = (BatchStatus.QUEUED, BatchStatus.PROCESSING)
#: the batch panel counts kept files up to this many
MAX_COUNTED = 1000


def includeme(config):
    config.add_static_view("static-upload", "sendit_upload:static", cache_max_age=3600, permission="view")
    config.add_route("upload", "/upload")
    config.add_route("upload_batch", "/batches/{id}/upload")
    config.add_route("upload_progress", "/batches/{id}/upload/progress")
    config.scan("sendit_upload.views")


# -- helpers -------------------------------------------------------------------------


def wants_json(request) -> bool:
    """The page's script asks for JSON; browsers' forms (and ``*/*``) get HTML."""
    offers = request.accept.acceptable_offers(["text/html", "application/json"])
    return bool(offers) and offers[0][0] == "application/json"


def json_error(request, status: int, message: str):
    response = request.response
    response.status = status
    response.content_type = "application/json"
    response.json_body = {"status": status, "error": response.status.partition(" ")[2],
                          "message": message}
    response.cache_control = "no-store"
    return response


def find_batch(request) -> Batch | None:
    raw = request.matchdict["id"]
    try:
        ident = int(raw)
    except ValueError:
        return None
    return request.dbsession.get(Batch, ident) if 0 < ident < 2**63 else None


def missing_batch(request):
    message = (f"There is no batch {request.matchdict['id']} (it may have been deleted); "
               f"nothing was uploaded.")
    if wants_json(request):
        return json_error(request, 404, message)
    raise HTTPNotFound(message)


def page_values(request, batch: Batch | None, error: str = "", name: str = "") -> dict:
    limits = Limits.of(request.registry.settings)
    return {
        "batch": batch, "error": error, "name": name, "active_nav": "dashboard",
        "max_file_mb": limits.max_file // MB, "max_request_mb": limits.max_request // MB,
        "max_files": limits.max_files,
        "action": request.route_path("upload_batch", id=batch.id) if batch else request.route_path("upload"),
        "back": request.route_path("batch", id=batch.id) if batch else request.route_path("home"),
    }


def upload_button(request, batch: Batch | None) -> Panel:
    html = render(TEMPLATES + "button.jinja2", {"batch": batch}, request=request)
    return Panel("upload", Markup(html), title="Upload", order=10, slot="actions")


def kept_files_panel(request, batch: Batch) -> Panel | None:
    """Uploaded files that failed are kept until the batch is deleted: say where."""
    if not batch.error_count:
        return None
    folder = failed_uploads(request.registry.settings, batch)
    if folder is None:
        return None
    count = 0
    for _, _, files in os.walk(folder):
        count += len(files)
        if count >= MAX_COUNTED:
            break
    if not count:
        return None
    html = render(TEMPLATES + "kept.jinja2", {"folder": folder, "count": count,
                                              "more": count >= MAX_COUNTED}, request=request)
    return Panel("upload-kept", Markup(html), title="Uploaded files that failed", order=90, slot="side")


# -- pages ---------------------------------------------------------------------------


@view_config(route_name="upload", request_method="GET", renderer=TEMPLATES + "upload.jinja2")
def upload_page(request):
    return page_values(request, None)


@view_config(route_name="upload_batch", request_method="GET", renderer=TEMPLATES + "upload.jinja2")
def upload_batch_page(request):
    batch = find_batch(request)
    if batch is None:
        raise HTTPNotFound(f"There is no batch {request.matchdict['id']}.")
    return page_values(request, batch)


# -- receiving: CSRF is checked by receive_upload as the body streams in --------------


@view_config(route_name="upload", request_method="POST", require_csrf=False)
def upload_new(request):
    return receive(request, None)


@view_config(route_name="upload_batch", request_method="POST", require_csrf=False)
def upload_into_batch(request):
    batch = find_batch(request)
    if batch is None:
        return missing_batch(request)
    return receive(request, batch)


def receive(request, batch: Batch | None):
    try:
        result = receive_upload(request, batch)
    except UploadError as exc:
        if wants_json(request):
            return json_error(request, exc.status, str(exc))
        response = render_to_response(TEMPLATES + "upload.jinja2", page_values(request, batch, str(exc)),
                                      request=request)
        response.status = exc.status
        return response
    batch = result.batch
    count, size = len(result.files), result.bytes
    if wants_json(request):
        response = request.response
        response.status = 201
        response.content_type = "application/json"
        response.json_body = {
            "batch": {"id": batch.id, "name": batch.name, "url": request.route_url("batch", id=batch.id)},
            "created": result.created, "job_ids": result.job_ids, "file_count": count, "bytes": size,
            "upload_url": request.route_url("upload_batch", id=batch.id),
            "progress_url": request.route_url("upload_progress", id=batch.id),
        }
        return response
    request.session.flash(f"Uploaded {count:,} file{'s' if count != 1 else ''} "
                          f"({_size(size)}) to “{batch.name}”; they are being imported.", "success")
    return HTTPSeeOther(request.route_url("batch", id=batch.id))


def _size(size: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:,} {unit}" if unit == "bytes" else f"{size:,.1f} {unit}"
        size /= 1024
    return ""  # pragma: no cover


@view_config(route_name="upload_progress", request_method="GET", renderer="json")
def progress(request):
    """What the worker has done with a batch so far (the page polls this)."""
    batch = find_batch(request)
    if batch is None:
        return json_error(request, 404, f"There is no batch {request.matchdict['id']}.")
    request.response.cache_control = "no-store"
    done = batch.pending_count <= 0 and batch.status not in ACTIVE
    return {"id": batch.id, "name": batch.name, "status": batch.status.value,
            "images": batch.image_count, "errors": batch.error_count,
            "pending": max(0, batch.pending_count), "done": done,
            "url": request.route_url("batch", id=batch.id)}
