"""Assembling the volume an image belongs to, once, into the disk cache.

The volume of an image is

- the frames of the image itself when it has several (RT Dose, enhanced
  multi-frame, cine), sorted along the slice normal when their positions are
  known;
- otherwise the images of its series *within its batch* that share its
  geometry (rows, columns, colour, orientation), sorted along the slice normal
  from Image Position (Patient) / Image Orientation (Patient), or by Instance
  Number when positions are missing.

Planning reads the image's own header from its file and the others' geometry
from the header index in the database (one query; files are read only for
images the index knows nothing about). Building decodes every slice with
pydicom, a few threads at a time, straight into the cache file.
"""
from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from sqlalchemy import select

from sendit_core.models import HeaderField, HeaderValue, Image

from .cache import VolumeCache
from .decode import (
    ImageFacts, MissingFile, TooLarge, Undecodable, ViewerError, decode_frames, facts, read_dataset,
    wire_array,
)
from .geometry import Layout, Slice, layout, orientation_key, same_orientation

log = logging.getLogger(__name__)

#: Bump when the cache's format or contents change: old entries are rebuilt.
FORMAT = 3

#: Header fields read from the index for every image of a series: tag path -> (name, values).
GEOMETRY_FIELDS = {
    "00280010": ("rows", 1), "00280011": ("columns", 1), "00280002": ("samples", 1),
    "00280008": ("frames", 1), "00200037": ("orientation", 6), "00200032": ("position", 3),
    "00281053": ("slope", 1), "00281052": ("intercept", 1), "00280100": ("bits_allocated", 1),
    "00280103": ("pixel_representation", 1), "00180086": ("echo", 1),
    "00200100": ("temporal", 1), "00200012": ("acquisition", 1),
}


@dataclass
class Member:
    """An image of the series, with the geometry the index knows."""

    id: int
    stored_path: str
    instance: int | None
    values: dict = field(default_factory=dict)

    def get(self, name: str):
        return self.values.get(name)


@dataclass
class Target:
    """What to show for an image: its cache key and what it is made of."""

    key: str
    image_id: int
    batch_id: int
    path: Path
    dataset: Dataset
    facts: ImageFacts
    members: list | None  # database rows of the series, or None for a one-file volume


def stored_file(storage_dir: Path, relpath: str) -> Path:
    """The stored file of an image; a path leaving the storage folder is refused."""
    path = (storage_dir / relpath).resolve()
    root = storage_dir.resolve()
    if root not in path.parents:
        raise MissingFile("The stored path of this image is outside the storage folder.")
    return path


def target_for(db, image: Image, storage_dir: Path) -> Target:
    """Read the image's header and name its volume (no pixels decoded yet)."""
    path = stored_file(storage_dir, image.stored_path)
    dataset = read_dataset(path)
    ref = facts(dataset)
    signature = f"{FORMAT}|{ref.rows}x{ref.columns}|{ref.colour}|{orientation_key(ref.orientation)}"
    if ref.frames > 1 or not image.series_instance_uid:
        family = f"m{image.id}"
        members = None
        digest = _hash(signature, image.id, image.size, image.created_at, image.stored_path)
    else:
        family = "s" + hashlib.sha1(f"{image.batch_id}:{image.series_instance_uid}".encode()).hexdigest()[:16]
        members = db.execute(
            select(Image.id, Image.stored_path, Image.size, Image.created_at, Image.instance_number)
            .where(Image.batch_id == image.batch_id, Image.series_instance_uid == image.series_instance_uid)
            .order_by(Image.id)).all()
        digest = _hash(signature, *(f"{m.id}:{m.size}:{m.created_at}:{m.stored_path}" for m in members))
    return Target(f"{family}-{digest[:24]}", image.id, image.batch_id, path, dataset, ref, members)


def _hash(*parts) -> str:
    return hashlib.sha256("\n".join(str(p) for p in parts).encode("utf-8", "surrogatepass")).hexdigest()


def current_index(info: dict, image_id: int) -> int:
    """The slice showing the image itself (the middle frame of a multi-frame image)."""
    if info.get("multiframe"):
        return info["shape"][0] // 2
    try:
        return info["image_ids"].index(image_id)
    except ValueError:
        return 0


# -- planning ---------------------------------------------------------------------


