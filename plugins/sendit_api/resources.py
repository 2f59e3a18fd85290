"""The Cornice services under ``/api/``: batches, images, header values.

Every view is registered with :func:`.openapi.operation`, which also documents
it; parameters are validated by :func:`.params.validate` before the view runs.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import colander
from cornice import Service
from pydicom.datadict import tag_for_keyword
from pyramid.response import FileResponse, Response
from sqlalchemy import and_, bindparam, func, or_, select

from sendit_core import batches as core_batches
from sendit_core.models import Batch, BatchStatus, HeaderField, HeaderValue, Image, IngestError
from sendit_core.query import MAX_QUERY_LENGTH, QueryError, image_filter
from sendit_core.uploads import UploadError, receive_upload

from .elements import nest
from .openapi import error, ok, operation, responses
from .paging import Count, cached_count, list_etag, paginate, statement
from .params import (ApiError, CommaList, error_response, id_path, integer, paging, request_schema,
                     text)
from .represent import BATCH_COLUMNS, ERROR_COLUMNS, IMAGE_COLUMNS, Links

log = logging.getLogger(__name__)

#: header values of more images than this, with no field or image filter, are estimated
EXACT_HEADER_COUNT_IMAGES = 2_000
#: images sampled for that estimate
SAMPLE_IMAGES = 64
#: a value matching more rows than this is listed by walking the images in order
#: (sorting fewer matches is cheaper than probing every image)
SORTED_MATCHES = 5_000


def _service(name: str, path: str, description: str) -> Service:
    return Service(name=f"sendit_api.{name}", path=path, description=description)


batches = _service("batches", "/api/batches", "Batches")
batch = _service("batch", "/api/batches/{id}", "A batch")
batch_images = _service("batch_images", "/api/batches/{id}/images", "A batch's images")
batch_errors = _service("batch_errors", "/api/batches/{id}/errors", "A batch's errors")
images = _service("images", "/api/images", "Images")
image = _service("image", "/api/images/{id}", "An image")
image_headers = _service("image_headers", "/api/images/{id}/headers", "An image's header")
image_file = _service("image_file", "/api/images/{id}/file", "An image's file")
headers = _service("headers", "/api/headers", "Header values")
SERVICES = (batches, batch, batch_images, batch_errors, images, image, image_headers, image_file,
            headers)


# -- parameters ---------------------------------------------------------------------------


def _image_filters(with_batch: bool) -> list[colander.SchemaNode]:
    nodes = [
        text("modality", "Only images of this modality (exact, e.g. CT).", 16),
        text("study_instance_uid", "Only images of this study.", 64),
        text("series_instance_uid", "Only images of this series.", 64),
        text("sop_instance_uid", "Only the image(s) with this SOP Instance UID.", 64),
        text("q", "A search query (see docs/search.md), e.g. `PatientID=123`, "
              "`Modality=CT SeriesDescription=*HEAD*`, `ReferencedImageSequence.ReferencedSOPInstanceUID"
              "=1.2.3`. Unquoted `*` and `?` are wildcards; double quotes match exactly.", MAX_QUERY_LENGTH),
    ]
    if with_batch:
        nodes.insert(0, integer("batch", "Only images of this batch.", missing=colander.drop))
    return nodes


BATCH_LIST = request_schema(query=[
    *paging(),
    colander.SchemaNode(CommaList(tuple(s.value for s in BatchStatus)), name="status",
                        missing=colander.drop,
                        description="Only batches with one of these statuses (comma separated)."),
    text("name", "Only batches whose name contains this text (any case).", 255),
    text("source", "Only batches from this source (upload, watcher, cli, ...).", 64),
])
BATCH_ONE = request_schema(path=id_path("batch"))
BATCH_IMAGES = request_schema(path=id_path("batch"), query=[*paging(), *_image_filters(False)])
BATCH_ERRORS = request_schema(path=id_path("batch"), query=paging())
IMAGE_LIST = request_schema(query=[*paging(), *_image_filters(True)])
IMAGE_ONE = request_schema(path=id_path("image"))
HEADER_LIST = request_schema(query=[
    *paging(),
    text("field", "Only values of this element: a keyword (`PatientName`), a tag "
          "(`00100010` or `(0010,0010)`), or a path into sequences "
          "(`ReferencedSeriesSequence.SeriesInstanceUID`, `00081115.0020000E`).", 600),
    text("value", "Only this value (needs `field`): exact, or with `*` and `?` as wildcards.", 1024),
    integer("image", "Only values of this image.", missing=colander.drop),
    integer("batch", "Only values of this batch's images.", missing=colander.drop),
])

UPLOAD_BODY = {
    "required": True,
    "content": {"multipart/form-data": {
        "schema": {
            "type": "object",
            "required": ["files"],
            "properties": {
                "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                          "description": "The DICOM files (the field repeated once per file); their "
                                         "names may carry folders."},
            },
        },
        "encoding": {"files": {"contentType": "application/octet-stream"}},
    }},
}
NEW_BATCH_BODY = {
    "required": True,
    "content": {"multipart/form-data": {
        "schema": {
            "type": "object",
            "required": ["files"],
            "properties": {
                "name": {"type": "string", "maxLength": 255,
                         "description": "The new batch's name (default: upload-<date>-<time>)."},
                **UPLOAD_BODY["content"]["multipart/form-data"]["schema"]["properties"],
            },
        },
        "encoding": {"files": {"contentType": "application/octet-stream"}},
    }},
}


# -- helpers ----------------------------------------------------------------------------------


#: one object by id, as plain rows read through Core (statements built once: see paging.statement)
_BY_ID = {Batch: select(*BATCH_COLUMNS).where(Batch.id == bindparam("id")),
          Image: select(*IMAGE_COLUMNS, Image.stored_path).where(Image.id == bindparam("id"))}


def _get(request, model, what: str):
    """The row whose id is in the path (plain columns, read through Core), or a 404."""
    ident = request.validated["id"]
    row = request.dbconnection.execute(_BY_ID[model], {"id": ident}).first()
    if row is None:
        raise ApiError(404, f"There is no {what} {ident}.")
    return row


def _get_batch(request) -> Batch:
    """The batch in the path as an ORM object of the request's session (uploads need one)."""
    found = request.dbsession.get(Batch, request.validated["id"])
    if found is None:
        raise ApiError(404, f"There is no batch {request.validated['id']}.")
    return found


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _match(request, column, value: str):
    """``column`` equals ``value``; unquoted ``*`` and ``?`` in it are wildcards."""
    if "*" not in value and "?" not in value:
        return column == value
    if request.dbconnection.dialect.name == "sqlite":  # GLOB: case-sensitive, uses the index
        pattern = re.sub(r"[\[\]]", lambda m: f"[{m.group(0)}]", value)
        return column.op("GLOB")(pattern)
    pattern = _like_escape(value).replace("*", "%").replace("?", "_")
    return column.like(pattern, escape="\\")


