"""The fast reader: the common DICOM file, flattened straight from its bytes.

Most files an ingest sees are Part 10 files (preamble, ``DICM``, file meta)
whose data set is explicit VR little endian: the native syntax and every
compressed one but deflate. For those, building pydicom ``Dataset`` and
``DataElement`` objects costs more than the rows themselves, so this module
walks the elements with :mod:`struct` on the file's bytes and makes the rows
with the very helpers the pydicom path uses (:func:`~.elements.decode_value`,
:class:`~.elements.Flattener`, :func:`~.elements.creator_text`): same text,
numbers, positions, paths, items and private creators.

It only reads what it fully understands, and gives up (:class:`Bail`, then
pydicom reads the file) on anything else: another transfer syntax or
character set, an unknown or ``UN`` VR, an element out of order or repeated,
a value of odd size for its VR, an element that ends outside its item or the
file, a delimiter out of place, a command set... A file cut inside its pixel
data is the one error it reports itself, with the same checks and message as
:mod:`~.reader` (the pydicom path would stop at the same element).

The file is read with one ``read()`` of its first :data:`FIRST_READ` bytes,
which hold the whole header of most files; a header that goes on further is
walked again with more bytes (:data:`MORE_READ`, or four times as many).
Pixel data is never read: only its length (or its fragment items, when
encapsulated) is checked against the file size.
"""
from __future__ import annotations

import os
import stat
import struct
from pathlib import Path
from typing import BinaryIO

from pydicom.charset import convert_encodings
from pydicom.uid import AllTransferSyntaxes, PrivateTransferSyntaxes
from pydicom.values import convert_string

from sendit_core.parsing import HeaderElement, ParseError

from .elements import (
    BULK_TAGS, CHARSET_MULTI, CHARSET_SINGLE, FAST_VRS, Flattener, Level, creator_text, is_bulk,
    tag_names, value_decoder,
)
from .reader import (
    ITEM_TAG, LONG_LENGTH_VRS, PIXEL_TAGS, SEQUENCE_DELIMITER, UNDEFINED_LENGTH,
    pixel_value_end, skip_fragments,
)

#: Bytes read at first: the header of most files, and small files whole (reading
#: more costs more than it saves: a 512 x 512 CT has a 2 KB header).
FIRST_READ = 16 * 1024
#: A header longer than that is walked again, with at least this much more read.
MORE_READ = 64 * 1024
ITEM_DELIMITER = 0xFFFEE00D
SPECIFIC_CHARACTER_SET = 0x00080005
TRANSFER_SYNTAX_UID = 0x00020010
DEFAULT_ENCODING = "iso8859"  # pydicom's, when a data set has no Specific Character Set

#: Transfer syntaxes whose data set is explicit VR little endian, not deflated.
EXPLICIT_LITTLE = frozenset(
    uid.encode() for uid in AllTransferSyntaxes
    if not uid.is_implicit_VR and uid.is_little_endian and not uid.is_deflated
    and "Deflate" not in uid.name
)

#: Specific Character Set values (trailing spaces stripped) read here, and the
#: encodings pydicom makes of them; any other value is left to pydicom.
CHARSETS = {
    value: convert_encodings(convert_string(value, True))
    for value in (b"", b"ISO_IR 6", b"ISO 2022 IR 6", b"ISO_IR 100", b"ISO_IR 192")
}

# What the walk does with an element, by VR.
VALUE, OPAQUE, SEQUENCE = 0, 1, 2
#: VR bytes -> (VR, what to do, has a 4-byte length, value decoder). ``UN`` is not
#: here: pydicom may give such elements another VR (and a value), so they are left to it.
VRS = {
    vr.encode(): (vr, VALUE if vr in FAST_VRS else SEQUENCE if vr == "SQ" else OPAQUE,
                  vr.encode() in LONG_LENGTH_VRS, value_decoder(vr) if vr in FAST_VRS else None)
    for vr in (*FAST_VRS, "OB", "OD", "OF", "OL", "OV", "OW", "SQ")
}
#: The VRs of the common element: a value with a 2-byte length -> (VR, value decoder).
COMMON_VRS = {key: (vr, decode) for key, (vr, kind, long_length, decode) in VRS.items()
              if kind == VALUE and not long_length}
