"""The search page, its form mode, its export and the autocompletion data.

``/search?q=…`` lists the matching images (``&sort=``, ``&order=``,
``&page=``) or their groups (``&group=series|study|batch``); everything is in
the URL, so a search is a bookmark. ``?mode=form`` shows the query as rows of
field, operator and value. ``/search/export?q=…&format=csv|json`` streams every
match; ``/search/fields`` and ``/search/values`` feed the query box's
autocompletion.
"""
from __future__ import annotations

import csv
import io
import json

from markupsafe import Markup, escape
from pyramid.httpexceptions import HTTPBadRequest, HTTPSeeOther
from pyramid.response import Response
from pyramid.view import view_config

from sendit_core.listing import Column, Page, Sort, url_with
from sendit_core.query import MAX_QUERY_LENGTH, QueryError, image_filter, present_fields, suggest_values

from . import form as search_form
from . import results

TEMPLATES = "sendit_search:templates/"
EXAMPLES = (
    ("Modality=CT StudyDate>=20200101", "CT images from 2020 on"),
    ("PatientName=DOE*", "patients whose name starts with DOE (a DICOM wildcard)"),
    ("StudyDate=20200101-20201231 SliceThickness<2.5", "a DICOM date range and a number"),
    ("SeriesDescription~t1 (Modality=MR OR Modality=CT)", "contains, ignoring case; OR in parentheses"),
    ("has:PatientAge -PatientSex=M", "the field is present; NOT with -"),
    ("ReferencedImageSequence.ReferencedSOPInstanceUID=1.2.3*", "a field inside a sequence"),
    ("(0009,1001)>3", "a private tag by its number"),
)


def search_url(request, q: str, **extra) -> str:
    params = {"q": q, **{k: v for k, v in extra.items() if v not in (None, "")}}
    return request.route_path("search", _query=params)


IMAGE_COLUMNS = [Column(key, exprs, key in results.DESCENDING_FIRST)
                 for key, exprs in results.IMAGE_SORTS.items()]
GROUP_COLUMNS = [Column(key, (), key in results.DESCENDING_FIRST) for key in results.GROUP_SORTS]


def marked_query(q: str, error: QueryError) -> Markup:
    """The query with the part the error is about in ``<mark>``."""
    if error.position is None:
        return Markup(escape(q))
    start = min(error.position, len(q))
    end = min(len(q), start + error.length)
    if start >= len(q):
        return Markup(f"{escape(q)}<mark class=\"at-end\"> </mark>")
    return Markup(f"{escape(q[:start])}<mark>{escape(q[start:end])}</mark>{escape(q[end:])}")


@view_config(route_name="search", renderer=TEMPLATES + "search.jinja2")
def search_page(request):
    params = request.GET
    if "f" in params or "add" in params:
        return form_submitted(request)
    q = params.get("q")
    mode = "form" if params.get("mode") == "form" else "query"
    group = params.get("group", "image")
    if group not in results.GROUPS:
        group = "image"
    # the field list (a seek or two per stored field) only where it is shown whole:
    # the introduction, the form and a query that went wrong
    page = _base(request, q or "", mode, group, with_fields=q is None or mode == "form")
    page["searched"] = q is not None
    rows = search_form.from_query(q or "")
    page["form_rows"], page["join"] = rows if rows else ([], "all")
    page["form_fits"] = rows is not None
    if q is None:
        return page
    if len(q) > MAX_QUERY_LENGTH:
        q = q[:MAX_QUERY_LENGTH + 1]
    try:
        cond = image_filter(q)
    except QueryError as exc:
        request.response.status = 400
        page.update(error=exc, marked=marked_query(q, exc),
                    fields=page["fields"] or present_fields(request.dbsession))
        return page
    db = request.dbsession
    size = request.registry.settings["sendit.page_size"]
    page["summary"] = summary = results.summary(db, cond)
    if group == "image":
        sorting = Sort.from_request(request, IMAGE_COLUMNS, "imported")
        pager = Page.from_request(request, summary.images, size)
        page["images"] = results.image_rows(db, cond, sorting.key, sorting.descending,
                                            pager.offset, pager.size)
    else:
        sorting = Sort.from_request(request, GROUP_COLUMNS, "count")
        total = {"series": summary.series, "study": summary.studies,
                 "batch": summary.batches}[group]
        if group != "batch":  # images without the UID form a group of their own
            total = results.group_count(db, cond, group)
        pager = Page.from_request(request, total, size)
        page["groups"] = results.groups(db, cond, group, sorting.key, sorting.descending,
                                        pager.offset, pager.size)
    page.update(sorting=sorting, results_page=pager)
    return page