# -- batches -----------------------------------------------------------------------------------


@operation(batches, "GET", schema=BATCH_LIST, summary="List batches", tag="batches",
           responses=responses(ok("BatchPage", "A page of batches."), error(400), error(404)))
def list_batches(request):
    """Batches by id (oldest first), with their status and counts.

    Filters: `status` (one or more, comma separated), `name` (contains, any
    case), `source`.
    """
    v = request.validated
    filters = []
    if "status" in v:
        filters.append(Batch.status.in_([BatchStatus(s) for s in v["status"]]))
    if "name" in v:
        filters.append(Batch.name.ilike(f"%{_like_escape(v['name'])}%", escape="\\"))
    if "source" in v:
        filters.append(Batch.source == v["source"])
    if filters:
        stmt, shape = select(*BATCH_COLUMNS).where(*filters).order_by(Batch.id), None
        key = ("batches", tuple(v.get("status", ())), v.get("name"), v.get("source"))
        count = Count(cached_count(request, key, stmt))
    else:
        shape = ("batches",)
        stmt = statement(shape, lambda: select(*BATCH_COLUMNS).order_by(Batch.id))
        count = Count(request.sendit_api_stamp.batches)
    list_etag(request)
    return paginate(request, stmt, count, Links(request).batch, shape=shape)