def _member_geometry(db, target: Target) -> list[Member]:
    """The series' images with their geometry from the header index."""
    members = {row.id: Member(row.id, row.stored_path, row.instance_number) for row in target.members}
    ids = list(members)
    # field ids first, so each image's values are primary-key lookups (image, field)
    fields = dict(db.execute(select(HeaderField.id, HeaderField.tag_path)
                             .where(HeaderField.tag_path.in_(list(GEOMETRY_FIELDS)))).all())
    rows = []
    for start in range(0, len(ids), 900):  # stay below every database's parameter limit
        rows += db.execute(
            select(HeaderValue.image_id, HeaderValue.field_id, HeaderValue.position, HeaderValue.value_num,
                   HeaderValue.value_text)
            .where(HeaderValue.image_id.in_(ids[start:start + 900]), HeaderValue.field_id.in_(list(fields)),
                   HeaderValue.item == "")).all() if fields else []
    collected: dict[int, dict[str, dict[int, float]]] = {}
    for row in rows:
        number = row.value_num
        if number is None:
            try:
                number = float(row.value_text)
            except (TypeError, ValueError):
                continue
        collected.setdefault(row.image_id, {}).setdefault(fields[row.field_id], {})[row.position] = number
    for image_id, fields in collected.items():
        member = members[image_id]
        for tag_path, positions in fields.items():
            name, count = GEOMETRY_FIELDS[tag_path]
            values = [positions.get(i) for i in range(count)]
            if None in values or not all(math.isfinite(v) for v in values):
                continue
            member.values[name] = values if count > 1 else values[0]
    return list(members.values())


def _from_file(member: Member, storage_dir: Path) -> None:
    """Fill a member's geometry from its file (images the index knows nothing of)."""
    try:
        ds = read_dataset(stored_file(storage_dir, member.stored_path))
        found = facts(ds)
    except ViewerError:
        member.values["unusable"] = True
        return
    member.values.update(rows=found.rows, columns=found.columns, samples=3 if found.colour else 1,
                         frames=found.frames, orientation=found.orientation, position=found.position,
                         slope=found.slope, intercept=found.intercept)


def _compatible(member: Member, ref: ImageFacts) -> bool:
    return (not member.get("unusable")
            and int(member.get("rows") or 0) == ref.rows and int(member.get("columns") or 0) == ref.columns
            and (int(member.get("samples") or 1) == 3) == ref.colour
            and int(member.get("frames") or 1) == 1
            and same_orientation(member.get("orientation"), ref.orientation))


def _one_per_position(members: list[Member], ref_member: Member, notes: list[str]) -> list[Member]:
    """Several acquisitions, echoes or time points at the same positions: keep the
    image's own (same echo, temporal position and acquisition number)."""
    positions = Counter(tuple(round(v, 3) for v in m.get("position")) for m in members if m.get("position"))
    if not positions or max(positions.values()) < 2:
        return members
    same = [m for m in members if all(m.get(k) == ref_member.get(k) for k in ("echo", "temporal", "acquisition"))]
    seen, kept = set(), []
    for m in sorted(same, key=lambda m: (m.id != ref_member.id, m.instance or 0, m.id)):
        where = tuple(round(v, 3) for v in m.get("position")) if m.get("position") else ("id", m.id)
        if where not in seen:
            seen.add(where)
            kept.append(m)
    left = len(members) - len(kept)
    if left:
        notes.append(f"{left} images of this series repeat positions (other echoes, time points or "
                     f"acquisitions) and are left out of the volume.")
    return kept


def plan_series(db, target: Target, storage_dir: Path) -> tuple[Layout, list[Member], list[str]]:
    ref = target.facts
    members = _member_geometry(db, target)
    for member in members:
        if member.get("rows") is None:
            _from_file(member, storage_dir)
    by_id = {m.id: m for m in members}
    me = by_id[target.image_id]
    # the file is the truth for the image itself
    me.values.update(rows=ref.rows, columns=ref.columns, samples=3 if ref.colour else 1, frames=1,
                     orientation=ref.orientation, position=ref.position)
    usable = [m for m in members if _compatible(m, ref)]
    notes = []
    if len(usable) < len(members):
        left = len(members) - len(usable)
        notes.append(f"{left} image{'s' if left > 1 else ''} of this series "
                     f"{'have' if left > 1 else 'has'} another size, colour or orientation and "
                     f"{'are' if left > 1 else 'is'} not part of this volume.")
    usable = _one_per_position(usable, me, notes)
    slices = [Slice(m.id, m.get("position"), m.instance, m.id) for m in usable]
    lay = layout(slices, ref.orientation, ref.spacing, ref.thickness)
    order = {m.id: m for m in usable}
    return lay, [order[s.source] for s in lay.slices], notes + lay.notes


