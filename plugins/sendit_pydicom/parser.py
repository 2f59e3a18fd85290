"""Parse one file into a :class:`~sendit_core.parsing.ParsedFile`: recognise it,
read it without its pixel data, flatten its elements, pick the image fields."""
from __future__ import annotations

from pathlib import Path

from pydicom.datadict import DicomDictionary
from pydicom.dataset import Dataset, FileDataset
from pydicom.uid import (
    ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
)

from sendit_core.parsing import HeaderElement, ParsedFile, ParseError

from .elements import flatten
from .fast import read_rows
from .reader import data_set_encoding, has_preamble, looks_like_dicom, read_file, read_head

PARSER_NAME = "sendit_pydicom"
MB = 1024 * 1024
#: ``HeaderValue.position`` is a SMALLINT: never index more values than this.
MAX_POSITIONS = 32767

SOP_INSTANCE_UID = "00080018"
TRANSFER_SYNTAX_UID = "00020010"
SOP_INSTANCE_UID_TAG = 0x00080018
IMAGE_FIELDS = {
    "00080016": "sop_class_uid",
    "0020000D": "study_instance_uid",
    "0020000E": "series_instance_uid",
    "00080060": "modality",
    "00200013": "instance_number",
}
#: Groups a real data set has elements of (identification, patient, study/series).
CORE_GROUPS = frozenset({0x0008, 0x0010, 0x0020})
TRANSFER_SYNTAXES = {
    (True, True): ImplicitVRLittleEndian,
    (False, True): ExplicitVRLittleEndian,
    (False, False): ExplicitVRBigEndian,
}


def parse(path: Path, *, max_file_mb: int = 2048, max_values: int = 1024) -> ParsedFile | None:
    """Parse ``path``; ``None`` when it is not DICOM.

    The fast reader (:mod:`sendit_pydicom.fast`) has the first go; whatever it
    does not vouch for is read by pydicom (:func:`parse_with_pydicom`), which
    gives the same rows.

    :param max_file_mb: larger files are rejected before being read.
    :param max_values: values indexed per multi-valued element.
    :raises ParseError: for DICOM files that are empty, too large, truncated,
        unreadable or without a SOP Instance UID.
    """
    rows = read_rows(path, max_file_mb * MB, min(max_values, MAX_POSITIONS))
    parsed = parsed_from_rows(rows) if rows is not None else None
    if parsed is not None:
        return parsed
    return parse_with_pydicom(path, max_file_mb=max_file_mb, max_values=max_values)


def parse_with_pydicom(path: Path, *, max_file_mb: int = 2048,
                       max_values: int = 1024) -> ParsedFile | None:
    """:func:`parse` with pydicom only (the reference the fast reader matches)."""
    size = _size(path)
    head = _head(path)
    if not looks_like_dicom(head):
        return None
    if size > max_file_mb * MB:
        raise ParseError(f"file is {size / MB:.1f} MB, larger than the limit "
                         f"sendit.pydicom.max_file_mb = {max_file_mb}")
    read = read_file(path, size)
    ds = read.dataset
    if not has_preamble(head) and not _plausible(ds):
        return None
    elements = flatten([ds.file_meta, ds, *read.after_pixels], min(max_values, MAX_POSITIONS))
    return build_parsed_file(ds, elements)


def _size(path: Path) -> int:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ParseError(f"cannot read the file: {exc.strerror or exc}") from exc
    if size == 0:
        raise ParseError("empty file (0 bytes)")
    return size


def _head(path: Path) -> bytes:
    try:
        return read_head(path)
    except OSError as exc:
        raise ParseError(f"cannot read the file: {exc.strerror or exc}") from exc


def _plausible(ds: Dataset) -> bool:
    """True when a raw data set (no preamble) really is one: it has a SOP
    Instance UID, or at least two known elements of groups 0008, 0010, 0020."""
    known = [tag for tag in ds.keys() if tag >> 16 in CORE_GROUPS and tag in DicomDictionary]
    return SOP_INSTANCE_UID_TAG in ds or len(known) >= 2


def build_parsed_file(ds: FileDataset, elements: list[HeaderElement]) -> ParsedFile:
    """The image record: its identifying fields, taken from the top-level rows."""
    top = _top_values(elements)
    uid = top.get(SOP_INSTANCE_UID)
    if not uid:
        raise ParseError(f"no SOP Instance UID (0008,0018): {_why_no_uid(ds)}")
    return _image_record(uid, top.get(TRANSFER_SYNTAX_UID) or _read_syntax(ds), top, elements)


def parsed_from_rows(elements: list[HeaderElement]) -> ParsedFile | None:
    """:func:`build_parsed_file` without a dataset: ``None`` when the rows lack
    the SOP Instance UID or the transfer syntax (pydicom's path explains why)."""
    top = _top_values(elements)
    uid, syntax = top.get(SOP_INSTANCE_UID), top.get(TRANSFER_SYNTAX_UID)
    if not uid or not syntax:
        return None
    return _image_record(uid, syntax, top, elements)


def _top_values(elements: list[HeaderElement]) -> dict[str, str]:
    """The first value of each top-level element, by tag path."""
    return {row.tag_path: row.value_text for row in elements
            if not row.item and not row.position and row.value_text is not None}


def _image_record(uid: str, syntax: str | None, top: dict[str, str],
                  elements: list[HeaderElement]) -> ParsedFile:
    fields = {name: top.get(tag) for tag, name in IMAGE_FIELDS.items()}
    fields["sop_class_uid"] = fields["sop_class_uid"] or top.get("00020002")
    fields["instance_number"] = _integer(fields["instance_number"])
    return ParsedFile(
        sop_instance_uid=uid,
        transfer_syntax_uid=syntax,
        elements=elements,
        parser=PARSER_NAME,
        **fields,
    )


def _why_no_uid(ds: FileDataset) -> str:
    if ds.file_meta.get("MediaStorageSOPClassUID") == MediaStorageDirectoryStorage:
        return "this is a DICOMDIR (a media directory), not an image"
    if SOP_INSTANCE_UID_TAG in ds:
        return "the element is empty"
    return "the data set has no such element (not an image, or damaged)"


def _integer(text: str | None) -> int | None:
    """An IS value as an int; ``None`` when missing or not a whole number."""
    if text is None:
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if number.is_integer() and abs(number) < 2**31 else None


def _read_syntax(ds: FileDataset) -> str | None:
    """The transfer syntax the data set was read with, when the file meta has none."""
    return TRANSFER_SYNTAXES.get(data_set_encoding(ds))
