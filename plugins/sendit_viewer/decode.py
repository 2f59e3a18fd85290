"""Reading one stored file: its header facts, its geometry and its decoded frames.

Pixels are decoded by pydicom with whatever decoders are installed (numpy for
native syntaxes; pylibjpeg, pylibjpeg-openjpeg, pylibjpeg-rle, pyjpegls and
python-gdcm for compressed ones). Anything that goes wrong becomes a
:class:`ViewerError` whose text is a sentence for people, never a traceback.
"""
from __future__ import annotations

import importlib.util
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

log = logging.getLogger(__name__)

#: Pixel-bearing elements; a file with none of them has nothing to display.
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

#: The element types sent to browsers (little endian), by numpy dtype.
WIRE_TYPES = {"uint8", "int16", "uint16", "int32", "uint32", "float32"}

#: Transfer syntaxes whose decoder ships only in an optional, GPL-licensed extra.
OPTIONAL_DECODERS = {
    "1.2.840.10008.1.2.4.51": ("JPEG Extended with 12-bit samples needs pylibjpeg-libjpeg (GPLv3), "
                               "an optional extra: pip install 'sendit[jpeg-extended]'"),
}


class ViewerError(Exception):
    """Something a person can read: why there is no picture."""

    #: HTTP status of the JSON answer
    status = 422
    #: a stable word for scripts: no-pixels, undecodable, missing-file, too-large, ...
    reason = "undecodable"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def as_json(self) -> dict:
        return {"error": self.reason, "message": self.message}


class NoPixelData(ViewerError):
    reason = "no-pixels"


class Undecodable(ViewerError):
    reason = "undecodable"


class MissingFile(ViewerError):
    status = 404
    reason = "missing-file"


class TooLarge(ViewerError):
    status = 413
    reason = "too-large"


def kind_of(ds: Dataset) -> str:
    """``"a Comprehensive SR document"``-like words for the SOP class, for messages."""
    sop_class = ds.get("SOPClassUID") or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
    if not sop_class:
        return "this image"
    name = UID(str(sop_class)).name
    return f"this {name} object" if name and name != str(sop_class) else "this object"


def read_dataset(path: Path) -> Dataset:
    """The file's data set, pixel data left on disk until it is decoded."""
    try:
        return pydicom.dcmread(path, defer_size=4096)
    except FileNotFoundError:
        raise MissingFile("The stored file of this image is missing from the storage folder; "
                          "it may have been deleted or moved by hand.") from None
    except InvalidDicomError:
        try:
            return pydicom.dcmread(path, defer_size=4096, force=True)
        except Exception as exc:  # noqa: BLE001 - any reader failure becomes a message
            raise Undecodable(f"The stored file cannot be read as DICOM: {exc}") from None
    except OSError as exc:
        raise MissingFile(f"The stored file of this image cannot be read: {exc.strerror or exc}.") from None
    except Exception as exc:  # noqa: BLE001
        raise Undecodable(f"The stored file cannot be read as DICOM: {_short(exc)}") from None


def has_pixels(ds: Dataset) -> bool:
    return any(keyword in ds for keyword in PIXEL_KEYWORDS)


def transfer_syntax(ds: Dataset) -> UID | None:
    uid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return UID(str(uid)) if uid else None


def decode_frames(ds: Dataset) -> np.ndarray:
    """Every frame as ``(frames, rows, columns)`` or ``(frames, rows, columns, 3)``.

    Colour images come out as RGB (pydicom converts YBR; palette colour goes
    through its lookup table). Raises :class:`NoPixelData` or :class:`Undecodable`.
    """
    if not has_pixels(ds):
        raise NoPixelData(f"There is nothing to display: {kind_of(ds)} has no pixel data.")
    try:
        array = ds.pixel_array
        if str(ds.get("PhotometricInterpretation", "")).upper() == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            array = apply_color_lut(array, ds)
    except Exception as exc:  # noqa: BLE001 - decoders raise anything
        raise Undecodable(undecodable_message(ds, exc)) from None
    frames = number_of_frames(ds)
    colour = array.ndim == (4 if frames > 1 else 3)
    if frames == 1 or array.ndim == (3 if colour else 2):
        array = array[None]
    if array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[-1] != 3):
        raise Undecodable(f"The pixel data has an unexpected shape {array.shape}.")
    return array


