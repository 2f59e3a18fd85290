"""Flatten a pydicom dataset into :class:`~sendit_core.parsing.HeaderElement` rows.

One row per *value*: a multi-valued element gives one row per value
(``position`` 0, 1, ...), an empty element one row whose ``value_text`` is
``None``. Sequences are flattened: the elements of item *i* of
``ReferencedSeriesSequence`` get the keyword path
``ReferencedSeriesSequence.SeriesInstanceUID``, the tag path
``00081115.0020000E`` and ``item`` ``"i"`` (``"i.j"`` one level deeper). The
sequence element itself gets one row too, with ``value_text`` ``None``, VR
``SQ`` and ``value_num`` set to its number of items, so that empty sequences
and the nesting stay visible in the header table and "has sequence X" is a
plain field lookup.

Not indexed: binary values (OB, OW, OF, OD, OL, OV, UN and any value pydicom
leaves as bytes) and the bulk pixel-like elements (Pixel Data, Float and
Double Float Pixel Data, Waveform Data, Overlay Data, Encapsulated Document,
trailing padding).

Speed: the common VRs are decoded here straight from the raw bytes (one split
and strip per element, ``struct`` for binary numbers); anything unusual
(implicit-VR private tags, ambiguous VRs like ``US or SS``, UN, sequences)
goes through pydicom's own ``Dataset.__getitem__`` conversion.
"""
from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable

from pydicom.charset import ESC, decode_bytes
from pydicom.datadict import DicomDictionary, dictionary_VR, keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.valuerep import TEXT_VR_DELIMS
from pydicom.values import convert_PN

from sendit_core.models.header import MAX_VALUE_LENGTH
from sendit_core.parsing import HeaderElement, ParseError

UNDEFINED_LENGTH = 0xFFFFFFFF

#: Bulk data elements never indexed, whatever their VR (pixel-like data).
BULK_TAGS = frozenset({
    0x7FE00008,  # Float Pixel Data
    0x7FE00009,  # Double Float Pixel Data
    0x7FE00010,  # Pixel Data
    0x54001010,  # Waveform Data
    0x00420011,  # Encapsulated Document
    0xFFFCFFFC,  # Data Set Trailing Padding
})

#: VRs whose values are binary blobs: never indexed.
BYTES_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN", "OB or OW"})

#: Text VRs always decoded with the default character repertoire.
ASCII_MULTI = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI"})
#: Text VRs decoded with the Specific Character Set, backslash separates values.
CHARSET_MULTI = frozenset({"SH", "LO", "UC"})
#: Text VRs decoded with the Specific Character Set, a single value.
CHARSET_SINGLE = frozenset({"ST", "LT", "UT"})
#: Binary numeric VRs: struct code and item size.
BINARY_NUMBERS = {
    "US": ("H", 2), "SS": ("h", 2), "UL": ("L", 4), "SL": ("l", 4),
    "FL": ("f", 4), "FD": ("d", 8), "UV": ("Q", 8), "SV": ("q", 8),
}
#: VRs whose values also get ``value_num``.
NUMERIC_VRS = frozenset({"DS", "IS", "DA", "TM", *BINARY_NUMBERS})
#: Leading spaces are not significant for these VRs (PS3.5 6.2): strip them too.
STRIP_BOTH = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "SH", "LO"})

def tag_text(tag: int) -> str:
    """``(gggg,eeee)``, the keyword of private and unknown elements."""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


_names: dict[int, tuple[str, str]] = {}
_public_vrs: dict[int, str | None] = {}


def _known_names() -> dict[int, tuple[str, str]]:
    """:func:`tag_names` of every tag of the DICOM dictionary, computed once."""
    return {tag: (f"{tag:08X}", ("" if tag >> 16 & 1 else entry[4]) or tag_text(tag))
            for tag, entry in DicomDictionary.items()}


def tag_names(tag: int) -> tuple[str, str]:
    """Return ``(8 hex digits, keyword or tag text)`` for ``tag`` (memoised)."""
    names = _names.get(tag)
    if names is None:
        keyword = "" if tag >> 16 & 1 else keyword_for_tag(tag)
        names = _names[tag] = (f"{tag:08X}", keyword or tag_text(tag))
    return names