#: Values up to this many bytes are remembered once decoded (see :func:`common_vrs`).
REMEMBERED_BYTES = 64
#: A memory holding this many values is emptied before it takes another.
REMEMBERED_VALUES = 4096
#: Elements the common path leaves to :meth:`_Walker._element`: they are looked
#: at (:meth:`_Walker._special`) or not indexed (bulk data).
SPECIAL_TAGS = frozenset({SPECIFIC_CHARACTER_SET, TRANSFER_SYNTAX_UID, *BULK_TAGS})
#: VRs decoded with the Specific Character Set.
CHARSET_VRS = frozenset({*CHARSET_MULTI, *CHARSET_SINGLE, "PN"})
PIXEL_VRS = frozenset({b"OB", b"OW", b"OF", b"OD", b"OL", b"OV"})

# Levels of the walk.
META, TOP, TAIL, ITEM = 0, 1, 2, 3

_header = struct.Struct("<HH2sH").unpack_from
_length = struct.Struct("<L").unpack_from
_item = struct.Struct("<HHL").unpack_from


_common_vrs: dict[tuple[str, ...], dict[bytes, tuple]] = {}
_shared_memories: dict[bytes, dict[bytes, list]] = {}


def common_vrs(encodings: list[str]) -> dict[bytes, tuple]:
    """:data:`COMMON_VRS` for a data set's encodings: VR bytes -> (VR, value
    decoder, memory of decoded values).

    Most values of an image are the same bytes as in the image before
    (manufacturer, dates, spacings, study and series UIDs, window settings),
    so a short value's decoded pairs are remembered by its bytes, per VR,
    and reused: a dictionary look-up instead of a decode. (Synthetic slices:
    96 % of the values found, parsing 0.28 -> 0.18 ms a file.) Text decoded
    with the Specific Character Set has one memory per set of encodings, the
    other VRs one memory in all. Remembered lists are shared between files
    (and threads: only single dictionary operations touch a memory), so
    nobody may change them.
    """
    key = tuple(encodings)
    table = _common_vrs.get(key)
    if table is None:
        table = _common_vrs[key] = {
            vr_bytes: (vr, decode, {} if vr in CHARSET_VRS
                       else _shared_memories.setdefault(vr_bytes, {}))
            for vr_bytes, (vr, decode) in COMMON_VRS.items()
        }
    return table


def forget_values() -> None:
    """Empty the memories of decoded values (a file parsed next is decoded
    as if first seen: benchmarks and tests)."""
    _common_vrs.clear()
    _shared_memories.clear()


class Bail(Exception):
    """The fast reader cannot vouch for this file: pydicom must read it."""


class _More(Exception):
    """The bytes read so far end before the walk does: read to ``end``, walk again."""

    def __init__(self, end: int):
        super().__init__(end)
        self.end = end


def read_rows(path: Path, max_bytes: int, max_values: int) -> list[HeaderElement] | None:
    """The rows of ``path`` if the fast reader can vouch for them, else ``None``.

    ``None`` too for anything the pydicom path reports on its own terms (a file
    that is missing, empty, larger than ``max_bytes``, not a Part 10 file...).

    :raises ParseError: when the file ends inside its pixel data.
    """
    try:
        info = os.stat(path)
    except OSError:
        return None
    size = info.st_size
    if not stat.S_ISREG(info.st_mode) or not 0 < size <= max_bytes:
        return None
    try:
        fp = open(path, "rb", buffering=0)  # a few large reads: no buffer to fill
    except OSError:
        return None
    with fp:
        try:
            return _walk_file(fp, size, max_values)
        except ParseError:
            raise
        except Exception:  # Bail, or a surprise: pydicom's path is the reference
            return None


