"""Objects as JSON: batches, images, ingest errors and header values, with their links.

Lists serialize up to a thousand rows per request, so links are made from
URL templates built once per request (a route URL per link would cost more
than the query).
"""
from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

from sendit_core.models import Batch, Image, IngestError

#: image columns a summary shows (read as plain rows, not ORM objects)
IMAGE_COLUMNS = (Image.id, Image.batch_id, Image.sop_instance_uid, Image.sop_class_uid,
                 Image.study_instance_uid, Image.series_instance_uid, Image.modality,
                 Image.instance_number, Image.transfer_syntax_uid, Image.size, Image.original_name,
                 Image.created_at)
BATCH_COLUMNS = (Batch.id, Batch.name, Batch.status, Batch.source, Batch.image_count,
                 Batch.error_count, Batch.pending_count, Batch.total_bytes, Batch.created_at,
                 Batch.updated_at, Batch.finished_at)
ERROR_COLUMNS = (IngestError.id, IngestError.batch_id, IngestError.path, IngestError.step,
                 IngestError.message, IngestError.created_at)
_IMAGE_WIDTH = len(IMAGE_COLUMNS)
_ID = "999999999999"


def iso(moment: datetime | None) -> str | None:
    """RFC 3339 with its offset (SQLite hands back naive UTC datetimes)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.isoformat()


def finite(number: float | None) -> float | None:
    """A number JSON can carry (never NaN or infinity)."""
    return number if number is None or math.isfinite(number) else None


class Links:
    """Absolute URLs of the API's objects (and of their pages, when a plugin serves them)."""

    #: the links each kind of object carries: (key, route, id attribute of the row)
    BATCH = (("self", "sendit_api.batch", "id"), ("images", "sendit_api.batch_images", "id"),
             ("errors", "sendit_api.batch_errors", "id"), ("html", "batch", "id"))
    IMAGE = (("self", "sendit_api.image", "id"), ("batch", "sendit_api.batch", "batch_id"),
             ("headers", "sendit_api.image_headers", "id"), ("file", "sendit_api.image_file", "id"),
             ("html", "image", "id"))
    ERROR = (("batch", "sendit_api.batch", "batch_id"),)
    VALUE = (("image", "sendit_api.image", "image_id"), ("headers", "sendit_api.image_headers", "image_id"))

    def __init__(self, request):
        self.request = request
        # kept per app and per application URL (scheme, host, prefix): a route URL costs
        # more than a small query; bounded, since the Host header is the client's
        known = request.registry.setdefault("sendit_api.link_templates", {})
        if len(known) > 256:
            known.clear()
        self._templates: dict[str, tuple[str, str] | None] = known.setdefault(
            request.application_url, {})
        self._sets: dict[tuple, list] = {}
        self._image_templates: list[tuple[str, str] | None] | None = None
        self._times: dict[datetime | None, str | None] = {}

    def template(self, route: str) -> tuple[str, str] | None:
        """``route``'s URL around its id, or ``None`` when no plugin serves that route."""
        if route not in self._templates:
            try:
                head, _, tail = self.request.route_url(route, id=_ID).partition(_ID)
                self._templates[route] = (head, tail)
            except KeyError:
                self._templates[route] = None
        return self._templates[route]

    def url(self, route: str, ident: int) -> str | None:
        template = self.template(route)
        return None if template is None else f"{template[0]}{ident}{template[1]}"

    def links(self, row: Any, spec: tuple) -> dict[str, str | None]:
        found = self._sets.get(spec)
        if found is None:
            found = self._sets[spec] = [(key, attr, self.template(route)) for key, route, attr in spec]
        return {key: None if t is None else f"{t[0]}{getattr(row, attr)}{t[1]}" for key, attr, t in found}

    def batch(self, row: Any) -> dict[str, Any]:
        status = row.status.value if hasattr(row.status, "value") else str(row.status)
        return {
            "id": row.id, "name": row.name, "status": status, "source": row.source,
            "image_count": row.image_count, "error_count": row.error_count,
            "pending_count": row.pending_count, "total_bytes": row.total_bytes,
            "created_at": iso(row.created_at), "updated_at": iso(row.updated_at),
            "finished_at": iso(row.finished_at),
            "links": self.links(row, self.BATCH),
        }

    def image(self, row: Any) -> dict[str, Any]:
        """An image row of :data:`IMAGE_COLUMNS` (more columns after them are ignored).

        The hot loop of every image list: the row is unpacked by position and
        its links formatted inline, which takes a third of the time of reading
        thirteen attributes of a SQLAlchemy row and looping over the links.
        """
        (ident, batch, sop, sop_class, study, series, modality, number, syntax, size, name,
         created) = row[:_IMAGE_WIDTH]
        if self._image_templates is None:
            self._image_templates = [self.template(route) for _, route, _ in self.IMAGE]
        own, of_batch, headers, file, html = self._image_templates  # the keys of IMAGE, in order
        created_at = self._times.get(created)
        if created_at is None:  # the images of one import share a few times: format each once
            created_at = self._times[created] = iso(created)
        return {
            "id": ident, "batch": batch, "sop_instance_uid": sop, "sop_class_uid": sop_class,
            "study_instance_uid": study, "series_instance_uid": series, "modality": modality,
            "instance_number": number, "transfer_syntax_uid": syntax, "size": size,
            "original_name": name, "created_at": created_at,
            "links": {"self": own and f"{own[0]}{ident}{own[1]}",
                      "batch": of_batch and f"{of_batch[0]}{batch}{of_batch[1]}",
                      "headers": headers and f"{headers[0]}{ident}{headers[1]}",
                      "file": file and f"{file[0]}{ident}{file[1]}",
                      "html": html and f"{html[0]}{ident}{html[1]}"},
        }

    def error(self, row: Any) -> dict[str, Any]:
        return {
            "id": row.id, "batch": row.batch_id, "path": row.path, "step": row.step,
            "message": row.message, "created_at": iso(row.created_at),
            "links": self.links(row, self.ERROR),
        }

    def header_value(self, row: Any, field: Any) -> dict[str, Any]:
        """A value row (image, item, position, value) with its field (paths, VR)."""
        return {
            "image": row.image_id, "batch": row.batch_id,
            "tag_path": field.tag_path, "keyword_path": field.keyword_path, "vr": field.vr,
            "item": row.item, "position": row.position, "value": row.value_text,
            "number": finite(row.value_num),
            "links": self.links(row, self.VALUE),
        }