_names.update(_known_names())


def public_vr(tag: int) -> str | None:
    """The dictionary VR of a public tag, or ``None`` (private, unknown)."""
    if tag not in _public_vrs:
        try:
            vr = None if tag >> 16 & 1 else dictionary_VR(tag)
        except KeyError:
            vr = "UL" if tag & 0xFFFF == 0 else None  # group length
        _public_vrs[tag] = vr
    return _public_vrs[tag]


def is_bulk(tag: int) -> bool:
    """True for pixel-like bulk data elements, never indexed."""
    return tag in BULK_TAGS or (tag & 0xFF01FFFF == 0x60003000)  # Overlay Data


class Flattener:
    """Collects the rows of one file; :meth:`add_dataset` walks one level."""

    def __init__(self, max_values: int):
        self.max_values = max_values
        self.rows: list[HeaderElement] = []

    def add_dataset(self, ds: Dataset, tag_path: str = "", kw_path: str = "",
                    item: str = "") -> None:
        """Add a row per value of every element of ``ds`` (and its sequences)."""
        encodings = ds.original_character_set or "iso8859"
        if isinstance(encodings, str):
            encodings = [encodings]
        level = DatasetLevel(ds, encodings, tag_path, kw_path, item)
        # file order; raw elements, not converted (plain ints: BaseTag compares slowly)
        for tag, raw in list(ds.items()):
            tag = int(tag)
            if not is_bulk(tag):
                self._add_element(level, tag, raw)

    def _add_element(self, level: "DatasetLevel", tag: int, raw: object) -> None:
        if isinstance(raw, RawDataElement):
            check_complete(raw)
            vr = raw.VR or public_vr(tag)
            values = decode_raw(vr, raw, level.encodings) if vr in FAST_VRS else None
            if values is not None:
                self.add_values(level, tag, vr, values)
                return
        self._add_converted(level, tag)

    def _add_converted(self, level: "DatasetLevel", tag: int) -> None:
        """Slow path: let pydicom convert the element (VR lookup, ambiguity)."""
        try:
            elem = level.ds[tag]
        except Exception as exc:  # a value pydicom cannot convert: index its text
            raw = level.ds.get_item(tag, keep_deferred=True)
            if getattr(raw, "VR", None) == "SQ" or public_vr(tag) == "SQ":
                raise ParseError(f"corrupt sequence {tag_text(tag)} {tag_names(tag)[1]}: "
                                 f"{str(exc).strip() or type(exc).__name__}") from exc
            values = undecodable(raw)
            if values:
                self.add_values(level, tag, raw.VR, values)
            return
        vr = elem.VR
        if vr == "SQ":
            self._add_sequence(level, tag, elem.value)
            return
        value = elem.value
        if vr in BYTES_VRS or isinstance(value, (bytes, bytearray)):
            return
        if len(vr) > 2:  # still ambiguous ("US or SS"): keep the first choice
            vr = vr[:2]
        values = list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]
        self.add_values(level, tag, vr, [format_value(vr, v) for v in values])

    def _add_sequence(self, level: "DatasetLevel", tag: int, items: Sequence) -> None:
        row = self.add_sequence_row(level, tag)
        row.value_num = float(len(items))
        for index, child in enumerate(items):
            self.add_dataset(child, row.tag_path, row.keyword_path,
                             level.item_name(index))

    def add_sequence_row(self, level: "Level", tag: int) -> HeaderElement:
        """Add the row of sequence ``tag`` (its ``value_num``, the item count, is
        left for the caller to set) and return it."""
        tag_path, kw_path, creator = level.paths(tag)
        row = HeaderElement(tag_path, kw_path, "SQ", None, None, level.item, 0, creator)
        self.rows.append(row)
        return row

    def add_values(self, level: "Level", tag: int, vr: str,
                   values: list[tuple[str | None, float | None]]) -> None:
        """Add one row per value of element ``tag`` (at most ``max_values``)."""
        tag_path, kw_path, creator = level.paths(tag)
        item = level.item
        if len(values) < 2:  # the common case: one value (or an empty element)
            text, num = values[0] if values else (None, None)
            self.rows.append(HeaderElement(tag_path, kw_path, vr, text, num, item, 0, creator))
            return
        self.rows.extend(
            HeaderElement(tag_path, kw_path, vr, text, num, item, position, creator)
            for position, (text, num) in enumerate(values[: self.max_values])
        )


