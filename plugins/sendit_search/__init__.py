"""Built-in plugin: search by any header field and value, and the query console.

- ``/search``: a query box (the language of :mod:`sendit_core.query`, with
  autocompletion of the fields the stored images have) or a form of
  field/operator/value rows; results paginated and sortable, or grouped by
  series, study or batch with their counts; the query lives in the URL.
- ``sendit query INI 'Modality=CT StudyDate>=20200101'``: the same search on the
  command line (``--format table|json|csv``, ``--limit``, ``--count``).
- ``/console``: a read-only SQL console with the schema beside it, for
  administrators; off unless ``sendit.console.enabled = true``.

See ``docs/search.md``.
"""
from __future__ import annotations

from sendit_core import NavItem, Setting, hookimpl
from sendit_core.settings import positive, to_bool, to_float, to_int, to_str

CONSOLE_ENABLED = "sendit.console.enabled"
CONSOLE_TIMEOUT = "sendit.console.timeout_seconds"
CONSOLE_MAX_ROWS = "sendit.console.max_rows"
CONSOLE_URL = "sendit.console.database_url"


@hookimpl
def sendit_settings():
    return [
        Setting(CONSOLE_ENABLED, "false", to_bool,
                "Offer the read-only SQL console at /console (administrators). Off by default "
                "and in production.ini; it can never write, but it reads every table."),
        Setting(CONSOLE_TIMEOUT, "5", positive(to_float),
                "A console query running longer than this many seconds is stopped."),
        Setting(CONSOLE_MAX_ROWS, "1000", positive(to_int),
                "The console shows at most this many rows of a result."),
        Setting(CONSOLE_URL, "", to_str,
                "The database the console connects to (empty: the app's own, read-only). On "
                "PostgreSQL, a role with nothing but SELECT rights is safer still."),
    ]


@hookimpl
def sendit_pyramid_configure(config):
    config.include("sendit_search.views")
    if config.get_settings()[CONSOLE_ENABLED]:
        config.include("sendit_search.console")


@hookimpl
def sendit_nav_items(request):
    items = [NavItem("Search", request.route_path("search"), order=30, name="search")]
    if request.registry.settings.get(CONSOLE_ENABLED):
        items.append(NavItem("Console", request.route_path("console"), order=80, name="console"))
    return items


@hookimpl
def sendit_add_commands(subparsers):
    from .commands import add_commands

    add_commands(subparsers)
