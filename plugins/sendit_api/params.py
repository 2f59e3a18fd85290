"""Request parameters: colander schemas, their validation, and JSON errors.

Each operation declares one colander schema with a ``path`` and a
``querystring`` child. :func:`validate` deserializes only those two (never the
body: uploads stream it), and every problem becomes a 400 naming the parameter
and the reason, in the same JSON shape as every other error under ``/api/``::

    {"status": 400, "error": "Bad Request",
     "message": "page_size: 5000 is more than the maximum 1000 (sendit.api.max_page_size)",
     "errors": [{"location": "querystring", "name": "page_size", "description": "..."}]}

The same schemas document the parameters in the OpenAPI document
(:mod:`.openapi` reads them).
"""
from __future__ import annotations

from typing import Any

import colander
from pyramid.response import Response

#: largest id the tables' integer primary keys hold (INTEGER, 32 bits, on PostgreSQL)
MAX_ID = 2**31 - 1
#: page numbers above this are refused (their offset would overflow the database)
MAX_PAGE = 2**31 - 1
NO_NUL = colander.Regex(r"^[^\x00]*$", msg="must not contain NUL characters")
STATUS_TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
                 405: "Method Not Allowed", 409: "Conflict", 411: "Length Required",
                 413: "Payload Too Large", 415: "Unsupported Media Type", 416: "Range Not Satisfiable",
                 500: "Internal Server Error", 503: "Service Unavailable", 507: "Insufficient Storage"}


def error_response(request, status: int, message: str, errors: list[dict] | None = None) -> Response:
    """A JSON error in the shape the core uses under ``/api/`` (``status``, ``error``, ``message``)."""
    body: dict[str, Any] = {"status": status, "error": STATUS_TITLES.get(status, "Error"),
                            "message": message}
    if errors:
        body["errors"] = errors
    response = Response(json_body=body, status=status, content_type="application/json", charset="utf-8")
    return response


class ApiError(Exception):
    """Raised by a view: answered as a JSON error (see :func:`error_view` in :mod:`.views`)."""

    def __init__(self, status: int, message: str, name: str | None = None,
                 location: str = "querystring"):
        super().__init__(message)
        self.status = status
        self.errors = [{"location": location, "name": name, "description": message}] if name else None
        self.message = f"{name}: {message}" if name else message


# -- types -----------------------------------------------------------------------------


class CommaList(colander.SchemaType):
    """Several values in one parameter: ``status=DONE,ERROR`` (or the parameter repeated)."""

    def __init__(self, choices: tuple[str, ...], upper: bool = True):
        self.choices = choices
        self.upper = upper

    def deserialize(self, node, cstruct):
        if cstruct in (colander.null, ""):
            return colander.null
        parts = cstruct if isinstance(cstruct, list) else str(cstruct).split(",")
        values = [p.strip().upper() if self.upper else p.strip() for p in parts if p.strip()]
        bad = [v for v in values if v not in self.choices]
        if bad:
            raise colander.Invalid(node, f"{bad[0]!r} is not one of {', '.join(self.choices)}")
        return values or colander.null

    def openapi(self, node) -> dict[str, Any]:
        return {"type": "array", "items": {"type": "string", "enum": list(self.choices)}}


def integer(name: str, description: str, *, minimum: int = 1, maximum: int = MAX_ID, **kw):
    return colander.SchemaNode(colander.Int(), name=name, description=description,
                               validator=colander.Range(minimum, maximum), **kw)


def text(name: str, description: str, max_length: int, **kw):
    return colander.SchemaNode(colander.String(), name=name, description=description,
                               validator=colander.All(colander.Length(max=max_length), NO_NUL),
                               missing=colander.drop, **kw)


def id_path(what: str) -> colander.SchemaNode:
    path = colander.SchemaNode(colander.Mapping(), name="path")
    path.add(integer("id", f"The {what}'s id."))
    return path


def paging() -> list[colander.SchemaNode]:
    return [
        integer("page", "The page number, 1-based; a page beyond the last is a 404.",
             maximum=MAX_PAGE, missing=1),
        integer("page_size", "Results per page (default and maximum from the ini file: "
             "`sendit.api.page_size`, `sendit.api.max_page_size`).", missing=colander.drop),
    ]


def request_schema(*, path: colander.SchemaNode | None = None,
                   query: list[colander.SchemaNode] = ()) -> colander.SchemaNode:
    """An operation's schema: its path and query parameters."""
    schema = colander.SchemaNode(colander.Mapping())
    if path is not None:
        schema.add(path)
    querystring = colander.SchemaNode(colander.Mapping(unknown="ignore"), name="querystring",
                                      missing={})
    for node in query:
        querystring.add(node)
    schema.add(querystring)
    return schema


# -- validation -------------------------------------------------------------------------


def validate(request, schema: colander.SchemaNode | None = None, **kw) -> None:
    """Cornice validator: the path and query parameters against ``schema``.

    Results land in ``request.validated`` (path and query values side by
    side); problems in ``request.errors`` (answered by :func:`validation_errors`).
    """
    if schema is None:
        return
    query_node = schema.get("querystring")
    known = {child.name: child for child in query_node.children} if query_node else {}
    query: dict[str, Any] = {}
    try:
        params = request.GET
    except UnicodeDecodeError:
        request.errors.add("querystring", None, "the query string is not valid UTF-8 "
                                                "(percent-encode text as UTF-8)")
        return
    for key in dict.fromkeys(params.keys()):
        if key not in known:
            continue
        values = params.getall(key)
        if len(values) > 1 and not isinstance(known[key].typ, CommaList):
            request.errors.add("querystring", key, "given more than once; give it once")
            continue
        query[key] = values if len(values) > 1 else values[0]
    cstruct: dict[str, Any] = {"querystring": query}
    if schema.get("path") is not None:
        cstruct["path"] = dict(request.matchdict or {})
    try:
        validated = schema.deserialize(cstruct)
    except colander.Invalid as exc:
        for dotted, message in exc.asdict(translate=request.localizer.translate).items():
            location, _, name = dotted.partition(".")
            request.errors.add(location, name, message)
        return
    for part in ("path", "querystring"):
        request.validated.update(validated.get(part) or {})


def validation_errors(request) -> Response:
    """Cornice's ``error_handler``: every problem, each naming its parameter."""
    errors = [{"location": e.get("location"), "name": e.get("name"),
               "description": str(e.get("description"))} for e in request.errors]
    message = "; ".join(f"{e['name'] or e['location']}: {e['description']}" for e in errors)
    return error_response(request, getattr(request.errors, "status", 400) or 400, message, errors)
