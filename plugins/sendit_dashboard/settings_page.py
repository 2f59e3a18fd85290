"""The settings page: configuration, plugins, sources, services and versions."""
from __future__ import annotations

import functools
import logging
import sqlite3
import sys
from importlib import metadata

from pyramid.view import view_config
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from sendit_core.ingest import ingest_sources
from sendit_core.models import Batch, Job, JobStatus
from sendit_core.plugins import plugin_info
from sendit_core.settings import masked_settings

from .views import TEMPLATES, live_fragment, panels, refresh_seconds

log = logging.getLogger(__name__)

LIBRARIES = ("sendit", "pyramid", "pyramid_jinja2", "pluggy", "pydicom", "SQLAlchemy", "alembic",
             "kombu", "waitress", "gunicorn", "watchdog", "cornice", "numpy", "psycopg")


@functools.cache
def versions() -> dict[str, str]:
    """Installed versions (looked up once: they cannot change under a running server)."""
    found = {"Python": sys.version.split()[0], "SQLite library": sqlite3.sqlite_version}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def plugins_of(registry) -> list:
    """The loaded plugins, described once per app (they are fixed at start-up)."""
    if "sendit_dashboard.plugins" not in registry:
        registry["sendit_dashboard.plugins"] = plugin_info(registry["sendit.pm"])
    return registry["sendit_dashboard.plugins"]


def source_rows(pm, settings) -> list[tuple]:
    """Each ingest source with its status; a failing status check is shown, not raised."""
    rows = []
    for source in ingest_sources(pm, settings):
        try:
            rows.append((source, source.status(settings), None))
        except Exception as exc:  # noqa: BLE001 - a plugin's bug must not break the page
            log.exception("status of ingest source %s failed", source.name)
            rows.append((source, None, f"status unavailable: {exc}"))
    return rows


def database_info(db, shown: dict[str, str]) -> dict[str, str]:
    try:
        revision = db.scalar(text("SELECT version_num FROM alembic_version")) or "none"
    except SQLAlchemyError:
        revision = "unknown (not created with sendit initdb)"
    dialect = db.connection().dialect  # connected now, so it knows the server's version
    info = {"Engine": f"{dialect.name} ({dialect.driver})", "URL": shown.get("sqlalchemy.url", "")}
    if dialect.server_version_info:
        info["Server version"] = ".".join(str(part) for part in dialect.server_version_info)
    info["Schema revision"] = revision
    return info


def queue_info(request, shown: dict[str, str]) -> dict[str, str]:
    settings = request.registry.settings
    jobs = dict(request.dbsession.execute(select(Job.status, func.count()).group_by(Job.status)).all())
    mode = settings["sendit.worker"]
    worker = ("a thread in the web process" if mode == "thread" else "separate “sendit worker” processes")
    if mode == "thread" and request.registry.get("sendit.worker") is None:
        worker += " (not running in this process)"
    return {
        "Broker": shown.get("sendit.broker_url", ""),
        "Queue": settings["sendit.broker.queue"],
        "Workers": worker,
        "Jobs waiting": f"{jobs.get(JobStatus.QUEUED, 0):,}",
        "Jobs in progress": f"{jobs.get(JobStatus.CLAIMED, 0):,}",
    }


def storage_info(request) -> dict[str, str]:
    from .formatting import filesize

    settings = request.registry.settings
    used = request.dbsession.scalar(select(func.coalesce(func.sum(Batch.total_bytes), 0)))
    return {"Stored files": str(settings["sendit.storage_dir"]), "Space used": filesize(used),
            "Watched data folder": str(settings["sendit.data_dir"]),
            "Var folder": str(settings["sendit.var_dir"])}


@view_config(route_name="settings", renderer=TEMPLATES + "settings.jinja2")
def settings_page(request):
    live_fragment(request, "settings")
    settings = request.registry.settings
    pm = request.registry["sendit.pm"]
    shown = masked_settings(settings)
    specs = settings.get("sendit._specs", {})
    return {
        "config": [(key, value, specs[key].help) for key, value in shown.items() if key in specs],
        "other_config": [(key, value) for key, value in shown.items() if key not in specs],
        "plugins": plugins_of(request.registry),
        "sources": source_rows(pm, settings),
        "services": {"Database": database_info(request.dbsession, shown),
                     "Ingest queue": queue_info(request, shown),
                     "Storage": storage_info(request)},
        "versions": dict(versions()),
        "panels": panels(request, "sendit_settings_panels"),
        "refresh": refresh_seconds(request),
        "active_nav": "settings",
    }