@operation(batch, "GET", schema=BATCH_ONE, summary="A batch", tag="batches",
           responses=responses(ok("Batch", "The batch, with its counts and status."),
                               error(400), error(404)))
def get_batch(request):
    """One batch: status, counts (images, errors, files pending), bytes and dates."""
    found = _get(request, Batch, "batch")
    response = request.response
    response.last_modified = found.updated_at
    response.etag = (f"b{found.id}-{found.updated_at.timestamp() if found.updated_at else 0}-"
                     f"{found.image_count}-{found.error_count}-{found.pending_count}", False)
    response.conditional_response = True
    return Links(request).batch(found)


@operation(batch, "DELETE", schema=BATCH_ONE, summary="Delete a batch", tag="batches",
           responses=responses(("204", {"description": "Deleted: its images, header values, errors "
                                                       "and stored files."}),
                               error(400), error(404), error(409)))
def delete_batch(request):
    """Delete a batch: its images, their header values, its errors and, once
    that has committed, its stored files. A batch still being imported (files
    pending) cannot be deleted (409): wait until it has finished.
    """
    found = _get(request, Batch, "batch")
    try:
        core_batches.delete_batch(request.dbsession, request.tm.get(), found,
                                  settings=request.registry.settings, pm=request.registry["sendit.pm"])
    except core_batches.BatchBusy as exc:
        raise ApiError(409, str(exc)) from None
    log.info("API: deleted batch %s (%s images, %s errors)", found.id, found.image_count,
             found.error_count)
    return Response(status=204)


#: the filters of an image list that compare one column with the parameter's value
IMAGE_FILTERS = (("batch", Image.batch_id), ("modality", Image.modality),
                 ("study_instance_uid", Image.study_instance_uid),
                 ("series_instance_uid", Image.series_instance_uid),
                 ("sop_instance_uid", Image.sop_instance_uid))


def _image_list(request, batch_row=None):
    v = request.validated
    params = {name: v[name] for name, _ in IMAGE_FILTERS if name in v}
    if batch_row is not None:
        params["batch"] = batch_row.id
    batch_id = params.get("batch")
    query = v.get("q", "").strip()
    columns = [(name, column) for name, column in IMAGE_FILTERS if name in params]
    names = tuple(name for name, _ in columns)

    def build(*more):
        return (select(*IMAGE_COLUMNS).where(*(c == bindparam(n) for n, c in columns), *more)
                .order_by(Image.id))

    if query:  # a search: its statement is as varied as the queries, so built each time
        try:
            condition = image_filter(query)
        except QueryError as exc:
            raise _query_error(str(exc), exc.position) from None
        except RecursionError:  # the parser recurses per parenthesis
            raise _query_error("the query nests too deeply (too many parentheses)", None) from None
        stmt, shape = build(condition), None
    else:
        shape = ("images", names)
        stmt = statement(shape, build)
    seek = None
    if not names and not query:
        count = request.sendit_api_totals.images
        seek = _dense_seek(request, count)
    elif names == ("batch",) and not query:
        found = batch_row or request.dbconnection.execute(
            _BATCH_IMAGE_COUNT, {"id": batch_id}).first()
        count = found.image_count if found is not None else 0
    else:
        key = ("images", *(params.get(name) for name, _ in IMAGE_FILTERS), query)
        count = cached_count(request, key, stmt, params=params)
    list_etag(request)
    return paginate(request, stmt, Count(count), Links(request).image, seek=seek, shape=shape,
                    params=params)


_BATCH_IMAGE_COUNT = select(Batch.image_count).where(Batch.id == bindparam("id"))
_IMAGE_ID_RANGE = select(select(func.min(Image.id)).scalar_subquery(),
                         select(func.max(Image.id)).scalar_subquery())


def _dense_seek(request, count: int) -> tuple[Any, int] | None:
    """When image ids run without a gap (no batch deleted), page N of all images
    starts at a known id: seek to it through the primary key instead of
    stepping over the rows before it. ``count`` (the batch counters) is exact."""
    lowest, highest = request.dbconnection.execute(_IMAGE_ID_RANGE).one()
    if lowest is None or highest - lowest + 1 != count:
        return None
    return Image.id, lowest


