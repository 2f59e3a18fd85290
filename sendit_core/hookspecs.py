"""The sendit plugin API: every hook a plugin may implement.

Who calls what:

- start-up (``sendit_core.main`` and every command-line tool that loads an ini
  file) calls the *configuration* hooks once, in the order below;
- page views call the *interface* hooks on every request that renders a page;
- the ingest pipeline calls the *ingest* hooks for every file and batch;
- the ``sendit`` command calls the *command-line* hook once, to build its parser.

Plugins implement hooks as plain functions decorated with
``sendit_core.hookimpl``; an implementation may accept fewer arguments than the
specification lists (pluggy passes only the ones it names), so new arguments can
be added here without breaking existing plugins.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover - imports for type hints only
    import argparse
    from pathlib import Path

    from pyramid.config import Configurator
    from pyramid.request import Request

    from sendit_core.ingest import IngestSource
    from sendit_core.models import Batch, Image
    from sendit_core.parsing import ParsedFile
    from sendit_core.settings import Setting
    from sendit_core.ui import NavItem, Panel

hookspec = pluggy.HookspecMarker("sendit")


# --------------------------------------------------------------------------
# Configuration: called once at start-up, in this order.
# --------------------------------------------------------------------------


@hookspec
def sendit_settings() -> list[Setting]:
    """Declare the ini keys a plugin reads, with their types and defaults.

    Called once when settings are loaded (web app, worker and every command),
    before any other hook. Each key should carry the plugin's own prefix
    (``sendit.<plugin>.<key>``). The core converts and validates every declared
    key in one place; a bad value stops start-up with a message naming the key.

    :returns: a list of :class:`sendit_core.settings.Setting`.
    """


@hookspec
def sendit_check_settings(settings: dict[str, Any]) -> list[str] | None:
    """Check combinations of converted settings that single keys cannot.

    Called once after every declared key has been converted.

    :param settings: the converted settings (key -> typed value), read-only.
    :returns: a list of problems, each a sentence naming the key(s) at fault,
        or ``None`` / an empty list when everything is fine.
    """


@hookspec
def sendit_pyramid_configure(config: Configurator, settings: dict[str, Any]) -> None:
    """Add routes, views, static assets and templates to the web application.

    Called once while the web application is built, after the core's own
    configuration has been committed (so core directives and the database are
    ready). A plugin usually calls ``config.include("its.module")`` so that its
    asset specifications resolve inside its own package. Views are protected by
    the lockdown unless they explicitly say otherwise.

    :param config: the Pyramid :class:`~pyramid.config.Configurator`.
    :param settings: the converted settings.
    :returns: nothing.
    """


# --------------------------------------------------------------------------
# Interface: called while a page is rendered.
# --------------------------------------------------------------------------


@hookspec
def sendit_nav_items(request: Request) -> list[NavItem] | None:
    """Contribute entries to the navigation bar shown on every page.

    Called once per rendered page (for logged-in users only).

    :param request: the current request (use ``request.route_url`` for links).
    :returns: a list of :class:`sendit_core.ui.NavItem`; entries are sorted by
        their ``order`` and then their title.
    """


@hookspec
def sendit_dashboard_panels(request: Request) -> list[Panel] | None:
    """Contribute panels to the dashboard.

    Called each time the dashboard is rendered or refreshed in place (every
    ``sendit.dashboard.refresh_seconds``), so keep it cheap. Panels with
    ``slot="actions"`` appear as buttons at the top left (not refreshed);
    ``slot="side"`` panels beside the batches table, ``slot="main"`` ones
    above it, both re-rendered on every refresh.

    :param request: the current request.
    :returns: a list of :class:`sendit_core.ui.Panel`.
    """


@hookspec
def sendit_batch_panels(request: Request, batch: Batch) -> list[Panel] | None:
    """Contribute panels to a batch page.

    Called each time a batch page is rendered.

    :param request: the current request.
    :param batch: the :class:`sendit_core.models.Batch` being shown.
    :returns: a list of :class:`sendit_core.ui.Panel`.
    """


@hookspec
def sendit_image_panels(request: Request, image: Image) -> list[Panel] | None:
    """Contribute panels to an image page (the viewer is one of them).

    Called each time an image page is rendered; panels are shown above the
    header table, sorted by ``order``.

    :param request: the current request.
    :param image: the :class:`sendit_core.models.Image` being shown.
    :returns: a list of :class:`sendit_core.ui.Panel`.
    """


@hookspec
def sendit_settings_panels(request: Request) -> list[Panel] | None:
    """Contribute panels to the settings page (status of a daemon, say).

    Called each time the settings page is rendered or refreshed.

    :param request: the current request.
    :returns: a list of :class:`sendit_core.ui.Panel`.
    """


# --------------------------------------------------------------------------
# Ingest: sources hand files to the pipeline; parsers read them; events follow.
# --------------------------------------------------------------------------


@hookspec
def sendit_ingest_sources(settings: dict[str, Any]) -> list[IngestSource] | None:
    """Declare ingest sources (upload, watcher, ...).

    Called when the settings page, the dashboard or the command line needs the
    list of sources, and by ``sendit`` when it starts or stops a daemon-like
    source. A source that runs as a daemon implements ``start``, ``stop`` and
    ``status``; a passive one (uploads) leaves them as the base class has them.

    :param settings: the converted settings.
    :returns: a list of :class:`sendit_core.ingest.IngestSource`.
    """


@hookspec(firstresult=True)
def sendit_parse_file(path: Path, settings: dict[str, Any]) -> ParsedFile | None:
    """Parse one file into an image record and its header elements.

    Called by the ingest pipeline for every file, plugins registered later
    first. Return ``None`` to decline a file you do not understand so the
    next parser can try; raise :class:`sendit_core.parsing.ParseError` to
    reject a file you do understand but that is broken (it becomes an error
    row of the batch). Stops at the first non-None result.

    :param path: the file to read (never modify or move it).
    :param settings: the converted settings.
    :returns: a :class:`sendit_core.parsing.ParsedFile`, or ``None``.
    """


@hookspec
def sendit_image_imported(image: Image, batch: Batch, settings: dict[str, Any]) -> None:
    """React to an image that was just stored and indexed.

    Called by the worker after the transaction that stored the image has
    committed, once per image. Exceptions are logged and do not undo the import.

    :param image: the stored :class:`sendit_core.models.Image` (detached).
    :param batch: its :class:`sendit_core.models.Batch` (detached).
    :param settings: the converted settings.
    :returns: nothing.
    """


@hookspec
def sendit_batch_finished(batch: Batch, settings: dict[str, Any]) -> None:
    """React to a batch whose queued files have all been processed.

    Called by the worker after the batch's final status (DONE, EMPTY or ERROR)
    has been committed. Called again when more files are added to the batch
    and processed. Exceptions are logged and do not change the batch.

    :param batch: the :class:`sendit_core.models.Batch` (detached).
    :param settings: the converted settings.
    :returns: nothing.
    """


@hookspec
def sendit_batch_deleted(batch_id: int, settings: dict[str, Any]) -> None:
    """Forget what the plugin kept of a batch that was deleted.

    Called in the process that deleted the batch (the dashboard's delete
    button, ``DELETE /api/batches/{id}``), once the deletion has committed and
    the batch's stored files are gone: its images, header values, errors and
    jobs no longer exist. Remove what the plugin derived from them (caches,
    copies, exports), so that deleting a batch deletes all of its data. Not
    called for a deletion that rolled back. Exceptions are logged and change
    nothing.

    :param batch_id: the deleted batch's id (on SQLite, a later batch may get
        the same id again).
    :param settings: the converted settings.
    :returns: nothing.
    """


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


@hookspec
def sendit_add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add subcommands to the ``sendit`` command.

    Called once when ``sendit`` builds its argument parser. Add a parser with
    ``subparsers.add_parser(name, help=...)``, give it an ``ini`` positional
    argument first (by convention), and set its handler with
    ``parser.set_defaults(func=handler)``. The handler receives the parsed
    ``argparse.Namespace`` and returns the exit code (0 on success); raise
    :class:`sendit_core.cli.CommandError` for a clear message and exit code 1.

    :param subparsers: the object returned by ``ArgumentParser.add_subparsers``.
    :returns: nothing.
    """