def number_of_frames(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


def undecodable_message(ds: Dataset, exc: Exception) -> str:
    """Why the pixels could not be decoded, and what would help."""
    syntax = transfer_syntax(ds)
    name = syntax.name if syntax is not None else "an unknown transfer syntax"
    log.warning("pixel data not decoded (%s): %s", name, exc)
    if (syntax is not None and str(syntax) in OPTIONAL_DECODERS and _bits(ds) > 8
            and importlib.util.find_spec("libjpeg") is None):
        return f"The pixel data of this image ({name}) could not be decoded: {OPTIONAL_DECODERS[str(syntax)]}."
    if syntax is not None and syntax.is_compressed:
        try:
            from pydicom.pixels import get_decoder

            decoder = get_decoder(syntax)
            if not decoder.is_available:
                return (f"The pixel data of this image is compressed as {name}, and no installed "
                        f"decoder reads it ({'; '.join(decoder.missing_dependencies)}).")
        except NotImplementedError:
            return f"The pixel data of this image is compressed as {name}, which pydicom cannot decode."
    return f"The pixel data of this image ({name}) could not be decoded: {_short(exc)}"


def _bits(ds: Dataset) -> int:
    try:
        return int(ds.get("BitsStored") or ds.get("BitsAllocated") or 0)
    except (TypeError, ValueError):
        return 0


def _short(exc: Exception) -> str:
    """The first line of an exception's text, without decoder plumbing."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith("Unable to decode as exceptions")]
    text = "; ".join(useful[:2]) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def wire_array(array: np.ndarray) -> np.ndarray:
    """The array in a type browsers read directly (little endian)."""
    dtype = array.dtype
    if dtype == np.bool_:
        array = array.astype(np.uint8)
    elif dtype == np.int8:
        array = array.astype(np.int16)
    elif dtype.kind == "f":
        array = array.astype(np.float32)
    elif dtype.kind in "iu" and dtype.itemsize == 8:
        array = array.astype(np.float32)
    return array.astype(array.dtype.newbyteorder("<"), copy=False)


# -- header facts ------------------------------------------------------------------


def _floats(value, count: int) -> list[float] | None:
    try:
        numbers = [float(v) for v in (value if isinstance(value, (list, tuple, pydicom.multival.MultiValue))
                                      else [value])]
    except (TypeError, ValueError):
        return None
    if len(numbers) != count or not all(math.isfinite(n) for n in numbers):
        return None
    return numbers


def _first(ds: Dataset, *path: str):
    """``ds.A[0].B[0].C`` or ``None``."""
    node = ds
    for i, keyword in enumerate(path):
        node = node.get(keyword) if node is not None else None
        if node is None:
            return None
        if i < len(path) - 1:
            try:
                node = node[0]
            except (IndexError, TypeError):
                return None
    return node


def orientation(ds: Dataset) -> list[float] | None:
    """Image Orientation (Patient): row then column direction cosines, or ``None``."""
    value = ds.get("ImageOrientationPatient")
    if value is None:
        value = _first(ds, "SharedFunctionalGroupsSequence", "PlaneOrientationSequence", "ImageOrientationPatient")
    if value is None:
        value = _first(ds, "PerFrameFunctionalGroupsSequence", "PlaneOrientationSequence", "ImageOrientationPatient")
    cosines = _floats(value, 6)
    if cosines is None:
        return None
    row, col = np.array(cosines[:3]), np.array(cosines[3:])
    if not (0.5 < np.linalg.norm(row) < 1.5 and 0.5 < np.linalg.norm(col) < 1.5):
        return None
    if np.linalg.norm(np.cross(row, col)) < 0.5:
        return None
    return cosines


def pixel_spacing(ds: Dataset) -> tuple[list[float], bool]:
    """(row spacing, column spacing) in mm, and whether the header said so."""
    for value in (ds.get("PixelSpacing"),
                  _first(ds, "SharedFunctionalGroupsSequence", "PixelMeasuresSequence", "PixelSpacing"),
                  _first(ds, "PerFrameFunctionalGroupsSequence", "PixelMeasuresSequence", "PixelSpacing"),
                  ds.get("ImagerPixelSpacing")):
        spacing = _floats(value, 2)
        if spacing and all(s > 0 for s in spacing):
            return spacing, True
    return [1.0, 1.0], False


def slice_thickness(ds: Dataset) -> float | None:
    for value in (ds.get("SpacingBetweenSlices"), ds.get("SliceThickness"),
                  _first(ds, "SharedFunctionalGroupsSequence", "PixelMeasuresSequence", "SpacingBetweenSlices"),
                  _first(ds, "SharedFunctionalGroupsSequence", "PixelMeasuresSequence", "SliceThickness")):
        number = _floats(value, 1)
        if number and number[0] > 0:
            return number[0]
    return None


def frame_positions(ds: Dataset, frames: int) -> list[list[float]] | None:
    """Image Position (Patient) of each frame of a multi-frame image, or ``None``.

    From the per-frame functional groups (enhanced images), or from the image
    position plus the Grid Frame Offset Vector along the slice normal (RT Dose).
    """
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and len(per_frame) == frames:
        positions = []
        for item in per_frame:
            position = _floats(_first(item, "PlanePositionSequence", "ImagePositionPatient"), 3)
            if position is None:
                break
            positions.append(position)
        else:
            return positions
    origin = _floats(ds.get("ImagePositionPatient"), 3)
    cosines = orientation(ds)
    offsets = ds.get("GridFrameOffsetVector")
    if origin is None or cosines is None or offsets is None:
        return None
    offsets = _floats(offsets, frames)
    if offsets is None:
        return None
    normal = np.cross(cosines[:3], cosines[3:])
    return [list(np.array(origin) + offset * normal) for offset in offsets]


def rescale(ds: Dataset) -> tuple[float, float]:
    """(slope, intercept) turning stored values into meaningful ones (HU, Gy ...)."""
    slope = _floats(ds.get("RescaleSlope"), 1)
    intercept = _floats(ds.get("RescaleIntercept"), 1)
    if slope is None:
        group = _first(ds, "SharedFunctionalGroupsSequence", "PixelValueTransformationSequence", "RescaleSlope")
        slope = _floats(group, 1)
        intercept = _floats(_first(ds, "SharedFunctionalGroupsSequence", "PixelValueTransformationSequence",
                                   "RescaleIntercept"), 1)
    if slope is None:
        scaling = _floats(ds.get("DoseGridScaling"), 1)  # RT Dose: stored value x scaling = dose
        if scaling:
            return scaling[0], 0.0
    return (slope[0] if slope and slope[0] != 0 else 1.0), (intercept[0] if intercept else 0.0)


def unit(ds: Dataset) -> str:
    if ds.get("DoseUnits"):
        return str(ds.DoseUnits).strip().title() if str(ds.DoseUnits).strip().upper() != "GY" else "Gy"
    kind = str(ds.get("RescaleType") or "").strip()
    if kind and kind.upper() not in ("US", "UNSPECIFIED"):
        return kind
    if str(ds.get("Modality", "")).upper() == "CT" and "RescaleIntercept" in ds:
        return "HU"
    units = str(ds.get("Units") or "").strip()  # PET
    return units


def window_presets(ds: Dataset) -> list[dict]:
    """Window center/width pairs from the header, with their explanations."""
    centers = _list(ds.get("WindowCenter"))
    widths = _list(ds.get("WindowWidth"))
    names = ds.get("WindowCenterWidthExplanation")
    if not centers:
        centers = _list(_first(ds, "SharedFunctionalGroupsSequence", "FrameVOILUTSequence", "WindowCenter"))
        widths = _list(_first(ds, "SharedFunctionalGroupsSequence", "FrameVOILUTSequence", "WindowWidth"))
        names = _first(ds, "SharedFunctionalGroupsSequence", "FrameVOILUTSequence", "WindowCenterWidthExplanation")
    names = [str(n) for n in (names if isinstance(names, (list, pydicom.multival.MultiValue))
                               else [names] if names else [])]
    presets = []
    for i, (center, width) in enumerate(zip(centers, widths)):
        if width is None or center is None or width <= 0:
            continue
        label = names[i].strip() if i < len(names) and names[i].strip() else f"Header window {i + 1}"
        presets.append({"name": label, "center": center, "width": width})
    return presets


def _list(value) -> list[float | None]:
    if value is None:
        return []
    values = value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
    out = []
    for v in values:
        try:
            number = float(v)
            out.append(number if math.isfinite(number) else None)
        except (TypeError, ValueError):
            out.append(None)
    return out


@dataclass
class ImageFacts:
    """What the viewer needs from one file's header."""

    rows: int
    columns: int
    frames: int
    colour: bool
    orientation: list[float] | None
    position: list[float] | None
    spacing: list[float]
    spacing_known: bool
    thickness: float | None
    slope: float
    intercept: float
    unit: str
    windows: list[dict]
    invert: bool
    bits: int
    photometric: str
    frame_positions: list[list[float]] | None = None
    notes: list[str] = field(default_factory=list)


def facts(ds: Dataset) -> ImageFacts:
    """The header facts of a file with pixel data (raises :class:`NoPixelData`)."""
    if not has_pixels(ds):
        raise NoPixelData(f"There is nothing to display: {kind_of(ds)} has no pixel data.")
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError):
        raise Undecodable("The header has no usable Rows and Columns, so its pixels cannot be laid out.") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    frames = number_of_frames(ds)
    spacing, known = pixel_spacing(ds)
    slope, intercept = rescale(ds)
    samples = int(ds.get("SamplesPerPixel") or 1)
    return ImageFacts(
        rows=rows, columns=columns, frames=frames,
        colour=samples == 3 or photometric == "PALETTE COLOR",
        orientation=orientation(ds),
        position=_floats(ds.get("ImagePositionPatient"), 3),
        spacing=spacing, spacing_known=known, thickness=slice_thickness(ds),
        slope=slope, intercept=intercept, unit=unit(ds), windows=window_presets(ds),
        invert=photometric == "MONOCHROME1", bits=_bits(ds) or 8, photometric=photometric,
        frame_positions=frame_positions(ds, frames) if frames > 1 else None,
    )