class Level:
    """One dataset being flattened: its paths, item and private creators.

    Subclasses say where a private creator's value comes from
    (:meth:`_read_creator`).
    """

    __slots__ = ("encodings", "tag_path", "kw_path", "item", "_creators")

    def __init__(self, encodings: list[str], tag_path: str, kw_path: str, item: str):
        self.encodings, self.item = encodings, item
        self.tag_path = f"{tag_path}." if tag_path else ""
        self.kw_path = f"{kw_path}." if kw_path else ""
        self._creators: dict[int, str | None] = {}

    def item_name(self, index: int) -> str:
        """The ``item`` of item ``index`` of a sequence at this level (``"0.2"``)."""
        return f"{self.item}.{index}" if self.item else str(index)

    def paths(self, tag: int) -> tuple[str, str, str | None]:
        """Tag path, keyword path and private creator of ``tag`` at this level."""
        hex8, keyword = tag_names(tag)
        creator = self.private_creator(tag) if tag >> 16 & 1 else None
        return self.tag_path + hex8, self.kw_path + keyword, creator

    def private_creator(self, tag: int) -> str | None:
        """The creator of private element ``(gggg,xxee)`` from ``(gggg,00xx)``."""
        block = tag & 0xFFFF
        if block < 0x1000:  # a creator element itself, or a group length
            return None
        creator_tag = (tag & 0xFFFF0000) | (block >> 8)
        if creator_tag not in self._creators:
            self._creators[creator_tag] = self._read_creator(creator_tag)
        return self._creators[creator_tag]

    def _read_creator(self, creator_tag: int) -> str | None:
        raise NotImplementedError


class DatasetLevel(Level):
    """A level read by pydicom: private creators come from its dataset."""

    __slots__ = ("ds",)

    def __init__(self, ds: Dataset, encodings: list[str], tag_path: str, kw_path: str,
                 item: str):
        super().__init__(encodings, tag_path, kw_path, item)
        self.ds = ds

    def _read_creator(self, creator_tag: int) -> str | None:
        raw = self.ds.get_item(creator_tag)
        if raw is None:
            return None
        return creator_text(raw.value, self.encodings)


def creator_text(value: object, encodings: list[str]) -> str | None:
    """A private creator as indexed: decoded, stripped, at most 64 characters."""
    if isinstance(value, (bytes, bytearray)):
        value = decode_bytes(bytes(value), encodings, TEXT_VR_DELIMS)
    text = str(value).strip("\0 ") if value is not None else ""
    return text[:64] or None


def check_complete(raw: RawDataElement) -> None:
    """Raise :class:`ParseError` when the file ended inside ``raw``'s value."""
    value = raw.value
    if raw.length != UNDEFINED_LENGTH and value is not None and len(value) < raw.length:
        hex8, keyword = tag_names(raw.tag)
        raise ParseError(
            f"file is truncated: element {tag_text(raw.tag)} {keyword} needs "
            f"{raw.length} bytes but only {len(value)} are left in the file"
        )


# -- value decoding: each returns a list of (value_text, value_num) ------------


def decode_raw(vr: str, raw: RawDataElement, encodings: list[str]) -> list | None:
    """Decode the raw value of a common VR without building pydicom objects.

    :returns: the ``(value_text, value_num)`` pairs, or ``None`` when the value
        is malformed and pydicom should have a go at it.
    """
    return decode_value(vr, raw.value, raw.is_little_endian, encodings)