def _query_error(message: str, position: int | None) -> ApiError:
    """A bad ``q``: the 400 names it and, when known, where in it the problem is."""
    exc = ApiError(400, message, name="q")
    if position is not None:
        exc.errors[0]["position"] = position
    return exc


@operation(batch_images, "GET", schema=BATCH_IMAGES, summary="A batch's images", tag="batches",
           responses=responses(ok("ImagePage", "A page of the batch's images."), error(400), error(404)))
def list_batch_images(request):
    """The batch's images by id; the filters of `/api/images` apply too."""
    return _image_list(request, _get(request, Batch, "batch"))


@operation(batch_errors, "GET", schema=BATCH_ERRORS, summary="A batch's errors", tag="batches",
           responses=responses(ok("IngestErrorPage", "A page of the batch's errors."),
                               error(400), error(404)))
def list_batch_errors(request):
    """The files of the batch that could not be imported: which file, which step, why."""
    found = _get(request, Batch, "batch")
    stmt = statement(("errors",), lambda: select(*ERROR_COLUMNS)
                     .where(IngestError.batch_id == bindparam("batch")).order_by(IngestError.id))
    list_etag(request)
    return paginate(request, stmt, Count(found.error_count), Links(request).error,
                    shape=("errors",), params={"batch": found.id})


# -- uploads ------------------------------------------------------------------------------------


def _upload(request, into: Batch | None):
    try:
        result = receive_upload(request, batch=into)
    except UploadError as exc:
        return error_response(request, exc.status, str(exc))
    links = Links(request)
    body = {
        "batch": links.batch(result.batch),
        "created": result.created,
        "jobs": list(result.job_ids),
        "files": [{"name": name, "size": size} for name, size in result.files],
    }
    response = Response(json_body=body, status=201 if result.created else 202,
                        content_type="application/json", charset="utf-8")
    response.location = links.url("sendit_api.batch", result.batch.id)
    return response


UPLOAD_ERRORS = (error(400, "No files, a malformed body, a name too long, or (browser sessions) a "
                            "missing X-CSRF-Token header."),
                 error(411), error(413), error(415), error(503), error(507))


@operation(batches, "POST", summary="Upload files as a new batch", tag="batches",
           request_body=NEW_BATCH_BODY, require_csrf=False,
           responses=responses(ok("Upload", "The batch was created and its files queued for import.",
                                  201, headers={"Location": {"description": "The new batch.",
                                                             "schema": {"type": "string"}}}),
                               *UPLOAD_ERRORS))
def upload_new_batch(request):
    """Upload DICOM files (multipart/form-data, field `files`, repeated) as a
    new batch, named by the optional field `name`.

    The files are streamed to disk as they arrive and queued for the worker;
    follow the batch (its `status` and counts) to see them imported. Limits:
    `sendit.upload.max_file_mb`, `max_request_mb`, `max_files` (413 above).
    Example: `curl -u :PASSWORD -F name=scan -F files=@a.dcm -F files=@b.dcm URL`.
    """
    return _upload(request, None)


@operation(batch_images, "POST", schema=BATCH_ONE, summary="Upload files into a batch",
           tag="batches", request_body=UPLOAD_BODY, require_csrf=False,
           responses=responses(ok("Upload", "The files were queued for import into the batch.", 202),
                               error(404), *UPLOAD_ERRORS))
def upload_into_batch(request):
    """Upload more DICOM files (multipart/form-data, field `files`, repeated)
    into an existing batch; they are queued for the worker like a new upload.
    """
    return _upload(request, _get_batch(request))


# -- images -----------------------------------------------------------------------------------------


@operation(images, "GET", schema=IMAGE_LIST, summary="List images", tag="images",
           responses=responses(ok("ImagePage", "A page of images."), error(400), error(404)))
def list_images(request):
    """Images by id. Filters: `batch`, `modality`, the study, series and SOP
    Instance UIDs, and `q`, a search query over every header field
    (a bad query is a 400 whose `errors` give the position of the problem).
    """
    return _image_list(request)


