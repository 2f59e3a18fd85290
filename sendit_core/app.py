"""The application factory and the settings/plugins start-up shared by every entry point."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
import pluggy
from pyramid.config import Configurator
from pyramid.events import BeforeRender
from pyramid.renderers import JSON
from pyramid.csrf import get_csrf_token

from .models import SchemaError, check_schema
from .settings import load_config
from .listing import number
from .ui import collect

log = logging.getLogger(__name__)


def main(global_config: dict[str, Any], **raw_settings: Any):
    """The ``paste.app_factory``: ``pserve development.ini`` calls this."""
    here = (global_config or {}).get("here")
    settings, pm = load_config(raw_settings, here=here)
    settings["sendit._ini_file"] = (global_config or {}).get("__file__") or "INI"
    try:
        app = create_app(settings, pm)
    except SchemaError as exc:  # a sentence for the person starting the server, no traceback
        raise SystemExit(f"sendit cannot start: {exc}") from None
    if settings["sendit.worker"] == "thread":
        from .worker import start_thread_worker

        worker, _thread = start_thread_worker(app.registry.settings, pm)
        app.registry["sendit.worker"] = worker
    return app


def create_app(settings: dict[str, Any], pm: pluggy.PluginManager):
    """Build the WSGI app from converted settings and a plugin manager."""
    if settings.get("sendit._ephemeral_secret"):
        log.warning("sendit.session.secret is empty: using a random one, so browser "
                    "sessions end when the server restarts")
    for key in ("sendit.var_dir", "sendit.data_dir", "sendit.storage_dir"):
        Path(settings[key]).mkdir(parents=True, exist_ok=True)
    with Configurator(settings=settings) as config:
        config.registry["sendit.pm"] = pm
        config.include("pyramid_jinja2")
        config.add_renderer("json", JSON(serializer=json_bytes))
        config.include(".models")
        config.include(".security")
        config.include(".headers")
        config.include(".routes")
        config.add_subscriber(_template_globals, BeforeRender)
        config.scan(".views")
        settings = config.get_settings()
        if settings["sendit.db.auto_create"]:
            from .models import upgrade_schema

            upgrade_schema(settings, settings["sendit.engine"])
        else:
            check_schema(settings["sendit.engine"], settings.get("sendit._ini_file", "INI"))
        config.commit()  # the core is ready: now the plugins
        config.get_jinja2_environment().filters["number"] = number  # listing.jinja2's
        pm.hook.sendit_pyramid_configure(config=config, settings=settings)
        return config.make_wsgi_app()


#: numpy scalars and arrays (the viewer's geometry), and non-string keys as text,
#: as ``json.dumps`` writes them
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def json_bytes(value: Any, default=None, **_kw: Any) -> bytes:
    """The ``json`` renderer's encoder: orjson, in C (a page of 100 API images
    encodes in ~0.1 ms against ~0.7 ms with ``json.dumps``).

    It writes what ``json.dumps`` would for what views return (numpy numbers,
    subclasses of float and int, non-string keys); then ``default``, Pyramid's
    (``__json__`` and the renderer's adapters). NaN and infinity become
    ``null``, so the output is always valid JSON.
    """
    def fallback(obj: Any) -> Any:
        if isinstance(obj, float):
            return float(obj)
        if isinstance(obj, int):
            return int(obj)
        if default is None:
            raise TypeError(f"{type(obj).__name__} is not JSON serializable")
        return default(obj)

    return orjson.dumps(value, default=fallback, option=_JSON_OPTIONS)


def _template_globals(event: BeforeRender) -> None:
    request = event.get("request")
    if request is None or "sendit" in event:
        return
    event["sendit"] = TemplateContext(request)


class TemplateContext:
    """What every template sees as ``sendit``: navigation, messages, the CSRF token."""

    def __init__(self, request):
        self.request = request

    @property
    def logged_in(self) -> bool:
        from .security import ADMIN

        return self.request.sendit_identity == ADMIN

    @property
    def lockdown(self) -> bool:
        return self.request.registry["sendit.lockdown"].enabled

    def nav(self):
        if not self.logged_in:
            return []
        pm = self.request.registry["sendit.pm"]
        return collect(pm.hook.sendit_nav_items(request=self.request))

    def csrf_token(self) -> str:
        return get_csrf_token(self.request)

    def flash(self) -> list[tuple[str, str]]:
        session = self.request.session
        return [(kind, msg) for kind in ("error", "success", "")
                for msg in session.pop_flash(kind)]

    def static(self, path: str) -> str:
        return self.request.static_path(f"sendit_core:static/{path}")