def decode_value(vr: str, data: bytes | None, little: bool, encodings: list[str]) -> list | None:
    """Decode the bytes of a value of common VR ``vr`` (one of :data:`FAST_VRS`).

    :returns: the ``(value_text, value_num)`` pairs, or ``None`` when the value
        is malformed and pydicom should have a go at it.
    """
    if not data:
        return []
    if vr in BINARY_NUMBERS:
        return _binary_numbers(vr, data, little)
    if vr == "AT":
        return _tags(data, little)
    if vr == "PN":
        return _person_names(data, encodings)
    return _TEXT_DECODERS[vr](data, encodings)


def _person_names(data: bytes, encodings: list[str]) -> list:
    """PN values as ``str()`` of pydicom's ``PersonName`` gives them.

    pydicom makes a ``PersonName`` of each value, encodes it again and decodes
    its component groups one by one, dropping trailing empty groups. With one
    encoding and no escape sequence (every PN the fast reader sees) that is
    the same as decoding the value once and dropping those groups, at a
    tenth of the cost (the two names of a typical image were 7 % of parsing);
    code extensions still go through pydicom.
    """
    if len(encodings) > 1 or ESC in data:
        names = convert_PN(data, encodings)
        names = names if isinstance(names, MultiValue) else [names]
        return [(_clip(str(name).rstrip("\0 ")), None) for name in names]
    out = []
    for name in decode_bytes(data.rstrip(b"\0 "), encodings, TEXT_VR_DELIMS).split("\\"):
        if name.endswith("="):
            groups = name.split("=")
            while groups and not groups[-1]:
                groups.pop()
            name = "=".join(groups)
        out.append((_clip(name.rstrip("\0 ")), None))
    return out


def _binary_numbers(vr: str, data: bytes, little: bool) -> list | None:
    return _BINARY_DECODERS[vr, little](data, None)


def _binary_decoder(vr: str, little: bool) -> Callable[[bytes, object], list | None]:
    """The decoder of the (non-empty) values of binary numeric VR ``vr``:
    ``None`` when their size is no multiple of the number size."""
    code, size = BINARY_NUMBERS[vr]
    order = "<" if little else ">"
    unpack_one = struct.Struct(order + code).unpack
    floating = code in "fd"

    def decode(data: bytes, encodings: object) -> list | None:
        count, extra = divmod(len(data), size)
        if extra:
            return None
        numbers = unpack_one(data) if count == 1 else struct.unpack(f"{order}{count}{code}", data)
        if floating:
            return [format_value(vr, number) for number in numbers]
        return [(str(number), float(number)) for number in numbers]

    return decode


_BINARY_DECODERS = {(vr, little): _binary_decoder(vr, little)
                    for vr in BINARY_NUMBERS for little in (True, False)}


def _tags(data: bytes, little: bool) -> list:
    count = len(data) // 4
    words = struct.unpack(f"{'<' if little else '>'}{count * 2}H", data[: count * 4])
    return [(tag_text(words[i] << 16 | words[i + 1]), None) for i in range(0, len(words), 2)]


def format_value(vr: str, value: object) -> tuple[str | None, float | None]:
    """``(value_text, value_num)`` for one value already converted by pydicom."""
    if value is None:
        return None, None
    if isinstance(value, float) and vr == "FL":
        text = f"{value:.7g}"  # the float32 value as it was written, not its noise
    elif isinstance(value, BaseTag):
        text = tag_text(value)
    else:
        text = str(value).rstrip("\0 ")
    if vr in STRIP_BOTH:
        text = text.lstrip()
    num = _number(vr, text) if vr in NUMERIC_VRS and text else None
    return _clip(text) or None, num


def undecodable(raw: RawDataElement) -> list:
    """Values pydicom refused to convert: their bytes as Latin-1 text.

    Empty when the VR is unknown or binary (nothing worth indexing).
    """
    vr = getattr(raw, "VR", None)
    if not vr or vr in BYTES_VRS or not isinstance(raw.value, (bytes, bytearray)):
        return []
    text = bytes(raw.value).decode("latin-1").strip("\0 ")
    return [(_clip(text) or None, None)]


