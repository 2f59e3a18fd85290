"""The OpenAPI 3.0 document, built from the Cornice services this app registered.

Each view is declared with :func:`operation`, which registers it on its
Cornice service and records what the document needs: a summary, the
description (the view's docstring), the colander schema of its path and query
parameters, its request body and its responses. :func:`build` walks the
services of ``config.registry.cornice_services`` (only this app's, only this
plugin's: Cornice's own service list is process-global) and turns parameters
into OpenAPI parameters, so the document cannot drift from the validation.

Response bodies are JSON Schemas under ``components/schemas``; errors share
one ``Error`` schema. The document is OpenAPI 3.0.3 (what the bundled
Swagger UI 4 renders fully): ``nullable`` marks values that may be ``null``.
"""
from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Any, Callable

import colander

from . import MAX_PAGE_SIZE, PAGE_SIZE
from .params import CommaList, validate, validation_errors

PREFIX = "sendit_api."
TAGS = [
    {"name": "batches", "description": "Sets of images that arrived together, their uploads and errors."},
    {"name": "images", "description": "Stored DICOM files, their header elements and the files themselves."},
    {"name": "headers", "description": "Header values across images."},
]


@dataclass
class Operation:
    summary: str
    tag: str
    responses: dict[str, Any]
    schema: colander.SchemaNode | None = None
    request_body: dict[str, Any] | None = None
    description: str = ""
    operation_id: str = ""


def operation(service, method: str, *, summary: str, tag: str, responses: dict[str, Any],
              schema: colander.SchemaNode | None = None, request_body: dict | None = None,
              **view_args) -> Callable:
    """Register a view on a Cornice service and record its documentation."""

    def register(view: Callable) -> Callable:
        doc = Operation(summary, tag, responses, schema, request_body,
                        description=inspect.cleandoc(view.__doc__ or ""), operation_id=view.__name__)
        view.__openapi__ = doc
        service.add_view(method, view, schema=schema, validators=(validate,) if schema else (),
                         error_handler=validation_errors, renderer="json", **view_args)
        return view

    return register


# -- schemas ------------------------------------------------------------------------------


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


URL = {"type": "string", "format": "uri"}
TIME = {"type": "string", "format": "date-time"}
ID = {"type": "integer", "format": "int32", "minimum": 1}


def _page(item: str, description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "required": ["count", "count_exact", "page", "page_size", "next", "previous", "results"],
        "properties": {
            "count": {"type": "integer", "minimum": 0,
                      "description": "How many results there are (an estimate when count_exact is false)."},
            "count_exact": {"type": "boolean",
                            "description": "False when count is an estimate (only the header values "
                                           "of very many images, unfiltered)."},
            "page": {"type": "integer", "minimum": 1},
            "page_size": {"type": "integer", "minimum": 1},
            "next": nullable({**URL, "description": "The next page, or null on the last one."}),
            "previous": nullable({**URL, "description": "The previous page, or null on the first."}),
            "results": {"type": "array", "items": ref(item)},
        },
    }


SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "description": "Every error under /api/ (never an HTML page).",
        "required": ["status", "error", "message"],
        "properties": {
            "status": {"type": "integer", "description": "The HTTP status code."},
            "error": {"type": "string", "description": "The status's name."},
            "message": {"type": "string", "description": "What went wrong, for people."},
            "errors": {
                "type": "array",
                "description": "For a bad request: each parameter at fault and why.",
                "items": {
                    "type": "object",
                    "required": ["location", "name", "description"],
                    "properties": {
                        "location": {"type": "string", "enum": ["path", "querystring", "body", "header"]},
                        "name": nullable({"type": "string"}),
                        "description": {"type": "string"},
                        "position": nullable({"type": "integer",
                                              "description": "For q: where in the query the problem is "
                                                             "(0-based)."}),
                    },
                },
            },
        },
    },
    "Batch": {
        "type": "object",
        "required": ["id", "name", "status", "source", "image_count", "error_count",
                     "pending_count", "total_bytes", "created_at", "updated_at", "finished_at", "links"],
        "properties": {
            "id": ID,
            "name": {"type": "string"},
            "status": {"type": "string", "enum": ["QUEUED", "PROCESSING", "DONE", "EMPTY", "ERROR"],
                       "description": "QUEUED: waiting for a worker; PROCESSING: being imported; DONE: "
                                      "processed (some files may have failed); EMPTY: nothing could be "
                                      "imported; ERROR: every file failed."},
            "source": {"type": "string", "description": "Where it came from: upload, watcher, cli, ..."},
            "image_count": {"type": "integer", "minimum": 0},
            "error_count": {"type": "integer", "minimum": 0},
            "pending_count": {"type": "integer", "description": "Files waiting to be imported."},
            "total_bytes": {"type": "integer", "minimum": 0},
            "created_at": TIME,
            "updated_at": TIME,
            "finished_at": nullable(TIME),
            "links": {
                "type": "object",
                "required": ["self", "images", "errors"],
                "properties": {"self": URL, "images": URL, "errors": URL,
                               "html": nullable({**URL, "description": "The batch's page."})},
            },
        },
    },
    "Image": {
        "type": "object",
        "required": ["id", "batch", "sop_instance_uid", "sop_class_uid", "study_instance_uid",
                     "series_instance_uid", "modality", "instance_number", "transfer_syntax_uid",
                     "size", "original_name", "created_at", "links"],
        "properties": {
            "id": ID,
            "batch": {**ID, "description": "The batch's id."},
            "sop_instance_uid": {"type": "string"},
            "sop_class_uid": nullable({"type": "string"}),
            "study_instance_uid": nullable({"type": "string"}),
            "series_instance_uid": nullable({"type": "string"}),
            "modality": nullable({"type": "string"}),
            "instance_number": nullable({"type": "integer"}),
            "transfer_syntax_uid": nullable({"type": "string"}),
            "size": {"type": "integer", "minimum": 0, "description": "The stored file's size in bytes."},
            "original_name": nullable({"type": "string", "description": "The file's name as it arrived."}),
            "created_at": TIME,
            "links": {
                "type": "object",
                "required": ["self", "batch", "headers", "file"],
                "properties": {"self": URL, "batch": URL, "headers": URL, "file": URL,
                               "html": nullable({**URL, "description": "The image's page."})},
            },
        },
    },
    "IngestError": {
        "type": "object",
        "description": "A file that could not be imported: which file, which step, why.",
        "required": ["id", "batch", "path", "step", "message", "created_at", "links"],
        "properties": {
            "id": ID,
            "batch": ID,
            "path": {"type": "string", "description": "The file as its source named it."},
            "step": {"type": "string", "description": "The pipeline step that failed: read, parse, store, ..."},
            "message": {"type": "string"},
            "created_at": TIME,
            "links": {"type": "object", "required": ["batch"], "properties": {"batch": URL}},
        },
    },
    "HeaderElement": {
        "type": "object",
        "description": "One data element; a sequence (VR SQ) has items, each a list of elements.",
        "required": ["tag", "keyword", "vr", "tag_path", "keyword_path", "private_creator"],
        "properties": {
            "tag": {"type": "string", "example": "00100010", "description": "Group and element, 8 hex digits."},
            "keyword": {"type": "string", "example": "PatientName",
                        "description": "The DICOM keyword; private and unknown elements: their tag as (gggg,eeee)."},
            "vr": {"type": "string"},
            "tag_path": {"type": "string", "example": "00081115.0020000E",
                         "description": "The tags from the top level, joined by dots."},
            "keyword_path": {"type": "string", "example": "ReferencedSeriesSequence.SeriesInstanceUID"},
            "private_creator": nullable({"type": "string"}),
            "values": {"type": "array", "items": {"type": "string"},
                       "description": "Not for sequences: the values as text, in order (empty for an "
                                      "empty element; text longer than 1,024 characters is cut)."},
            "items": {"type": "array", "description": "Sequences only: the items, in order.",
                      "items": {"type": "array", "items": ref("HeaderElement")}},
        },
    },
    "ImageHeaders": {
        "type": "object",
        "required": ["image", "element_count", "elements", "links"],
        "properties": {
            "image": ID,
            "element_count": {"type": "integer", "description": "Top-level elements."},
            "elements": {"type": "array", "items": ref("HeaderElement")},
            "links": {"type": "object", "required": ["image", "file"],
                      "properties": {"image": URL, "file": URL}},
        },
    },
    "HeaderValue": {
        "type": "object",
        "description": "One value of one element of one image.",
        "required": ["image", "batch", "tag_path", "keyword_path", "vr", "item", "position",
                     "value", "number", "links"],
        "properties": {
            "image": ID,
            "batch": ID,
            "tag_path": {"type": "string"},
            "keyword_path": {"type": "string"},
            "vr": {"type": "string"},
            "item": {"type": "string", "description": "Sequence item indexes along the path: \"\" at the "
                                                      "top level, \"0\", \"0.2\", ..."},
            "position": {"type": "integer", "description": "Among the values of a multi-valued element, 0-based."},
            "value": nullable({"type": "string"}),
            "number": nullable({"type": "number", "description": "The value as a number, for numbers, "
                                                                 "dates (YYYYMMDD) and times."}),
            "links": {"type": "object", "required": ["image", "headers"],
                      "properties": {"image": URL, "headers": URL}},
        },
    },
    "Upload": {
        "type": "object",
        "description": "Files received and queued for import (the import itself runs in a worker: "
                       "follow the batch's status and counts).",
        "required": ["batch", "created", "jobs", "files"],
        "properties": {
            "batch": ref("Batch"),
            "created": {"type": "boolean", "description": "True when this upload created the batch."},
            "jobs": {"type": "array", "items": {"type": "integer"}, "description": "Import jobs queued."},
            "files": {"type": "array", "items": {
                "type": "object", "required": ["name", "size"],
                "properties": {"name": {"type": "string"}, "size": {"type": "integer", "minimum": 0}}}},
        },
    },
    "BatchPage": _page("Batch", "A page of batches, by id."),
    "ImagePage": _page("Image", "A page of images, by id."),
    "IngestErrorPage": _page("IngestError", "A page of a batch's errors, by id."),
    "HeaderValuePage": _page("HeaderValue", "A page of header values, by image, field, item and position."),
}

