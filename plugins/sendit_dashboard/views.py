"""Routes, assets and what every page of the plugin shares.

The pages live in their own modules (:mod:`.dashboard`, :mod:`.batches`,
:mod:`.errors`, :mod:`.settings_page`). A page that refreshes in place renders
its whole template normally and only its live fragment for ``?partial=1``,
which is what ``static/live.js`` fetches.
"""
from __future__ import annotations

from pyramid.httpexceptions import HTTPNotFound

from sendit_core.ui import collect

from .formatting import FILTERS

TEMPLATES = "sendit_dashboard:templates/"


def panels(request, hook_name: str, **kwargs) -> dict[str, list]:
    """A panel hook's results by slot: ``actions``, ``side`` and ``main``."""
    pm = request.registry["sendit.pm"]
    slots: dict[str, list] = {"actions": [], "side": [], "main": []}
    for panel in collect(getattr(pm.hook, hook_name)(request=request, **kwargs)):
        slots.get(panel.slot, slots["main"]).append(panel)
    return slots


def get_or_404(request, model, what: str, key: str = "id"):
    """The row whose id is in the URL, or the 404 page."""
    raw = request.matchdict[key]
    try:
        ident = int(raw)
    except ValueError:
        raise HTTPNotFound(f"{raw!r} is not a {what} number.") from None
    obj = request.dbsession.get(model, ident) if 0 < ident < 2**63 else None
    if obj is None:
        raise HTTPNotFound(f"There is no {what} {ident}.")
    return obj


def is_partial(request) -> bool:
    return request.GET.get("partial") == "1"


def live_fragment(request, name: str) -> None:
    """For ``?partial=1`` render only ``templates/<name>_live.jinja2``, uncached."""
    if is_partial(request):
        request.override_renderer = f"{TEMPLATES}{name}_live.jinja2"
        request.response.cache_control = "no-store"


def refresh_seconds(request) -> int:
    return request.registry.settings["sendit.dashboard.refresh_seconds"]


def includeme(config):
    # static views are public unless told otherwise: these sit behind the lockdown
    config.add_static_view("static-dashboard", "sendit_dashboard:static", cache_max_age=3600,
                           permission="view")
    config.add_route("batch", "/batches/{id}")
    config.add_route("batch_download", "/batches/{id}/download")
    config.add_route("batch_delete", "/batches/{id}/delete")
    config.add_route("image", "/images/{id}")
    config.add_route("errors", "/errors")
    config.add_route("settings", "/settings")
    config.get_jinja2_environment().filters.update(FILTERS)
    config.scan("sendit_dashboard")