def image_etag(found, suffix: str = "") -> str:
    """An image never changes once stored; its id may come back after a deletion (SQLite)."""
    stamp = int(found.created_at.timestamp() * 1e6) if found.created_at else 0
    return f"i{found.id}-{stamp}-{found.size}{suffix}"


def _image_etag(request, found, suffix: str = "") -> None:
    response = request.response
    response.etag = image_etag(found, suffix)
    response.last_modified = found.created_at
    response.conditional_response = True


@operation(image, "GET", schema=IMAGE_ONE, summary="An image", tag="images",
           responses=responses(ok("Image", "The image's summary and links."), error(400), error(404)))
def get_image(request):
    """One image: its UIDs, modality, batch, instance number, size and links
    to its header, its file and its batch."""
    found = _get(request, Image, "image")
    _image_etag(request, found)
    return Links(request).image(found)


_IMAGE_HEADER_ROWS = (
    select(HeaderField.tag_path, HeaderField.keyword_path, HeaderField.vr, HeaderField.private_creator,
           HeaderValue.item, HeaderValue.position, HeaderValue.value_text, HeaderValue.value_num)
    .join(HeaderField, HeaderField.id == HeaderValue.field_id)
    .where(HeaderValue.image_id == bindparam("id")))


@operation(image_headers, "GET", schema=IMAGE_ONE, summary="An image's header", tag="images",
           responses=responses(ok("ImageHeaders", "Every indexed element, sequences nested."),
                               error(400), error(404)))
def get_image_headers(request):
    """Every data element of the image, in tag order, sequences with their
    items nested (pixel data and other binary values are not indexed)."""
    found = _get(request, Image, "image")
    rows = request.dbconnection.execute(_IMAGE_HEADER_ROWS, {"id": found.id}).all()
    elements = nest(rows)
    _image_etag(request, found, "-h")
    links = Links(request)
    return {"image": found.id, "element_count": len(elements), "elements": elements,
            "links": {"image": links.url("sendit_api.image", found.id),
                      "file": links.url("sendit_api.image_file", found.id)}}


@operation(image_file, "GET", schema=IMAGE_ONE, summary="An image's DICOM file", tag="images",
           responses=responses(("200", {"description": "The stored DICOM file, streamed.",
                                        "content": {"application/dicom": {
                                            "schema": {"type": "string", "format": "binary"}}}}),
                               ("206", {"description": "The part asked for with a Range header.",
                                        "content": {"application/dicom": {
                                            "schema": {"type": "string", "format": "binary"}}}}),
                               error(400), error(404), error(416)))
def get_image_file(request):
    """The stored DICOM file itself (`application/dicom`), streamed from disk;
    conditional (`If-None-Match`) and range requests work."""
    found = _get(request, Image, "image")
    storage = Path(request.registry.settings["sendit.storage_dir"]).resolve()
    path = (storage / found.stored_path).resolve()
    if storage not in path.parents or not path.is_file():
        raise ApiError(404, f"The stored file of image {found.id} is missing from the storage "
                       f"folder (moved or deleted outside sendit).")
    size = path.stat().st_size
    if request.range is not None and request.range.content_range(size) is None:
        raise ApiError(416, f"The range {request.headers.get('Range')!r} is outside the file "
                       f"({size:,} bytes).", name="Range", location="header")
    response = FileResponse(str(path), request=request, content_type="application/dicom")
    name = re.sub(r"[^0-9A-Za-z._-]", "_", found.sop_instance_uid or f"image-{found.id}")[:120] + ".dcm"
    response.content_disposition = f"attachment; filename=\"{name}\"; filename*=UTF-8''{quote(name)}"
    response.etag = image_etag(found, "-f")
    response.conditional_response = True
    return response


# -- header values ------------------------------------------------------------------------------------


_TAG = re.compile(r"^\(?([0-9A-Fa-f]{4}),?([0-9A-Fa-f]{4})\)?$")


def tag_path_of(field: str) -> str | None:
    """``(0010,0010)``, ``00100010``, ``PatientName`` or dotted paths of them, as
    a tag path (``00081115.0020000E``); ``None`` when a part is none of these."""
    parts = []
    for part in field.split("."):
        match = _TAG.match(part.strip())
        if match:
            parts.append((match.group(1) + match.group(2)).upper())
            continue
        tag = tag_for_keyword(part.strip())
        if tag is None:
            return None
        parts.append(f"{tag:08X}")
    return ".".join(parts)


