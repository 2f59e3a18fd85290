"""Built-in plugin: the pydicom parser.

Reads every file of a batch with pydicom, without its pixel data, and indexes
every other data element (see :mod:`sendit_pydicom.elements` for how values,
sequences and private tags become rows, and :mod:`sendit_pydicom.reader` for
how DICOM files are recognised). Every transfer syntax is accepted, compressed
ones included: pixels are never decoded here.

Settings (``[app:main]`` of the ini file):

``sendit.pydicom.max_file_mb`` (default 2048)
    Files larger than this many MB are rejected (an error row of the batch)
    without being read.
``sendit.pydicom.max_values`` (default 1024)
    Values indexed per multi-valued element (contour points, LUTs); the file
    keeps them all. At most 32767.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sendit_core import ParsedFile, Setting, hookimpl
from sendit_core.settings import positive, to_int

from .parser import PARSER_NAME, parse

__all__ = ["PARSER_NAME", "parse", "sendit_parse_file", "sendit_settings"]

MAX_FILE_MB = "sendit.pydicom.max_file_mb"
MAX_VALUES = "sendit.pydicom.max_values"


@hookimpl
def sendit_settings() -> list[Setting]:
    """Declare ``sendit.pydicom.max_file_mb`` and ``sendit.pydicom.max_values``."""
    return [
        Setting(MAX_FILE_MB, "2048", positive(to_int),
                "Files larger than this many MB are rejected by the pydicom parser."),
        Setting(MAX_VALUES, "1024", positive(to_int),
                "Values indexed per multi-valued element (at most 32767); the file keeps all."),
    ]


@hookimpl
def sendit_parse_file(path: Path, settings: dict[str, Any]) -> ParsedFile | None:
    """Parse a DICOM file (any transfer syntax, with or without preamble).

    Declines (``None``) files that are not DICOM; raises
    :class:`sendit_core.ParseError` for DICOM files that are empty, too large,
    truncated or without a SOP Instance UID.
    """
    return parse(Path(path), max_file_mb=int(settings.get(MAX_FILE_MB, 2048)),
                 max_values=int(settings.get(MAX_VALUES, 1024)))
