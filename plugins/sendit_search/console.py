"""The query console: ``/console``, a read-only SQL prompt with the schema beside it.

Only included when ``sendit.console.enabled`` is true (otherwise the route does
not exist: a 404). Statements run through :mod:`.readonly`; each one is logged
(the text, how long it took, how many rows) for the record.
"""
from __future__ import annotations

import logging

from pyramid.view import view_config

from . import CONSOLE_MAX_ROWS, CONSOLE_TIMEOUT, CONSOLE_URL
from .readonly import ConsoleError, ReadOnlyDatabase

log = logging.getLogger(__name__)
TEMPLATE = "sendit_search:templates/console.jinja2"
MAX_STATEMENT = 20_000
EXAMPLES = (
    ("Images per modality",
     "SELECT modality, count(*) AS images\nFROM image\nGROUP BY modality\nORDER BY images DESC"),
    ("Batches with errors",
     "SELECT id, name, status, image_count, error_count\nFROM batch\nWHERE error_count > 0\n"
     "ORDER BY updated_at DESC"),
    ("The most common fields",
     "SELECT f.keyword_path, f.vr, count(*) AS \"values\"\nFROM header_value v\n"
     "JOIN header_field f ON f.id = v.field_id\nGROUP BY f.keyword_path, f.vr\n"
     "ORDER BY \"values\" DESC\nLIMIT 20"),
    ("Values of one field",
     "SELECT v.value_text, count(*) AS images\nFROM header_value v\n"
     "WHERE v.field_id = (SELECT id FROM header_field WHERE keyword_path = 'StudyDescription')\n"
     "GROUP BY v.value_text\nORDER BY images DESC"),
)


def database(request) -> ReadOnlyDatabase:
    """The console's read-only database (made once per app)."""
    registry = request.registry
    db = registry.get("sendit_search.console_db")
    if db is None:
        settings = registry.settings
        url = settings[CONSOLE_URL] or settings["sqlalchemy.url"]
        db = ReadOnlyDatabase(url, settings[CONSOLE_TIMEOUT], settings[CONSOLE_MAX_ROWS])
        registry["sendit_search.console_db"] = db
    return db


def _page(request, sql: str, **extra) -> dict:
    page = {"sql": sql, "examples": EXAMPLES, "result": None, "error": None,
            "active_nav": "console", "schema": [], "schema_error": None, "warning": None,
            "timeout": request.registry.settings[CONSOLE_TIMEOUT],
            "max_rows": request.registry.settings[CONSOLE_MAX_ROWS]}
    try:
        db = database(request)
        page["dialect"] = db.dialect
        page["schema"] = db.schema()
        page["warning"] = db.warning()
    except ConsoleError as exc:
        page["schema_error"] = str(exc)
    page.update(extra)
    return page


@view_config(route_name="console", request_method="GET", renderer=TEMPLATE)
def console_form(request):
    return _page(request, request.GET.get("sql", "")[:MAX_STATEMENT])


@view_config(route_name="console", request_method="POST", renderer=TEMPLATE)
def console_run(request):
    sql = request.POST.get("sql", "")
    if len(sql) > MAX_STATEMENT:
        request.response.status = 400
        return _page(request, sql[:MAX_STATEMENT],
                     error=f"The statement is too long: at most {MAX_STATEMENT:,} characters.")
    try:
        result = database(request).run(sql)
    except ConsoleError as exc:
        log.info("console: refused or failed: %s | %s", _one_line(sql), exc)
        request.response.status = 400
        return _page(request, sql, error=str(exc))
    log.info("console: %d row(s)%s in %.3f s: %s", len(result.rows),
             "+" if result.truncated else "", result.seconds, _one_line(sql))
    return _page(request, sql, result=result)


def _one_line(sql: str, limit: int = 500) -> str:
    text = " ".join(sql.split())
    return text if len(text) <= limit else text[:limit] + "…"


def includeme(config):
    config.add_route("console", "/console")
    config.scan("sendit_search.console")