#: VRs whose values may also be stored as numbers (``value_num``): numbers, dates, times
NUMBER_VRS = frozenset({"DS", "IS", "US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "DA", "TM", "DT"})
#: ... and those whose number is the text read as a number (floats are not: "0.1" is
#: stored as the nearest 32-bit float; times are stored as seconds)
EXACT_NUMBER_VRS = frozenset({"DS", "IS", "US", "SS", "UL", "SL", "UV", "SV", "DA"})
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _plain_number(value: str) -> float | None:
    """``value`` as a number, when it is written as one (no wildcard)."""
    if not _NUMBER.match(value.strip()):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number == number and abs(number) != float("inf") else None


def _fields(request, field: str) -> list[tuple[int, str]]:
    """``(id, VR)`` of the fields a ``field`` parameter names (a keyword path or a tag path)."""
    conditions = [HeaderField.keyword_path == field.strip()]
    tag_path = tag_path_of(field.strip())
    if tag_path:
        conditions.append(HeaderField.tag_path == tag_path)
    return [tuple(row) for row in request.dbconnection.execute(
        select(HeaderField.id, HeaderField.vr).where(or_(*conditions)))]


@operation(headers, "GET", schema=HEADER_LIST, summary="Header values across images", tag="headers",
           responses=responses(ok("HeaderValuePage", "A page of header values."), error(400), error(404)))
def list_header_values(request):
    """Header values of every image, one per value, by image, field, item and
    position. Filters: `field` (keyword, tag or path), `value` (with `field`;
    `*` and `?` are wildcards), `image`, `batch`.

    Counts are exact, except without `field` or `image` over more than 2,000
    images: then `count` is estimated from a sample (`count_exact` false).
    """
    v = request.validated
    hv = HeaderValue
    if "value" in v and "field" not in v:
        raise ApiError(400, "give `field` too: a value alone would scan every header value",
                       name="value")
    fields = _fields(request, v["field"]) if "field" in v else None
    ids = [ident for ident, _ in fields] if fields is not None else None
    columns = (hv.image_id, Image.batch_id, hv.field_id, hv.item, hv.position, hv.value_text,
               hv.value_num)
    key = ("headers", tuple(ids) if ids is not None else None, v.get("value"), v.get("image"),
           v.get("batch"))
    batch_id = v.get("batch")
    # Each shape of filter gets the plan that reads least: see docs/api.md ("Counts").
    if "image" in v:  # one image: its primary key range
        where = [hv.image_id == v["image"]]
        where += [hv.field_id.in_(ids)] if ids is not None else []
        where += [_match(request, hv.value_text, v["value"])] if "value" in v else []
        where += [Image.batch_id == batch_id] if batch_id is not None else []
        stmt = (select(*columns).select_from(hv).join(Image, Image.id == hv.image_id).where(*where)
                .order_by(hv.field_id, hv.item, hv.position))
        count = Count(cached_count(request, key, stmt))
    elif "value" in v:  # the value's index entries, then their images
        match = _match(request, hv.value_text, v["value"])
        text_ids = ids
        terms = [and_(hv.value_num.is_(None), hv.field_id.in_(text_ids), match)]
        number = _plain_number(v["value"])
        exact = [ident for ident, vr in fields if vr in EXACT_NUMBER_VRS] if number is not None else []
        other = [ident for ident, vr in fields if vr in NUMBER_VRS and ident not in exact]
        if exact:  # the number's own index entries (the text must still be the same)
            terms.append(and_(hv.value_num == number, hv.field_id.in_(exact), match))
        if other:
            terms.append(and_(hv.value_num.isnot(None), hv.field_id.in_(other), match))
        where = [or_(*terms)]
        if batch_id is not None:  # "+ 0": filter the matches, do not drive the search by batch
            where.append(Image.batch_id + 0 == batch_id)
        stmt = (select(*columns).select_from(hv).join(Image, Image.id == hv.image_id).where(*where)
                .order_by(hv.image_id, hv.field_id, hv.item, hv.position))
        count = Count(cached_count(request, key, stmt))
        if count.value > SORTED_MATCHES:  # a common value: walk the images rather than sort them all
            on = and_(hv.image_id == Image.id, hv.field_id.in_(ids), match)  # probed by key
            stmt = (select(*columns).select_from(Image).join(hv, on)
                    .where(*([Image.batch_id == batch_id] if batch_id is not None else []))
                    .order_by(Image.id, hv.field_id, hv.item, hv.position))
    elif ids is not None or batch_id is not None:  # images in id order, each probed by key
        on = hv.image_id == Image.id
        if ids is not None:
            on = and_(on, hv.field_id.in_(ids))
        where = [Image.batch_id == batch_id] if batch_id is not None else []
        stmt = (select(*columns).select_from(Image).join(hv, on).where(*where)
                .order_by(Image.id, hv.field_id, hv.item, hv.position))
        if ids is not None and batch_id is None:
            count = Count(cached_count(request, key, stmt, _field_value_count(ids)))
        elif ids is not None:
            count = Count(cached_count(request, key, stmt))
        else:
            count = _scoped_count(request, key, stmt, batch_id)
    else:  # everything, in primary key order
        stmt = (select(*columns).select_from(hv).join(Image, Image.id == hv.image_id)
                .order_by(hv.image_id, hv.field_id, hv.item, hv.position))
        count = _scoped_count(request, key, stmt, None)
    list_etag(request)
    return paginate(request, stmt, count, *_value_serializer(request))


def _field_value_count(ids: list[int]):
    """All the values of some fields: two index-only counts, one per search index."""
    hv = HeaderValue
    text = select(func.count()).select_from(hv).where(hv.field_id.in_(ids), hv.value_num.is_(None))
    number = select(func.count()).select_from(hv).where(hv.field_id.in_(ids), hv.value_num.isnot(None))
    return select(text.scalar_subquery() + number.scalar_subquery())


def _value_serializer(request):
    """``(serialize, prepare)`` for header value rows: the fields of a page are read once."""
    links = Links(request)
    fields: dict[int, Any] = {}

    def prepare(rows) -> None:
        wanted = {row.field_id for row in rows} - fields.keys()
        if wanted:
            fields.update((row.id, row) for row in request.dbconnection.execute(
                select(HeaderField.id, HeaderField.tag_path, HeaderField.keyword_path, HeaderField.vr)
                .where(HeaderField.id.in_(wanted))))

    def serialize(row) -> dict[str, Any]:
        return links.header_value(row, fields[row.field_id])

    return serialize, prepare


def _scoped_count(request, key, stmt, batch_id: int | None) -> Count:
    """Every value of every image (of a batch): exact over few images, else estimated."""
    if batch_id is not None:
        found = request.dbconnection.execute(
            select(Batch.image_count).where(Batch.id == batch_id)).first()
        in_scope = found.image_count if found is not None else 0
    else:
        in_scope = request.sendit_api_totals.images
    if in_scope <= EXACT_HEADER_COUNT_IMAGES:
        return Count(cached_count(request, key, stmt))
    return Count(_estimate(request, key, batch_id, in_scope), exact=False)


def _estimate(request, key, batch_id: int | None, in_scope: int) -> int:
    """Values per image over the newest images in scope, times the images in scope."""
    from .paging import CountCache

    def compute() -> int:
        sample = select(Image.id).order_by(Image.id.desc()).limit(SAMPLE_IMAGES)
        if batch_id is not None:
            sample = sample.where(Image.batch_id == batch_id)
        sample = sample.subquery()
        sampled, values = request.dbconnection.execute(select(
            select(func.count()).select_from(sample).scalar_subquery(),
            select(func.count()).select_from(HeaderValue)
            .where(HeaderValue.image_id.in_(select(sample.c.id))).scalar_subquery())).one()
        return round(values / sampled * in_scope) if sampled else 0

    cache: CountCache = request.registry["sendit_api.counts"]
    return cache.get(("estimate",) + key, request.sendit_api_stamp.key, compute)

