"""Dashboard, batch, image and settings pages."""
from __future__ import annotations

import sys
from importlib import metadata

from pyramid.httpexceptions import HTTPNotFound
from pyramid.view import view_config
from sqlalchemy import func, select

from sendit_core.ingest import ingest_sources
from sendit_core.models import Batch, HeaderField, HeaderValue, Image, IngestError
from sendit_core.plugins import plugin_info
from sendit_core.settings import masked_settings
from sendit_core.ui import collect

LIBRARIES = ("pyramid", "pluggy", "pydicom", "SQLAlchemy", "kombu", "waitress", "watchdog", "cornice")


def _panels(request, hook_name, **kwargs):
    pm = request.registry["sendit.pm"]
    return collect(getattr(pm.hook, hook_name)(request=request, **kwargs))


def _get_or_404(request, model, key: str, what: str):
    try:
        ident = int(request.matchdict[key])
    except ValueError:
        raise HTTPNotFound(f"{request.matchdict[key]!r} is not a {what} number.") from None
    obj = request.dbsession.get(model, ident)
    if obj is None:
        raise HTTPNotFound(f"There is no {what} {ident}.")
    return obj


@view_config(route_name="home", renderer="sendit_dashboard:templates/dashboard.jinja2")
def dashboard(request):
    db = request.dbsession
    panels = _panels(request, "sendit_dashboard_panels")
    batches = db.scalars(select(Batch).order_by(Batch.updated_at.desc(), Batch.id.desc())
                         .limit(request.registry.settings["sendit.page_size"])).all()
    return {
        "batches": batches,
        "totals": {
            "batches": db.scalar(select(func.count()).select_from(Batch)),
            "images": db.scalar(select(func.count()).select_from(Image)),
            "errors": db.scalar(select(func.count()).select_from(IngestError)),
        },
        "actions": [p for p in panels if p.slot == "actions"],
        "panels": [p for p in panels if p.slot != "actions"],
        "active_nav": "dashboard",
    }


@view_config(route_name="batch", renderer="sendit_dashboard:templates/batch.jinja2")
def batch_page(request):
    batch = _get_or_404(request, Batch, "id", "batch")
    db = request.dbsession
    images = db.scalars(select(Image).where(Image.batch_id == batch.id)
                        .order_by(Image.series_instance_uid, Image.instance_number, Image.id)
                        .limit(request.registry.settings["sendit.page_size"])).all()
    errors = db.scalars(select(IngestError).where(IngestError.batch_id == batch.id)
                        .order_by(IngestError.id)).all()
    panels = _panels(request, "sendit_batch_panels", batch=batch)
    return {"batch": batch, "images": images, "errors": errors,
            "actions": [p for p in panels if p.slot == "actions"],
            "panels": [p for p in panels if p.slot != "actions"]}


@view_config(route_name="image", renderer="sendit_dashboard:templates/image.jinja2")
def image_page(request):
    image = _get_or_404(request, Image, "id", "image")
    rows = request.dbsession.execute(
        select(HeaderField.tag_path, HeaderField.keyword_path, HeaderField.vr, HeaderField.depth,
               HeaderValue.item, HeaderValue.position, HeaderValue.value_text)
        .join(HeaderValue, HeaderValue.field_id == HeaderField.id)
        .where(HeaderValue.image_id == image.id)
        .order_by(HeaderValue.item, HeaderField.tag_path, HeaderValue.position)
    ).all()
    batch = request.dbsession.get(Batch, image.batch_id)
    return {"image": image, "batch": batch, "rows": rows,
            "panels": _panels(request, "sendit_image_panels", image=image)}


@view_config(route_name="settings", renderer="sendit_dashboard:templates/settings.jinja2")
def settings_page(request):
    settings = request.registry.settings
    pm = request.registry["sendit.pm"]
    sources = [(source, source.status(settings)) for source in ingest_sources(pm, settings)]
    versions = {"python": sys.version.split()[0]}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "config": masked_settings(settings),
        "plugins": plugin_info(pm),
        "sources": sources,
        "versions": versions,
        "panels": _panels(request, "sendit_settings_panels"),
        "active_nav": "settings",
    }


def includeme(config):
    config.add_route("batch", "/batches/{id}")
    config.add_route("image", "/images/{id}")
    config.add_route("settings", "/settings")
    config.scan(".views")