_ERROR_TEXT = {
    "400": "A parameter is malformed or out of range: `errors` names each one and why.",
    "401": "No credentials (or wrong ones): send HTTP Basic with the lockdown password, or log in.",
    "404": "No such object (or page).",
    "409": "The batch is still being imported.",
    "411": "The upload has no Content-Length.",
    "413": "The upload is larger than the limits (`sendit.upload.*`).",
    "415": "The upload is not multipart/form-data.",
    "416": "The Range asked for is outside the file.",
    "503": "The database is busy; nothing was kept: try again.",
    "507": "The server's disk is full; nothing was kept.",
}


def error(code: int, text: str | None = None) -> tuple[str, dict[str, Any]]:
    return str(code), {"description": text or _ERROR_TEXT[str(code)],
                       "content": {"application/json": {"schema": ref("Error")}}}


def ok(schema: str, text: str, code: int = 200, headers: dict | None = None) -> tuple[str, dict[str, Any]]:
    response: dict[str, Any] = {"description": text,
                                "content": {"application/json": {"schema": ref(schema)}}}
    if headers:
        response["headers"] = headers
    return str(code), response


def responses(*pairs: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    result.setdefault("401", error(401)[1])
    return result


# -- parameters ---------------------------------------------------------------------------


def _schema_of(node: colander.SchemaNode, settings: dict[str, Any]) -> dict[str, Any]:
    typ = node.typ
    if isinstance(typ, CommaList):
        schema = typ.openapi(node)
    elif isinstance(typ, colander.Int):
        schema = {"type": "integer", "format": "int32"}
    else:
        schema = {"type": "string"}
    for validator in _validators(node.validator):
        if isinstance(validator, colander.Range):
            if validator.min is not None:
                schema["minimum"] = validator.min
            if validator.max is not None:
                schema["maximum"] = validator.max
        elif isinstance(validator, colander.Length):
            if validator.max is not None:
                schema["maxLength"] = validator.max
        elif isinstance(validator, colander.Regex):
            schema["pattern"] = validator.match_object.pattern
    if node.name == "page_size":
        schema["default"] = settings[PAGE_SIZE]
        schema["maximum"] = settings[MAX_PAGE_SIZE]
    elif node.missing not in (colander.required, colander.drop, colander.null):
        schema["default"] = node.missing
    return schema


def _validators(validator) -> list:
    if validator is None:
        return []
    if isinstance(validator, colander.All):
        return [v for inner in validator.validators for v in _validators(inner)]
    return [validator]


def parameters(schema: colander.SchemaNode | None, settings: dict[str, Any]) -> list[dict[str, Any]]:
    if schema is None:
        return []
    result = []
    for location, place in (("path", "path"), ("querystring", "query")):
        part = schema.get(location)
        if part is None:
            continue
        for node in part.children:
            parameter = {"name": node.name, "in": place, "description": node.description or "",
                         "required": place == "path", "schema": _schema_of(node, settings)}
            if isinstance(node.typ, CommaList):
                parameter.update(style="form", explode=False)
            if "example" in node.__dict__:
                parameter["example"] = node.example
            result.append(parameter)
    return result


# -- the document ---------------------------------------------------------------------------


def build(registry, settings: dict[str, Any], base_path: str = "") -> dict[str, Any]:
    """The OpenAPI document of this app's ``sendit_api`` services."""
    paths: dict[str, Any] = {}
    services = sorted((s for s in registry.cornice_services.values() if s.name.startswith(PREFIX)),
                      key=lambda s: s.path)
    for service in services:
        item: dict[str, Any] = {}
        for method, view, _args in service.definitions:
            doc: Operation | None = getattr(view, "__openapi__", None)
            if doc is None or method == "HEAD":
                continue
            entry: dict[str, Any] = {
                "tags": [doc.tag],
                "summary": doc.summary,
                "description": doc.description,
                "operationId": doc.operation_id,
                "parameters": parameters(doc.schema, settings),
                "responses": copy.deepcopy(doc.responses),
            }
            if doc.request_body:
                entry["requestBody"] = copy.deepcopy(doc.request_body)
            item[method.lower()] = entry
        if item:
            paths[service.path] = item
    document = {
        "openapi": "3.0.3",
        "info": {
            "title": "sendit API",
            "version": "1",
            "description": (
                "The REST API of sendit, a local DICOM ingest-and-browse server.\n\n"
                "**Authentication**: every call needs the lockdown password, as HTTP Basic "
                "(any user name) or through a browser session logged in at `/login`. In this "
                "page, a logged-in session is used as it is; *Authorize* takes Basic credentials.\n\n"
                "**Lists** are paginated: `count`, `next`, `previous` (absolute URLs or null) and "
                f"`results`; `?page=N` (1-based) and `?page_size=M` (default {settings[PAGE_SIZE]}, "
                f"at most {settings[MAX_PAGE_SIZE]}).\n\n"
                "**Errors** are JSON everywhere under /api/: `status`, `error`, `message`, and for "
                "a bad parameter `errors` naming each one."),
        },
        "tags": TAGS,
        "security": [{"basicAuth": []}, {"sessionCookie": []}],
        "paths": paths,
        "components": {
            "schemas": copy.deepcopy(SCHEMAS),
            "securitySchemes": {
                "basicAuth": {"type": "http", "scheme": "basic",
                              "description": "Any user name, the lockdown password."},
                "sessionCookie": {"type": "apiKey", "in": "cookie", "name": "sendit_session",
                                  "description": "The session of a browser logged in at /login "
                                                 "(state-changing calls also need its CSRF token in "
                                                 "the X-CSRF-Token header)."},
            },
        },
    }
    if base_path:  # served under a prefix (SCRIPT_NAME): the paths are relative to it
        document["servers"] = [{"url": base_path}]
    return document
