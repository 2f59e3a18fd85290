"""Built-in plugin: the watcher, an ingest source for the data folder.

A daemon watches ``sendit.data_dir``; each finished folder in it (no ``.tmp…``
extension) becomes one batch once it has been quiet for
``sendit.watcher.settle_seconds``. ``sendit watcher start|stop|status|run INI``
controls it; the dashboard and settings pages show whether it runs. See
``docs/watcher.md``.
"""
from __future__ import annotations

import logging
from pathlib import Path

from sendit_core import Setting, hookimpl
from sendit_core.settings import positive, to_bool, to_float, to_path

from . import folders

log = logging.getLogger(__name__)


def _seconds(value, ctx) -> float:
    seconds = to_float(value, ctx)
    if seconds < 0:
        raise ValueError("expected a number of seconds, 0 or more")
    return seconds


@hookimpl
def sendit_settings():
    return [
        Setting("sendit.watcher.pid_file", "var/watcher.pid", to_path,
                "The running watcher's pid file (status, stop, one watcher at a time)."),
        Setting("sendit.watcher.log_dir", "var/log", to_path,
                "Folder of the watcher's logs: watcher.log (events and decisions) and "
                "watcher-error.log."),
        Setting("sendit.watcher.settle_seconds", "5", _seconds,
                "A finished folder is imported once nothing in it has changed for this long."),
        Setting("sendit.watcher.polling", "false", to_bool,
                "Poll the data folder instead of using inotify (network file systems)."),
        Setting("sendit.watcher.stop_seconds", "60", positive(to_float),
                "How long 'sendit watcher stop' waits for the watcher to exit."),
    ]


@hookimpl
def sendit_check_settings(settings):
    """Nothing sendit writes may live inside the watched folder: the watcher
    would import it (stored files, logs) as new batches."""
    data_dir = Path(settings["sendit.data_dir"])
    problems = []
    for key in ("sendit.storage_dir", "sendit.var_dir", "sendit.watcher.log_dir"):
        path = Path(settings[key])
        if path == data_dir or data_dir in path.parents:
            problems.append(f"{key} = {path}: is inside the watched folder sendit.data_dir = "
                            f"{data_dir}; the watcher would import what is written there")
    pid_dir = Path(settings["sendit.watcher.pid_file"]).parent
    if pid_dir == data_dir or data_dir in pid_dir.parents:
        problems.append(f"sendit.watcher.pid_file: is inside the watched folder sendit.data_dir = "
                        f"{data_dir}; put it elsewhere (var/watcher.pid)")
    return problems


@hookimpl
def sendit_add_commands(subparsers):
    from .commands import add_commands

    add_commands(subparsers)


@hookimpl
def sendit_ingest_sources():
    from .daemon import WatcherSource

    return [WatcherSource()]


@hookimpl
def sendit_dashboard_panels(request):
    from .panels import watcher_panel

    return [watcher_panel(request, full=False, slot="side")]


@hookimpl
def sendit_settings_panels(request):
    from .panels import watcher_panel

    return [watcher_panel(request, full=True, slot="main")]


@hookimpl
def sendit_batch_finished(batch, settings):
    """With ``sendit.import.delete_source``, remove the batch's folder once the
    import has emptied it (runs in the worker; files with errors keep it)."""
    if batch.source != folders.SOURCE or not settings["sendit.import.delete_source"]:
        return
    data_dir = Path(settings["sendit.data_dir"])
    if folders.remove_if_empty(data_dir / batch.name, data_dir):
        log.info("removed the watched folder %s: every file in it was imported", data_dir / batch.name)
