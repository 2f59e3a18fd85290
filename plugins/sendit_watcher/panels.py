"""The watcher's panel on the dashboard and the settings page."""
from __future__ import annotations

from datetime import timezone

from markupsafe import Markup
from pyramid.renderers import render

from sendit_core import Panel

from .daemon import watcher_status

TEMPLATE = "sendit_watcher:templates/panel.jinja2"


def watcher_panel(request, *, full: bool, slot: str) -> Panel:
    """Active or inactive, since when, the watched folder (and, ``full``, its files)."""
    settings = request.registry.settings
    status = watcher_status(settings)
    since = status.since.astimezone(timezone.utc) if status.since else None
    values = {
        "status": status, "full": full, "data_dir": settings["sendit.data_dir"],
        "stale": status.details.get("Stale pid file", ""),
        "since_iso": since.strftime("%Y-%m-%dT%H:%M:%SZ") if since else "",
        "since_text": since.strftime("%Y-%m-%d %H:%M") if since else "",
        "settle": status.details.get("Settle time", ""),
    }
    html = render(TEMPLATE, values, request=request)
    return Panel("watcher", Markup(html), title="Watcher", order=20, slot=slot)
