"""Firing the event hooks: every listener runs, and one failing stops no other."""
from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def notify(pm, hook_name: str, **kwargs: Any) -> int:
    """Call every implementation of an event hook, logging (not raising) failures.

    :returns: how many implementations failed.
    """
    failures = 0
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        try:
            impl.function(*[kwargs[name] for name in impl.argnames])
        except Exception:  # noqa: BLE001 - a plugin's bug must not undo an import
            failures += 1
            log.exception("plugin %s failed in %s", impl.plugin_name, hook_name)
    return failures


def image_imported(pm, image, batch, settings: dict[str, Any]) -> int:
    """Tell plugins an image was stored (call after the commit)."""
    return notify(pm, "sendit_image_imported", image=image, batch=batch, settings=settings)


def batch_finished(pm, batch, settings: dict[str, Any]) -> int:
    """Tell plugins a batch reached its final status (call after the commit)."""
    return notify(pm, "sendit_batch_finished", batch=batch, settings=settings)


def batch_deleted(pm, batch_id: int, settings: dict[str, Any]) -> int:
    """Tell plugins a batch was deleted (call after the commit)."""
    return notify(pm, "sendit_batch_deleted", batch_id=batch_id, settings=settings)