def _clip(text: str) -> str:
    return text if len(text) <= MAX_VALUE_LENGTH else text[:MAX_VALUE_LENGTH]


def _number(vr: str, text: str) -> float | None:
    """The number behind a value, for range searches (``None`` if it has none)."""
    try:
        return _NUMBER_PARSERS.get(vr, _finite_float)(text)
    except ValueError:
        return None


def _finite_float(text: str) -> float | None:
    """A DS, IS or binary number; ``None`` for infinities and NaN.

    :raises ValueError: when ``text`` is no number.
    """
    number = float(text)
    return number if math.isfinite(number) else None


def _date_number(text: str) -> float | None:
    """DA as the number YYYYMMDD (the old ``YYYY.MM.DD`` form too)."""
    digits = text.replace(".", "") if len(text) == 10 else text
    return float(int(digits)) if len(digits) == 8 and digits.isdigit() else None


def _time_number(text: str) -> float | None:
    """TM as the number HHMMSS.ffffff (``HH`` and ``HHMM`` padded, ``HH:MM:SS`` too)."""
    whole, _, fraction = text.replace(":", "").partition(".")
    if not whole.isdigit() or len(whole) not in (2, 4, 6):
        return None
    if fraction and not fraction.isdigit():
        return None
    return float(whole.ljust(6, "0") + ("." + fraction if fraction else ""))


#: How :func:`_number` reads a value, by VR (others: :func:`_finite_float`).
_NUMBER_PARSERS = {"DA": _date_number, "TM": _time_number}


def _text_decoder(vr: str) -> Callable[[bytes, list[str]], list]:
    """The decoder of the (non-empty) values of text VR ``vr``.

    (``text[:MAX_VALUE_LENGTH]`` is :func:`_clip`, inlined: this runs for
    nearly every element of every file.)
    """
    default_repertoire = vr in ASCII_MULTI or vr == "UR"
    strip = str.strip if vr in STRIP_BOTH else str.rstrip
    number = _NUMBER_PARSERS.get(vr, _finite_float) if vr in NUMERIC_VRS else None

    def decode_single(data: bytes, encodings: list[str]) -> list:
        if default_repertoire:
            text = data.decode("latin-1")
        else:
            text = decode_bytes(data, encodings, TEXT_VR_DELIMS)
        return [(text.rstrip("\0 ")[:MAX_VALUE_LENGTH] or None, None)]

    def decode(data: bytes, encodings: list[str]) -> list:
        if default_repertoire:
            text = data.decode("latin-1")
        else:
            text = decode_bytes(data, encodings, TEXT_VR_DELIMS)
        out = []
        for part in text.split("\\") if "\\" in text else (text,):
            part = strip(part, "\0 ")
            num = None
            if number is not None and part:
                try:
                    num = number(part)
                except ValueError:
                    pass
            out.append((part[:MAX_VALUE_LENGTH] or None, num))
        return out

    return decode_single if vr in CHARSET_SINGLE or vr == "UR" else decode


_TEXT_DECODERS = {vr: _text_decoder(vr) for vr in (*ASCII_MULTI, *CHARSET_MULTI,
                                                    *CHARSET_SINGLE, "UR")}
FAST_VRS = frozenset({*_TEXT_DECODERS, *BINARY_NUMBERS, "AT", "PN"})


def value_decoder(vr: str) -> Callable[[bytes, list[str]], list | None]:
    """:func:`decode_value` for the non-empty little endian values of ``vr``."""
    decoder = _TEXT_DECODERS.get(vr) or _BINARY_DECODERS.get((vr, True))
    if vr == "PN":
        decoder = _person_names
    if decoder is not None:
        return decoder
    return lambda data, encodings: decode_value(vr, data, True, encodings)


def flatten(datasets: Iterable[Dataset], max_values: int) -> list[HeaderElement]:
    """Rows for every element of ``datasets`` (the file meta, the data set, ...)."""
    flattener = Flattener(max_values)
    for ds in datasets:
        flattener.add_dataset(ds)
    return flattener.rows