def _walk_file(fp: BinaryIO, size: int, max_values: int) -> list[HeaderElement] | None:
    """Walk the file, reading more of it each time the walk needs it."""
    buf = fp.read(min(size, FIRST_READ))
    if buf[128:132] != b"DICM":
        return None
    while True:
        try:
            return _Walker(fp, size, buf, max_values).rows()
        except _More as more:
            fp.seek(len(buf))
            more_bytes = fp.read(min(size, max(4 * len(buf), more.end + MORE_READ)) - len(buf))
            if not more_bytes:
                return None
            buf += more_bytes


class BufferLevel(Level):
    """A level read from bytes: it keeps the raw values of its private creators."""

    __slots__ = ("creators",)

    def __init__(self, encodings: list[str], tag_path: str = "", kw_path: str = "",
                 item: str = ""):
        super().__init__(encodings, tag_path, kw_path, item)
        #: creator tag -> its value's bytes (``None``: not a plain value)
        self.creators: dict[int, bytes | None] = {}

    def _read_creator(self, creator_tag: int) -> str | None:
        if creator_tag not in self.creators:
            return None
        data = self.creators[creator_tag]
        if data is None:
            raise Bail(f"private creator {creator_tag:08X} is not a plain value")
        return creator_text(data, self.encodings)