def plan_frames(target: Target) -> Layout:
    ref = target.facts
    positions = ref.frame_positions or [None] * ref.frames
    slices = [Slice(i, positions[i], i, i) for i in range(ref.frames)]
    if ref.frame_positions is None:
        origin = ref.position
        slices = [Slice(i, None, i, i) for i in range(ref.frames)]
        lay = layout(slices, ref.orientation, ref.spacing, ref.thickness)
        lay.notes = ([] if ref.orientation is None else
                     ["The frames carry no positions: they are shown in order, "
                      f"{lay.spacing[0]:g} mm apart."])
        if origin is not None:
            lay.origin = [float(v) for v in origin]
        return lay
    return layout(slices, ref.orientation, ref.spacing, ref.thickness)


# -- building ---------------------------------------------------------------------


def _itemsize(bits_allocated) -> int:
    bits = int(bits_allocated or 16)
    return 1 if bits <= 8 else 2 if bits <= 16 else 4


def build(db, target: Target, settings: dict, cache: VolumeCache) -> dict:
    """Decode every slice into a new cache entry; returns its description."""
    started = time.monotonic()
    storage_dir = Path(settings["sendit.storage_dir"])
    ref = target.facts
    if target.members is None:
        lay = plan_frames(target)
        members, notes = None, list(lay.notes)
    else:
        lay, members, notes = plan_series(db, target, storage_dir)
    depth = len(lay.slices)
    channels = 3 if ref.colour else 1
    estimate = depth * ref.rows * ref.columns * channels * _itemsize(target.dataset.get("BitsAllocated"))
    limit = settings["sendit.viewer.max_volume_mb"] << 20
    if estimate > limit:
        raise TooLarge(f"The volume of this image is too large to assemble ({estimate >> 20:,} MB; "
                       f"the limit is sendit.viewer.max_volume_mb = {limit >> 20:,}): only its own "
                       f"slice is shown.")
    if members is None:
        pixels = decode_frames(target.dataset)  # all frames at once: one file
        first = wire_array(pixels[:1])[0]
        rescales = [(ref.slope, ref.intercept)]
    else:
        first = None
        rescales = {(m.get("slope") if m.get("slope") is not None else None,
                     m.get("intercept") if m.get("intercept") is not None else None) for m in members}
        if rescales == {(None, None)}:
            rescales = {(ref.slope, ref.intercept)}
        rescales = [(s if s is not None else 1.0, i if i is not None else 0.0) for s, i in rescales]
        kinds = {(m.get("bits_allocated"), m.get("pixel_representation")) for m in members}
        if len(kinds) > 1:
            rescales.append(("mixed", "types"))
    modality_values = len(rescales) > 1 and not ref.colour  # store rescaled values as float32
    slope, intercept = (1.0, 0.0) if modality_values else rescales[0]
    if modality_values:
        notes.append("The slices have different rescale slopes or intercepts; values are stored rescaled.")

    if first is None:  # decode the image itself first: it fixes the volume's type
        own = decode_frames(target.dataset)[0]
        first = wire_array(own[None])[0]
    dtype = np.dtype(np.float32) if modality_values else first.dtype
    shape = (depth, ref.rows, ref.columns) + ((3,) if ref.colour else ())
    folder = cache.new_entry(target.key)
    try:
        voxels = np.memmap(folder / "volume.raw", dtype=dtype.newbyteorder("<"), mode="w+", shape=shape)
        if members is None:
            bounds, failed = _fill_frames(voxels, pixels, lay, slope, intercept, modality_values)
        else:
            bounds, failed = _fill_series(voxels, members, storage_dir, target, first,
                                          modality_values, settings["sendit.viewer.threads"])
        voxels.flush()
        del voxels
        if failed:
            notes.append(f"{len(failed)} slice{'s' if len(failed) > 1 else ''} could not be decoded "
                         f"and {'are' if len(failed) > 1 else 'is'} shown blank: {failed[0]}")
        low = min(b[0] for b in bounds) if bounds else 0.0
        high = max(b[1] for b in bounds) if bounds else 0.0
        info = {
            "version": FORMAT, "key": target.key, "batch": target.batch_id,
            "shape": list(shape[:3]), "channels": channels, "dtype": dtype.name,
            "spacing": lay.spacing, "origin": lay.origin, "axes": lay.axes, "oriented": lay.oriented,
            "rescale": {"slope": slope, "intercept": intercept}, "unit": ref.unit,
            "windows": [] if ref.colour else ref.windows, "invert": ref.invert, "bits": ref.bits,
            "raw_range": [float(low), float(high)],
            "range": sorted([float(low) * slope + intercept, float(high) * slope + intercept]),
            "multiframe": members is None,
            "image_ids": [m.id for m in members] if members is not None else [target.image_id],
            "spacing_known": ref.spacing_known, "notes": notes,
            "bytes": int(np.prod(shape)) * dtype.itemsize,
            "build_seconds": round(time.monotonic() - started, 3),
        }
        if not ref.spacing_known:
            info["notes"].append("The header gives no pixel spacing: pixels are drawn square.")
        cache.commit(target.key, folder, info)
    except BaseException:
        cache.discard(folder)
        raise
    log.info("viewer: built %s (%s, %d MB) in %.2f s", target.key, "x".join(map(str, shape)),
             info["bytes"] >> 20, info["build_seconds"])
    return info


