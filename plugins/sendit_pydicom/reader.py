"""Open a file as DICOM: recognise it, read every element but the pixel data,
and make sure the file is whole.

Recognising a file costs one read of its first 132 bytes:

- a Part 10 file has ``DICM`` after its 128-byte preamble;
- a raw data set (no preamble, no file meta: old ACR-NEMA style exports, some
  PACS dumps) must *start* with a known public element of group 0000, 0002,
  0004 or 0008, read as little or big endian. Every image has its SOP UIDs in
  group 0008 and elements are sorted, so a real data set always starts there;
  text, images of other formats or random bytes match with a chance of about
  one in ten million.

Anything else is declined, so another parser plugin may try it.

Reading stops at each pixel data element (Pixel Data, Float and Double Float
Pixel Data): its length (or its fragment items, when encapsulated) is checked
against the file size and skipped with a seek, then reading goes on, so the
rare elements after the pixels (digital signatures, trailing private groups)
are indexed too. A file cut inside an element value is reported as truncated;
a file cut exactly between two elements before its pixel data cannot be told
from a header-only file and reads as one.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from pydicom.datadict import DicomDictionary
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileDataset
from pydicom.filereader import read_dataset, read_partial
from pydicom.values import converters

from sendit_core.parsing import ParseError

from .elements import tag_text

HEAD_SIZE = 132
FIRST_GROUPS = frozenset({0x0000, 0x0002, 0x0004, 0x0008})
#: Reading stops at these; their values are skipped without being read.
PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
ITEM_TAG, SEQUENCE_DELIMITER = 0xFFFEE000, 0xFFFEE0DD
UNDEFINED_LENGTH = 0xFFFFFFFF
#: Every VR, as it is written in an explicit VR element header.
EXPLICIT_VRS = frozenset(vr.encode() for vr in converters if len(vr) == 2)
#: Explicit VRs with a 2-byte reserved field and a 4-byte length.
LONG_LENGTH_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC",
                             b"UN", b"UR", b"UT", b"UV"})


@dataclass
class ReadFile:
    """What was read: the data set (with its file meta) and any elements that
    follow the pixel data (digital signatures, trailing private groups)."""

    dataset: FileDataset
    after_pixels: list[Dataset] = field(default_factory=list)


def read_head(path: Path) -> bytes:
    """The first bytes of the file, enough to recognise it."""
    with open(path, "rb") as fp:
        return fp.read(HEAD_SIZE)


def has_preamble(head: bytes) -> bool:
    """True for a DICOM Part 10 file (``DICM`` after the 128-byte preamble)."""
    return head[128:132] == b"DICM"


def looks_like_dicom(head: bytes) -> bool:
    """True for a Part 10 file, or a raw data set starting with a known element."""
    if has_preamble(head):
        return True
    if len(head) < 8:
        return False
    for order in "<>":
        group, element = struct.unpack(order + "HH", head[:4])
        if group in FIRST_GROUPS and (element == 0 or (group << 16 | element) in DicomDictionary):
            return True
    return False


def read_file(path: Path, size: int) -> ReadFile:
    """Read every element of ``path`` but the pixel data.

    :param size: the file's size in bytes (to check the pixel data is all there).
    :raises ParseError: when the file is truncated or not readable as DICOM.
    """
    with open(path, "rb") as fp:
        try:
            ds = read_partial(fp, _at_pixels, force=True)
            read = ReadFile(ds)
            read_after_pixels(fp, read, size)
        except ParseError:
            raise
        except (EOFError, OSError) as exc:
            raise ParseError(f"file is truncated or corrupt: {_sentence(exc)}") from exc
        except zlib.error as exc:
            raise ParseError(f"the deflated data set cannot be inflated: {exc}") from exc
        except Exception as exc:  # pydicom raises many kinds on damaged input
            raise ParseError(f"not readable as DICOM: {_sentence(exc)}") from exc
    return read


def _at_pixels(tag: int, vr: str | None, length: int) -> bool:
    return tag in PIXEL_TAGS


def read_after_pixels(fp: BinaryIO, read: ReadFile, size: int) -> None:
    """Skip each pixel data element (checking it is whole), read what follows.

    Reading stopped at a pixel data element when ``fp`` is not at the end of the
    file (a deflated data set is inflated in memory: ``fp`` is then at the end).
    """
    ds = read.dataset
    implicit, little = data_set_encoding(ds)
    while fp.tell() < size:
        if not skip_pixel_element(fp, implicit, little, size):
            break
        tail = read_dataset(fp, implicit, little, stop_when=_at_pixels,
                            parent_encoding=ds.original_character_set)
        if len(tail):
            read.after_pixels.append(tail)


def data_set_encoding(ds: Dataset) -> tuple[bool, bool]:
    """``(implicit VR, little endian)`` as the data set was really read.

    pydicom switches to implicit VR when a file claims explicit VR but is not
    (``SC_rgb_jpeg.dcm``); its raw elements know, the file's claim does not.
    """
    for raw in reversed(list(ds.values())):  # the last elements read
        if isinstance(raw, RawDataElement) and raw.tag >> 16:  # a command set is implicit
            return raw.is_implicit_VR, raw.is_little_endian
    return ds.original_encoding


def skip_pixel_element(fp: BinaryIO, implicit: bool, little: bool, size: int) -> bool:
    """Seek past the pixel data element at ``fp``; ``False`` if there is none.

    :raises ParseError: when the file ends inside the element.
    """
    start = fp.tell()
    order = "<" if little else ">"
    header = fp.read(8)
    if len(header) < 8:
        return False
    group, element = struct.unpack(order + "HH", header[:4])
    tag = group << 16 | element
    if tag not in PIXEL_TAGS:
        return False
    if implicit or header[4:6] not in EXPLICIT_VRS:
        (length,) = struct.unpack(order + "L", header[4:])
    elif header[4:6] in LONG_LENGTH_VRS:
        (length,) = struct.unpack(order + "L", _read_exactly(fp, 4, tag))
    else:
        (length,) = struct.unpack(order + "H", header[6:])
    if length == UNDEFINED_LENGTH:
        skip_fragments(fp, order, size, tag)
        return True
    fp.seek(pixel_value_end(tag, start, fp.tell(), length, size))
    return True


def pixel_value_end(tag: int, start: int, value_at: int, length: int, size: int) -> int:
    """Where the pixel data element starting at byte ``start`` ends.

    :raises ParseError: when the file ends inside its value.
    """
    end = value_at + length
    if end > size:
        raise ParseError(
            f"file is truncated: {tag_text(tag)} Pixel Data at byte {start} needs "
            f"{length} bytes but the file ends {size - value_at} bytes later"
        )
    return end


def skip_fragments(fp: BinaryIO, order: str, size: int, tag: int) -> None:
    """Seek past the items of encapsulated pixel data and its delimiter."""
    while True:
        group, element, length = struct.unpack(order + "HHL", _read_exactly(fp, 8, tag))
        item = group << 16 | element
        if item == SEQUENCE_DELIMITER:
            return
        if item != ITEM_TAG:
            raise ParseError(
                f"corrupt encapsulated {tag_text(tag)} Pixel Data: found "
                f"{tag_text(item)} at byte {fp.tell() - 8} where a fragment item was expected"
            )
        if fp.tell() + length > size:
            raise ParseError(
                f"file is truncated: a {tag_text(tag)} Pixel Data fragment needs "
                f"{length} bytes but the file ends {size - fp.tell()} bytes later"
            )
        fp.seek(length, 1)


def _read_exactly(fp: BinaryIO, count: int, tag: int) -> bytes:
    data = fp.read(count)
    if len(data) < count:
        raise ParseError(f"file is truncated inside {tag_text(tag)} Pixel Data")
    return data


def _sentence(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message, not too long for an error row."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
