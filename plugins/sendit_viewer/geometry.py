"""Where slices sit in the patient: sorting them and describing the volume's axes.

Patient coordinates are DICOM's (LPS: x to the patient's left, y to the back,
z to the head). A volume is stored as ``[slice][row][column]``: voxel
``(k, j, i)`` sits at ``origin + i*sx*row_dir + j*sy*col_dir + k*sz*normal``
where ``row_dir`` and ``col_dir`` are the Image Orientation (Patient) cosines
and ``normal = row_dir x col_dir``; slices are sorted by their position along
the normal, so ``k`` grows along it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: In-plane orientations closer than this (cosine difference) are "the same".
ORIENTATION_TOLERANCE = 1e-3
#: Slice gaps differing by more than this fraction are "uneven".
UNEVEN = 0.1


@dataclass
class Slice:
    """One slice to place: where it comes from and where it is."""

    source: object               # an image id, or a frame number
    position: list[float] | None
    instance: int | None = None
    tie: int = 0                 # breaks ties (image id or frame number)


@dataclass
class Layout:
    """The sorted slices and the volume's geometry."""

    slices: list[Slice]
    origin: list[float]
    axes: list[list[float]]      # unit vectors of k, j, i in patient space
    spacing: list[float]         # mm along k, j, i
    oriented: bool
    notes: list[str] = field(default_factory=list)


def normal_of(orientation: list[float]) -> np.ndarray:
    row, col = np.array(orientation[:3], float), np.array(orientation[3:], float)
    normal = np.cross(row, col)
    return normal / np.linalg.norm(normal)


def same_orientation(a: list[float] | None, b: list[float] | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return bool(np.allclose(a, b, atol=ORIENTATION_TOLERANCE))


def orientation_key(orientation: list[float] | None) -> str:
    """A short text naming an orientation, for cache keys."""
    if orientation is None:
        return "none"
    return ",".join(f"{round(v, 3) + 0.0:.3f}" for v in orientation)


def layout(slices: list[Slice], orientation: list[float] | None, pixel_spacing: list[float],
           thickness: float | None) -> Layout:
    """Sort ``slices`` along the normal (or by instance number) and measure the spacing."""
    notes: list[str] = []
    if orientation is not None:
        row = [float(v) for v in orientation[:3]]
        col = [float(v) for v in orientation[3:]]
        normal = normal_of(orientation)
        row = list(np.array(row) / np.linalg.norm(row))
        col = list(np.array(col) / np.linalg.norm(col))
    else:
        row, col, normal = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], np.array([0.0, 0.0, 1.0])
    placed = orientation is not None and all(s.position is not None for s in slices)
    if placed:
        distance = {id(s): float(np.dot(s.position, normal)) for s in slices}
        ordered = sorted(slices, key=lambda s: (distance[id(s)], s.instance if s.instance is not None else 0, s.tie))
        gaps = np.diff([distance[id(s)] for s in ordered])
        spacing = _slice_spacing(gaps, thickness, notes)
        origin = [float(v) for v in ordered[0].position]
    else:
        ordered = sorted(slices, key=lambda s: (s.instance is None, s.instance or 0, s.tie))
        spacing = thickness or 1.0
        first = ordered[0].position
        origin = [float(v) for v in first] if first is not None else [0.0, 0.0, 0.0]
        if len(slices) > 1:
            notes.append("The slices have no position in the patient: they are shown in "
                         "instance-number order" + (f", {spacing:g} mm apart (the slice thickness)."
                                                   if thickness else ", 1 mm apart."))
    return Layout(ordered, origin, [list(map(float, normal)), col, row],
                  [float(spacing), float(pixel_spacing[0]), float(pixel_spacing[1])],
                  oriented=orientation is not None, notes=notes)


def _slice_spacing(gaps: np.ndarray, thickness: float | None, notes: list[str]) -> float:
    positive = gaps[gaps > 1e-4]
    if len(positive) == 0:
        if len(gaps):
            notes.append("Every slice is at the same position; they are shown side by side in "
                         "instance-number order.")
        return thickness or 1.0
    spacing = float(np.median(positive))
    if len(positive) < len(gaps):
        notes.append(f"{len(gaps) - len(positive)} slices share a position with another one.")
    if positive.max() - positive.min() > UNEVEN * spacing:
        notes.append(f"The slices are unevenly spaced ({positive.min():.3g} to {positive.max():.3g} mm); "
                     f"they are drawn {spacing:.3g} mm apart.")
    return spacing


def voxel_to_patient(lay: Layout | dict, k: float, j: float, i: float) -> list[float]:
    """The patient-space point of a voxel (for tests and readouts)."""
    if isinstance(lay, dict):
        origin, axes, spacing = lay["origin"], lay["axes"], lay["spacing"]
    else:
        origin, axes, spacing = lay.origin, lay.axes, lay.spacing
    point = np.array(origin, float)
    for index, axis, step in zip((k, j, i), axes, spacing):
        point = point + index * step * np.array(axis, float)
    return [float(v) for v in point]