def form_submitted(request):
    """The form mode's submit: add or remove a row, or run the query it builds."""
    rows, join = search_form.rows_from_params(request.GET)
    if "add" in request.GET:
        rows.append(search_form.Row())
    remove = request.GET.get("remove")
    if remove is not None and remove.isdigit() and int(remove) < len(rows):
        rows.pop(int(remove))
    q = search_form.to_query(rows, join)
    if "add" in request.GET or remove is not None:
        return _form_page(request, rows, join, q, None)
    try:
        image_filter(q)
    except QueryError as exc:
        request.response.status = 400
        return _form_page(request, rows, join, q, exc)
    return HTTPSeeOther(search_url(request, q, mode="form", group=request.GET.get("group")))


def _base(request, q: str, mode: str, group: str = "image", with_fields: bool = True) -> dict:
    """What every rendering of the page needs."""
    return {"q": q, "mode": mode, "group": group, "examples": EXAMPLES,
            "operators": search_form.OPERATORS, "active_nav": "search", "error": None,
            "searched": False,
            "fields": present_fields(request.dbsession) if with_fields else [],
            "url_with": lambda **kw: url_with(request, **kw),
            "search_url": lambda query, **kw: search_url(request, query, **kw)}


def _form_page(request, rows, join, q, error):
    page = _base(request, q, "form")
    page.update(form_rows=rows, join=join, form_fits=True, error=error)
    if error is not None:
        page["marked"] = marked_query(q, error)
    return page


@view_config(route_name="search_fields", renderer="json")
def fields(request):
    """The fields stored images have, for the autocompletion."""
    request.response.cache_control = "private, max-age=30"
    return {"fields": [{"text": f.text, "keyword": f.keyword_path, "tag": f.tag_path, "vr": f.vr,
                        "creator": f.private_creator}
                       for f in present_fields(request.dbsession)]}


@view_config(route_name="search_values", renderer="json")
def values(request):
    """Stored values of ``?field=`` starting with ``?prefix=``."""
    field = request.GET.get("field", "")
    prefix = request.GET.get("prefix", "")[:256]
    try:
        found = suggest_values(request.dbsession, field, prefix, limit=20)
    except QueryError as exc:
        request.response.status = 400
        return {"field": field, "prefix": prefix, "values": [], "error": exc.reason}
    return {"field": field, "prefix": prefix, "values": found}


@view_config(route_name="search_export")
def export(request):
    """Every matching image as CSV or JSON, streamed from its own session."""
    q = request.GET.get("q", "")
    fmt = request.GET.get("format", "csv")
    if fmt not in ("csv", "json"):
        raise HTTPBadRequest("format must be csv or json")
    try:
        cond = image_filter(q[:MAX_QUERY_LENGTH + 1])
    except QueryError as exc:
        raise HTTPBadRequest(f"Invalid query: {exc}") from None
    sort = request.GET.get("sort", "imported")
    descending = request.GET.get("order") == "desc"
    factory = request.registry["dbsession_factory"]

    def stream():
        with factory() as db:
            rows = results.iter_rows(db, cond, sort, descending)
            yield from (_csv(rows) if fmt == "csv" else _json(rows))

    response = Response(app_iter=stream(), charset="utf-8",
                        content_type="text/csv" if fmt == "csv" else "application/json")
    response.content_disposition = f'attachment; filename="sendit-search.{fmt}"'
    return response


def _csv(rows):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=results.ROW_FIELDS)
    writer.writeheader()
    for number, row in enumerate(rows):
        writer.writerow(row.as_dict())
        if number % 200 == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def _json(rows):
    yield b"["
    for number, row in enumerate(rows):
        yield (b"," if number else b"") + b"\n" + json.dumps(row.as_dict()).encode()
    yield b"\n]\n"


def dicom_date(value: str | None) -> str:
    """``20200131`` as ``2020-01-31`` (anything else as it is)."""
    if value and len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value or ""


def person(value: str | None) -> str:
    """A DICOM person name for people: ``DOE^JOHN`` as ``DOE, JOHN``."""
    if not value:
        return ""
    parts = [p for p in value.split("=")[0].split("^") if p]
    return ", ".join(parts[:2]) + (" " + " ".join(parts[2:]) if len(parts) > 2 else "")


def includeme(config):
    config.add_static_view("static-search", "sendit_search:static", cache_max_age=3600,
                           permission="view")
    config.add_route("search", "/search")
    config.add_route("search_fields", "/search/fields")
    config.add_route("search_values", "/search/values")
    config.add_route("search_export", "/search/export")
    config.get_jinja2_environment().filters.update(
        {"search_date": dicom_date, "search_person": person})
    config.scan("sendit_search.views")
