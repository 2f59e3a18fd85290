"""The viewer's panel on the image page and the pixel endpoints it reads.

Endpoints (all behind the lockdown, answers never stored by browsers):

- ``GET /viewer/images/{id}/slice.raw``: the image's own slice (the middle
  frame of a multi-frame image), decoded from its file alone: raw little-endian
  values, described by the ``X-Sendit-Slice`` header (JSON). Fast: it is what
  the browser shows first.
- ``GET /viewer/images/{id}/volume.json``: the description of the image's
  volume (shape, type, spacing, axes in patient space, rescale, window presets,
  the image's own slice, URLs), assembled into the disk cache on first use.
- ``GET /viewer/volumes/{key}/volume.raw``: every voxel, from the cache file.
- ``GET /viewer/volumes/{key}/planes/{axis}/{index}.raw``: one plane (axis 0:
  a slice, 1: a row, 2: a column), cut from the cached volume.

Every failure a user can cause answers JSON ``{"error": reason, "message":
sentence}`` with a 4xx status: no pixel data, undecodable pixels, a missing
file, a volume too large, an unknown or expired volume.
"""
from __future__ import annotations

import json

import numpy as np
from markupsafe import Markup
from pyramid.renderers import render
from pyramid.response import FileResponse, Response
from pyramid.view import view_config
from sqlalchemy import func, select

from sendit_core.models import HeaderField, HeaderValue, Image

from .cache import VolumeCache
from .decode import ViewerError
from .volume import current_index, own_slice, volume_for

CACHE = "sendit_viewer.cache"
PANEL_FIELDS = {"00280010": "rows", "00280011": "columns", "00280008": "frames", "00280002": "samples"}


def cache_of(request) -> VolumeCache:
    return request.registry[CACHE]


def _error(request, status: int, reason: str, message: str) -> Response:
    response = Response(json={"error": reason, "message": message}, status=status)
    response.cache_control = "no-store"
    return response


def _viewer_error(request, exc: ViewerError) -> Response:
    return _error(request, exc.status, exc.reason, exc.message)


def _image(request) -> Image | Response:
    raw = request.matchdict["id"]
    try:
        ident = int(raw)
    except ValueError:
        return _error(request, 404, "not-found", f"“{raw[:40]}” is not an image number.")
    image = request.dbsession.get(Image, ident) if 0 < ident < 2**63 else None
    if image is None:
        return _error(request, 404, "not-found", f"There is no image {ident}: it may have been deleted.")
    return image


def _raw(body: bytes) -> Response:
    response = Response(body=body, content_type="application/octet-stream")
    response.cache_control = "no-store"
    return response


@view_config(route_name="viewer_slice", request_method="GET")
def slice_view(request):
    image = _image(request)
    if isinstance(image, Response):
        return image
    try:
        info, frame = own_slice(image, request.registry.settings)
    except ViewerError as exc:
        return _viewer_error(request, exc)
    response = _raw(np.ascontiguousarray(frame).tobytes())
    response.headers["X-Sendit-Slice"] = json.dumps(info, separators=(",", ":"))
    return response


@view_config(route_name="viewer_info", request_method="GET", renderer="json")
def volume_info(request):
    image = _image(request)
    if isinstance(image, Response):
        return image
    settings = request.registry.settings
    try:
        _, info = volume_for(request.dbsession, image, settings, cache_of(request))
    except ViewerError as exc:
        return _viewer_error(request, exc)
    key = info["key"]
    return dict(
        info, current=current_index(info, image.id),
        prefetch=info["bytes"] <= settings["sendit.viewer.prefetch_mb"] << 20,
        urls={"volume": request.route_path("viewer_volume", key=key),
              "plane": request.route_path("viewer_plane", key=key, axis="AXIS", index="INDEX")},
    )


def _gone(request) -> Response:
    return _error(request, 410, "expired", "This volume is no longer cached (its series changed or the "
                  "cache was cleaned): reload the page.")


@view_config(route_name="viewer_volume", request_method="GET")
def volume_raw(request):
    cache = cache_of(request)
    try:
        folder = cache.path(request.matchdict["key"])
    except KeyError:
        return _gone(request)
    path = folder / "volume.raw"
    if not path.is_file():
        return _gone(request)
    try:
        response = FileResponse(str(path), request=request, content_type="application/octet-stream")
    except OSError:  # evicted a moment ago
        return _gone(request)
    response.cache_control = "no-store"
    return response


@view_config(route_name="viewer_plane", request_method="GET")
def plane_raw(request):
    opened = cache_of(request).open(request.matchdict["key"])
    if opened is None:
        return _gone(request)
    info, voxels = opened
    try:
        axis, index = int(request.matchdict["axis"]), int(request.matchdict["index"])
    except ValueError:
        return _error(request, 400, "bad-plane", "A plane is named by an axis (0, 1 or 2) and an index.")
    if axis not in (0, 1, 2):
        return _error(request, 400, "bad-plane", f"There is no axis {axis}: use 0 (slices), 1 (rows) "
                      "or 2 (columns).")
    size = voxels.shape[axis]
    if not 0 <= index < size:
        return _error(request, 404, "bad-plane", f"Plane {index} is outside the volume: axis {axis} "
                      f"has planes 0 to {size - 1}.")
    plane = voxels[index] if axis == 0 else voxels[:, index] if axis == 1 else voxels[:, :, index]
    return _raw(np.ascontiguousarray(plane).tobytes())


# -- the panel ---------------------------------------------------------------------


def pixel_facts(request, image: Image) -> dict:
    """Rows, columns, frames and samples from the header index (no file read)."""
    rows = request.dbsession.execute(
        select(HeaderField.tag_path, HeaderValue.value_num, HeaderValue.value_text)
        .join(HeaderField, HeaderField.id == HeaderValue.field_id)
        .where(HeaderValue.image_id == image.id, HeaderValue.item == "",
               HeaderField.tag_path.in_(list(PANEL_FIELDS)))).all()
    found = {}
    for row in rows:
        try:
            found[PANEL_FIELDS[row.tag_path]] = int(row.value_num if row.value_num is not None else row.value_text)
        except (TypeError, ValueError):
            continue
    return found


def series_size(request, image: Image) -> int:
    if not image.series_instance_uid:
        return 1
    return request.dbsession.scalar(
        select(func.count()).select_from(Image)
        .where(Image.series_instance_uid == image.series_instance_uid, Image.batch_id == image.batch_id))


def panel_html(request, image: Image) -> Markup:
    found = pixel_facts(request, image)
    pixels = "rows" in found and "columns" in found
    sop_class = None
    if not pixels and image.sop_class_uid:
        from pydicom.uid import UID

        name = UID(image.sop_class_uid).name
        sop_class = name if name != image.sop_class_uid else None
    return Markup(render("sendit_viewer:templates/viewer.jinja2", {
        "image": image, "facts": found, "pixels": pixels, "sop_class": sop_class,
        "series_size": series_size(request, image) if pixels else 0,
    }, request=request))


def includeme(config):
    settings = config.get_settings()
    config.registry[CACHE] = VolumeCache.from_settings(settings)
    config.add_static_view("static-viewer", "sendit_viewer:static", cache_max_age=3600, permission="view")
    config.add_route("viewer_slice", "/viewer/images/{id}/slice.raw")
    config.add_route("viewer_info", "/viewer/images/{id}/volume.json")
    config.add_route("viewer_volume", "/viewer/volumes/{key}/volume.raw")
    config.add_route("viewer_plane", "/viewer/volumes/{key}/planes/{axis}/{index}.raw")
    config.scan("sendit_viewer.views")
