"""Build the plugin manager: built-in plugins from a list, others from entry points."""
from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata

import pluggy

from . import hookspecs

log = logging.getLogger(__name__)

#: Entry-point group through which third-party plugins are found.
ENTRYPOINT_GROUP = "sendit.plugins"

#: Built-in plugins, registered by name in this order (as pytest and datasette do).
DEFAULT_PLUGINS: tuple[str, ...] = (
    "sendit_pydicom",
    "sendit_dashboard",
    "sendit_watcher",
    "sendit_upload",
    "sendit_viewer",
    "sendit_api",
    "sendit_search",
)


def get_plugin_manager(
    *,
    load_entrypoints: bool = True,
    builtins: Iterable[str] = DEFAULT_PLUGINS,
    disabled: Iterable[str] = (),
    extra: Iterable[object] = (),
) -> pluggy.PluginManager:
    """Return a new plugin manager with the built-in and installed plugins.

    :param load_entrypoints: also load plugins from the ``sendit.plugins`` group.
    :param builtins: module names of the built-in plugins to register.
    :param disabled: plugin names (module or entry-point name) to block.
    :param extra: further plugin objects (modules, instances) to register; tests
        use this to load exactly the plugins they need.
    """
    pm = pluggy.PluginManager("sendit")
    pm.add_hookspecs(hookspecs)
    for name in disabled:
        pm.set_blocked(name)
    for name in builtins:
        if not pm.is_blocked(name):
            pm.register(importlib.import_module(name), name=name)
    if load_entrypoints:
        pm.load_setuptools_entrypoints(ENTRYPOINT_GROUP)
    for plugin in extra:
        pm.register(plugin)
    pm.check_pending()
    return pm


@dataclass
class PluginInfo:
    """What the settings page and ``sendit`` show about one loaded plugin."""

    name: str
    module: str
    version: str | None
    builtin: bool
    hooks: list[str] = field(default_factory=list)


def plugin_info(pm: pluggy.PluginManager) -> list[PluginInfo]:
    """Describe every registered plugin: name, version and implemented hooks."""
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    infos = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:  # a blocked name
            continue
        module = getattr(plugin, "__name__", type(plugin).__module__)
        dist = dists.get(id(plugin))
        version = dist.version if dist else _module_version(module)
        hooks = sorted(h.name for h in (pm.get_hookcallers(plugin) or []))
        infos.append(PluginInfo(name, module, version, module in DEFAULT_PLUGINS, hooks))
    return sorted(infos, key=lambda info: (not info.builtin, info.name))


def _module_version(module: str) -> str | None:
    top = module.split(".")[0]
    try:
        dists = metadata.packages_distributions().get(top) or []
        return metadata.version(dists[0]) if dists else None
    except metadata.PackageNotFoundError:
        return None
