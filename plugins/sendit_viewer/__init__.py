"""Built-in plugin: the orthogonal viewer on the image page.

It adds one panel to the image page through ``sendit_image_panels`` (so another
viewer could join or replace it) and the pixel endpoints the panel's script
reads (:mod:`.views`). Volumes are assembled once per series and kept in a disk
cache (:mod:`.volume`, :mod:`.cache`); window/level, slicing and the crosshair
happen in the browser (``static/viewer.js``). See ``docs/viewer.md``.
"""
from __future__ import annotations

import logging
from pathlib import Path

from sendit_core import Panel, Setting, hookimpl
from sendit_core.settings import positive, to_int

log = logging.getLogger(__name__)


def _optional_folder(value: str, ctx) -> Path | None:
    value = value.strip()
    if not value:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else (ctx.here / path).resolve()


@hookimpl
def sendit_settings():
    return [
        Setting("sendit.viewer.cache_dir", "", _optional_folder,
                "Where assembled volumes are cached (default: <sendit.var_dir>/viewer-cache). "
                "Safe to delete; volumes are rebuilt on demand."),
        Setting("sendit.viewer.cache_mb", "4096", positive(to_int),
                "Most disk space the volume cache may use, in MB; the least recently viewed "
                "volumes are removed beyond it."),
        Setting("sendit.viewer.max_volume_mb", "2048", positive(to_int),
                "Largest volume assembled, in MB; for a bigger series the viewer shows the "
                "image's own slice only."),
        Setting("sendit.viewer.prefetch_mb", "512", to_int,
                "Volumes up to this size (MB) are downloaded whole by the browser after the first "
                "planes, so scrolling needs no request; bigger ones are read plane by plane "
                "(0: always plane by plane)."),
        Setting("sendit.viewer.threads", "2", positive(to_int),
                "Threads decoding slices while a volume is assembled."),
    ]


@hookimpl
def sendit_pyramid_configure(config):
    config.include("sendit_viewer.views")


@hookimpl
def sendit_batch_deleted(batch_id, settings):
    """A deleted batch's volumes leave the cache with it: they hold its pixels."""
    from .cache import VolumeCache

    removed = VolumeCache.from_settings(settings).forget_batch(batch_id)
    if removed:
        log.info("viewer cache: removed %d volume(s) of deleted batch %s", removed, batch_id)


@hookimpl
def sendit_image_panels(request, image):
    from .views import panel_html

    return [Panel("viewer", panel_html(request, image), title="Viewer", order=10)]