class _Walker:
    """One walk over the bytes of a file, collecting its rows."""

    def __init__(self, fp: BinaryIO, size: int, buf: bytes, max_values: int):
        self.fp, self.size, self.buf = fp, size, buf
        self.flattener = Flattener(max_values)
        #: the data set's encodings, shared by its levels (set by its Specific Character Set)
        self.encodings = [DEFAULT_ENCODING]
        self.syntax: bytes | None = None
        self.data_set_rows = 0  # index of the data set's first row

    def rows(self) -> list[HeaderElement]:
        """The rows of the file meta, the data set and what follows its pixel data."""
        pos = self._meta()
        if self.syntax not in EXPLICIT_LITTLE or self.syntax.decode() in PrivateTransferSyntaxes:
            raise Bail("not an explicit VR little endian transfer syntax")
        self.data_set_rows = len(self.flattener.rows)
        pos = self._elements(pos, self.size, BufferLevel(self.encodings), TOP)
        while pos < self.size:  # stopped at pixel data
            pos = self._pixels(pos)
            if pos < self.size:
                pos = self._elements(pos, self.size, BufferLevel(self.encodings), TAIL)
        return self.flattener.rows

    def _need(self, end: int, limit: int | None = None) -> None:
        """Make sure the bytes up to ``end`` are read, and are before ``limit``
        (the end of the item or sequence being read, else of the file)."""
        if end > (self.size if limit is None else limit):
            raise Bail("an element or item ends outside its item or the file")
        if end > len(self.buf):
            raise _More(end)

    def _meta(self) -> int:
        """Walk the file meta group; return where the data set starts."""
        self._need(144)
        group, element, vr, length = _header(self.buf, 132)
        # pydicom converts the first meta element to test the encoding: keep it simple
        if not (group == 2 and ((element == 0 and vr == b"UL" and length == 4)
                                or (element == 1 and vr == b"OB"))):
            raise Bail("unusual file meta")
        pos = self._elements(132, self.size, BufferLevel([DEFAULT_ENCODING]), META)
        self._need(pos + 8)
        if self.buf[pos:pos + 2] == b"\0\0":
            raise Bail("a command set")  # pydicom reads it as implicit VR
        return pos

    def _elements(self, pos: int, end: int | None, level: BufferLevel, where: int) -> int:
        """Add the rows of one level's elements, from ``pos`` to ``end``.

        ``end`` is ``None`` for an item of undefined length (ended by its
        delimiter). Returns where the level ends: ``end``, after the item
        delimiter, at the first element not of group 2 (:data:`META`) or at
        pixel data (:data:`TOP`, :data:`TAIL`).

        The loop handles the common element (a short value of a common VR, a
        public tag) itself and leaves the others to :meth:`_element`.
        """
        buf, limit, last = self.buf, self.size if end is None else end, -1
        encodings, add_values = level.encodings, self.flattener.add_values
        commons = common_vrs(encodings)
        add_row, tag_path, kw_path, item = (self.flattener.rows.append, level.tag_path,
                                            level.kw_path, level.item)
        readable = min(limit, len(buf))  # past this, self._need() says what to do
        meta = where == META
        while pos < limit:
            if pos + 8 > readable:
                self._need(pos + 8, limit)
            group, element, vr_bytes, length = _header(buf, pos)
            tag = group << 16 | element
            if tag <= last or group >= 0x7FE0 or meta:
                stop = self._boundary(pos, tag, last, end, where)
                if stop is not None:
                    return stop
            last = tag
            common = commons.get(vr_bytes)
            if common is None or tag in SPECIAL_TAGS or tag & 0xFF01FFFF == 0x60003000:
                pos = self._element(pos, tag, vr_bytes, length, limit, level, where)
                if tag == SPECIFIC_CHARACTER_SET:  # the encodings may have changed
                    commons = common_vrs(encodings)
                continue  # not common, or Overlay Data
            value_end = pos + 8 + length
            if value_end > readable:
                self._need(value_end, limit)
            vr, decode, memory = common
            data = buf[pos + 8:value_end]
            values = memory.get(data)
            if values is None:
                values = decode(data, encodings) if length else []
                if values is None:
                    raise Bail(f"malformed {vr} value of element {tag:08X}")
                if length <= REMEMBERED_BYTES:
                    if len(memory) >= REMEMBERED_VALUES:
                        memory.clear()
                    memory[data] = values
            if group & 1 and 0x10 <= element <= 0xFF:  # a private creator
                level.creators[tag] = data
            if len(values) > 1:
                add_values(level, tag, vr, values)
            else:  # Flattener.add_values of one value, inlined
                text, num = values[0] if values else (None, None)
                hex8, keyword = tag_names(tag)
                add_row(HeaderElement(tag_path + hex8, kw_path + keyword, vr, text, num, item, 0,
                                      level.private_creator(tag) if group & 1 else None))
            pos = value_end
        if end is None or pos != end:
            raise Bail("an item ends outside its sequence or the file")
        return pos

    def _boundary(self, pos: int, tag: int, last: int, end: int | None,
                  where: int) -> int | None:
        """Where the level ends if it ends at the element at ``pos``, else ``None``.

        It ends at an item delimiter, at pixel data (top levels) and at the
        first element of another group (file meta).
        """
        if tag >> 16 == 0xFFFE:
            if (end is not None or tag != ITEM_DELIMITER
                    or self.buf[pos + 4:pos + 8] != b"\0\0\0\0"):
                raise Bail(f"unexpected delimiter {tag:08X}")
            return pos + 8
        if where == META and tag >> 16 != 2 or tag in PIXEL_TAGS and where != ITEM:
            return pos
        if tag <= last:
            raise Bail(f"element {tag:08X} out of order")
        return None

    def _element(self, pos: int, tag: int, vr_bytes: bytes, length: int, limit: int,
                 level: BufferLevel, where: int) -> int:
        """Add the rows of any element at ``pos`` (as :meth:`_elements` does the
        common ones); return where it ends."""
        known = VRS.get(vr_bytes)
        if known is None or tag == SPECIFIC_CHARACTER_SET and vr_bytes != b"CS":
            raise Bail(f"VR {vr_bytes!r} of element {tag:08X}")
        vr, kind, long_length, decode = known
        value_at = pos + 8
        if long_length:
            self._need(pos + 12, limit)
            (length,) = _length(self.buf, value_at)
            value_at += 4
        if length == UNDEFINED_LENGTH:
            if kind != SEQUENCE or is_bulk(tag):
                raise Bail(f"element {tag:08X} of undefined length")
            level.creators[tag] = None  # harmless if it is no private creator
            return self._sequence(tag, value_at, None, level)
        value_end = value_at + length
        self._need(value_end, limit)
        if is_bulk(tag):
            return value_end
        data = self.buf[value_at:value_end]
        if tag >> 16 & 1 and 0x10 <= tag & 0xFFFF <= 0xFF:  # a private creator
            level.creators[tag] = data if kind == VALUE else None
        if kind == SEQUENCE:
            return self._sequence(tag, value_at, value_end, level)
        if kind == VALUE:
            self._special(tag, vr, data, where)
            values = decode(data, level.encodings) if length else []
            if values is None:
                raise Bail(f"malformed {vr} value of element {tag:08X}")
            self.flattener.add_values(level, tag, vr, values)
        return value_end

    def _special(self, tag: int, vr: str, data: bytes, where: int) -> None:
        """Note the transfer syntax; take the data set's Specific Character Set."""
        if tag == TRANSFER_SYNTAX_UID and where == META and vr == "UI":
            self.syntax = data.rstrip(b"\0 ")
        elif tag == SPECIFIC_CHARACTER_SET and where != META:
            self._charset(vr, data, where)

    def _charset(self, vr: str, data: bytes, where: int) -> None:
        """Take the data set's encodings from its Specific Character Set.

        pydicom decodes the whole data set with it: the rows made before it
        must not depend on it.
        """
        encodings = CHARSETS.get(data.rstrip(b" "))
        if encodings is None or vr != "CS" or where != TOP:
            raise Bail("a character set left to pydicom")
        for row in self.flattener.rows[self.data_set_rows:]:
            if row.vr in CHARSET_VRS or row.vr == "SQ" or int(row.tag_path[:4], 16) & 1:
                raise Bail("text decoded before the Specific Character Set")
        self.encodings[:] = encodings

    def _sequence(self, tag: int, pos: int, end: int | None, level: BufferLevel) -> int:
        """Add the row of a sequence and the rows of its items; return where it ends.

        ``end`` is ``None`` for a sequence of undefined length.
        """
        row = self.flattener.add_sequence_row(level, tag)
        limit = self.size if end is None else end
        count = 0
        while pos < limit:
            self._need(pos + 8, limit)
            group, element, length = _item(self.buf, pos)
            item = group << 16 | element
            if item == SEQUENCE_DELIMITER and end is None and length == 0:
                row.value_num = float(count)
                return pos + 8
            if item != ITEM_TAG:
                raise Bail(f"{item:08X} where a sequence item was expected")
            child = BufferLevel(level.encodings, row.tag_path, row.keyword_path,
                                level.item_name(count))
            if length == UNDEFINED_LENGTH:
                pos = self._elements(pos + 8, None, child, ITEM)
            elif pos + 8 + length > limit:
                raise Bail("an item ends outside its sequence")
            else:
                pos = self._elements(pos + 8, pos + 8 + length, child, ITEM)
            count += 1
        if end is None or pos != end:
            raise Bail("a sequence ends outside its element or the file")
        row.value_num = float(count)
        return pos

    def _pixels(self, pos: int) -> int:
        """Skip the pixel data element at ``pos`` with the checks of
        :func:`~.reader.skip_pixel_element`; return where it ends.

        :raises ParseError: when the file ends inside it.
        """
        self._need(pos + 12)
        group, element, vr, _ = _header(self.buf, pos)
        if vr not in PIXEL_VRS:
            raise Bail(f"pixel data of VR {vr!r}")
        tag = group << 16 | element
        (length,) = _length(self.buf, pos + 8)
        if length != UNDEFINED_LENGTH:
            return pixel_value_end(tag, pos, pos + 12, length, self.size)
        self.fp.seek(pos + 12)
        skip_fragments(self.fp, "<", self.size, tag)
        return self.fp.tell()