def _bounds(array: np.ndarray) -> tuple[float, float]:
    if array.size == 0:
        return 0.0, 0.0
    if array.dtype.kind == "f":
        finite = array[np.isfinite(array)]
        return (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    return float(array.min()), float(array.max())


def _fill_frames(voxels, pixels, lay: Layout, slope, intercept, modality_values):
    bounds = []
    for k, sl in enumerate(lay.slices):
        frame = pixels[sl.source]
        frame = (frame * slope + intercept).astype(np.float32) if modality_values else wire_array(frame)
        voxels[k] = frame
        bounds.append(_bounds(frame))
    return bounds, []


def _fill_series(voxels, members: list[Member], storage_dir: Path, target: Target, own: np.ndarray,
                 modality_values: bool, threads: int):
    expect = voxels.shape[1:]

    def one(k: int, member: Member):
        try:
            if member.id == target.image_id:
                frame = own
                if modality_values:
                    frame = frame * target.facts.slope + target.facts.intercept
            else:
                ds = read_dataset(stored_file(storage_dir, member.stored_path))
                frame = decode_frames(ds)[0]
                if modality_values:
                    found = facts(ds)
                    frame = frame * found.slope + found.intercept
            if frame.shape != expect:
                raise Undecodable(f"its pixels are {frame.shape}, not {expect}")
            frame = frame.astype(np.float32) if modality_values else frame
            voxels[k] = frame
            return _bounds(frame), None
        except ViewerError as exc:
            log.warning("viewer: slice %d (image %s) not decoded: %s", k, member.id, exc.message)
            return None, f"image {member.id}: {exc.message}"

    with ThreadPoolExecutor(max(1, threads)) as pool:
        results = list(pool.map(one, range(len(members)), members))
    bounds = [b for b, _ in results if b is not None]
    failed = [why for _, why in results if why is not None]
    return bounds, failed


def volume_for(db, image: Image, settings: dict, cache: VolumeCache) -> tuple[Target, dict]:
    """The image's volume description, built on first use (one build per key at a time)."""
    target = target_for(db, image, Path(settings["sendit.storage_dir"]))
    info = cache.describe(target.key)
    if info is None:
        with cache.building(target.key):
            info = cache.describe(target.key) or build(db, target, settings, cache)
    return target, info


# -- the image's own slice ----------------------------------------------------------


def own_slice(image: Image, settings: dict) -> tuple[dict, np.ndarray]:
    """The image's own slice (the middle frame of a multi-frame image), decoded
    from its file alone, with a one-slice description in the volume's terms."""
    path = stored_file(Path(settings["sendit.storage_dir"]), image.stored_path)
    dataset = read_dataset(path)
    ref = facts(dataset)
    index, origin = 0, ref.position
    if ref.frames > 1:
        lay = plan_frames(Target("", image.id, image.batch_id, path, dataset, ref, None))
        middle = lay.slices[len(lay.slices) // 2]
        index, origin = middle.source, (middle.position or lay.origin)
        try:
            from pydicom.pixels import pixel_array

            frame = pixel_array(dataset, index=index)
            if ref.colour and frame.ndim == 2:
                raise ValueError("palette")
            if str(dataset.get("PhotometricInterpretation", "")).upper() == "PALETTE COLOR":
                raise ValueError("palette")
        except Exception:  # noqa: BLE001 - fall back to decoding every frame
            frame = decode_frames(dataset)[index]
    else:
        frame = decode_frames(dataset)[0]
    frame = wire_array(frame)
    single = layout([Slice(0, origin)], ref.orientation, ref.spacing, ref.thickness)
    low, high = _bounds(frame)
    info = {
        "shape": [1, ref.rows, ref.columns], "channels": 3 if ref.colour else 1, "dtype": frame.dtype.name,
        "spacing": single.spacing, "origin": single.origin, "axes": single.axes, "oriented": single.oriented,
        "rescale": {"slope": ref.slope, "intercept": ref.intercept}, "unit": ref.unit,
        "windows": [] if ref.colour else ref.windows, "invert": ref.invert, "bits": ref.bits,
        "raw_range": [low, high],
        "range": sorted([low * ref.slope + ref.intercept, high * ref.slope + ref.intercept]),
        "current": 0, "provisional": True, "multiframe": ref.frames > 1, "frames": ref.frames,
    }
    return info, frame
