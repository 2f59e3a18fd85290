"""The fast reader (``sendit_pydicom.fast``) against the pydicom path.

Wherever the fast reader accepts a file, its :class:`ParsedFile` must equal the
pydicom path's in every field and row; anything else it must leave to pydicom
(and then ``parse`` answers exactly as pydicom's path does).
"""
from __future__ import annotations

import random
import warnings
from pathlib import Path

import deid_data
import pydicom
import pydicom.data
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage, ExplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless, generate_uid,
)

import sendit_pydicom.parser
from sendit_core.models.header import MAX_VALUE_LENGTH
from sendit_core.parsing import ParsedFile, ParseError
from sendit_core.synth import SeriesSpec, write_series
from sendit_pydicom import fast, parse
from sendit_pydicom.parser import MAX_POSITIONS, MB, parse_with_pydicom, parsed_from_rows

DATA = Path(pydicom.data.__file__).parent
DEID = Path(deid_data.__file__).parent / "data"
CORPUS = sorted(
    [p for folder in (DATA / "test_files", DATA / "charset_files") for p in folder.rglob("*")
     if p.is_file()] + [p for p in DEID.rglob("*") if p.is_file()]
)
#: Files the fast reader must take (explicit VR little endian, plain character sets).
MUST_TAKE = {
    "CT_small.dcm", "MR_small.dcm", "MR_small_padded.dcm", "JPEG2000.dcm", "JPEG-lossy.dcm",
    "JPGExtended.dcm", "MR_small_RLE.dcm", "SC_rgb_rle.dcm", "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_jp2klossless.dcm", "SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_jpeg_gdcm.dcm",
    "examples_overlay.dcm", "waveform_ecg.dcm", "test-SR.dcm", "liver_1frame.dcm",
}
BAIL = "bail"


@pytest.fixture(autouse=True)
def quiet_pydicom():
    """pydicom warns about the odd test files on purpose; that is not our concern."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def slow_outcome(path: Path, max_values: int = 1024) -> object:
    """The pydicom path's answer: a ParsedFile, None, or the ParseError's message."""
    try:
        return parse_with_pydicom(path, max_values=max_values)
    except ParseError as exc:
        return ("ParseError", str(exc))


def fast_outcome(path: Path, max_values: int = 1024) -> object:
    """The fast reader's answer, as :func:`slow_outcome`'s, or :data:`BAIL`."""
    try:
        rows = fast.read_rows(path, 2048 * MB, min(max_values, MAX_POSITIONS))
    except ParseError as exc:
        return ("ParseError", str(exc))
    parsed = parsed_from_rows(rows) if rows is not None else None
    return BAIL if parsed is None else parsed


def public_outcome(path: Path, max_values: int = 1024) -> object:
    """What ``sendit_pydicom.parse`` answers (fast reader, then pydicom)."""
    try:
        return parse(path, max_values=max_values)
    except ParseError as exc:
        return ("ParseError", str(exc))


def assert_same(fast_answer: object, slow_answer: object) -> None:
    """Equal answers; for two ParsedFiles, point at the first differing row."""
    if isinstance(fast_answer, ParsedFile) and isinstance(slow_answer, ParsedFile):
        for index, (mine, theirs) in enumerate(zip(fast_answer.elements, slow_answer.elements)):
            assert mine == theirs, f"row {index} differs"
        assert len(fast_answer.elements) == len(slow_answer.elements)
    assert fast_answer == slow_answer


def check(path: Path, max_values: int = 1024) -> bool:
    """Both paths agree on ``path`` (when the fast one answers); True if it did."""
    slow = slow_outcome(path, max_values)
    answer = fast_outcome(path, max_values)
    if answer != BAIL:
        assert_same(answer, slow)
    assert_same(public_outcome(path, max_values), slow)
    return answer != BAIL


# -- every bundled file -------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> list[Path]:
    """A few generated series: 64 x 64 files and a 512 x 512 CT."""
    root = tmp_path_factory.mktemp("synth")
    return (write_series(root / "small", SeriesSpec(slices=3))
            + write_series(root / "wide", SeriesSpec(slices=2, rows=128, columns=96))
            + write_series(root / "ct", SeriesSpec(slices=1, rows=512, columns=512)))


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_both_paths_agree_on_every_bundled_file(path):
    check(path)


def test_fast_reader_takes_the_common_files(synthetic):
    taken = {path.name for path in CORPUS if fast_outcome(path) != BAIL}
    assert MUST_TAKE <= taken, sorted(MUST_TAKE - taken)
    assert len(taken) >= 140, f"the fast reader took only {len(taken)} of {len(CORPUS)} files"
    for path in synthetic:
        assert check(path), f"{path} left to pydicom"


def test_parse_uses_the_fast_reader(synthetic, monkeypatch):
    def no_pydicom(*args, **kwargs):
        raise AssertionError("the pydicom path was used")

    monkeypatch.setattr(sendit_pydicom.parser, "parse_with_pydicom", no_pydicom)
    for path in [*synthetic, DATA / "test_files" / "CT_small.dcm"]:
        assert isinstance(parse(path), ParsedFile)


# -- generated files with every feature the fast reader handles --------------------------


def _item(**elements) -> Dataset:
    item = Dataset()
    for keyword, value in elements.items():
        setattr(item, keyword, value)
    return item


def _rich(charset: str | None = "ISO_IR 100", undefined: bool = False) -> Dataset:
    """An image with every VR, nested and private sequences, bulk data and odd values."""
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.ImageType = ["ORIGINAL", "PRIMARY", "", "AXIAL "]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyDate, ds.SeriesDate, ds.ContentDate = "2024.01.15", "bad", ""
    ds.StudyTime, ds.SeriesTime, ds.ContentTime = "12", "10:15:30", "123456.789"
    ds.AcquisitionDateTime = "20240115101530.123"
    ds.Modality = "CT"
    ds.InstitutionName = "  Hôpital Général  " if charset != "ISO_IR 192" else "Больница"
    ds.ReferringPhysicianName = "Müller^Jürgen=ミュラー^ユルゲン" if charset == "ISO_IR 192" \
        else "Müller^Jürgen\\Dupont^Zoé"
    ds.PatientName = "Test^Patient=="
    ds.PatientID = ""
    ds.PatientAge = "054Y"
    ds.PatientWeight = "72.5\\nan\\inf\\1e400"
    ds.StudyDescription = "x" * (MAX_VALUE_LENGTH + 40)
    ds.ImageComments = "long text\\with a backslash " * 20  # LT: one value
    ds.add_new(0x00081190, "UR", "http://example.org/wado?x=1 ")
    ds.add_new(0x00189367, "UC", "uc one\\uc two ")
    ds.add_new(0x00400280, "ST", " short text \0")
    ds.add_new(0x00287FE0, "UT", "unlimited " * 2000)  # a header longer than FIRST_READ
    ds.FrameIncrementPointer = [0x00181063, 0x00181065]  # AT
    ds.SliceThickness = "2.5"
    ds.InstanceNumber = "12"
    ds.ImagePositionPatient = ["-120", "-140.5", "50"]
    ds.Rows, ds.Columns = 2, 2
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.LargestImagePixelValue = 4000
    ds.add_new(0x00189219, "FD", [0.1, -2.5e-300, float("inf")])
    ds.add_new(0x00189306, "FL", [9.7, 1 / 3])
    ds.add_new(0x00181310, "US", [0, 64, 64, 0])
    ds.add_new(0x00186020, "SL", [-5, 7])
    ds.add_new(0x00186024, "SS", [])  # empty
    ds.add_new(0x00186022, "UL", 4_000_000_000)
    ds.add_new(0x00186030, "UV", [2**64 - 1])
    ds.add_new(0x00186032, "SV", [-(2**63)])
    ds.add_new(0x00180035, "DS", None)  # empty
    ds.add_new(0x00281201, "OW", b"\0\1" * 8)  # binary: never indexed
    ds.add_new(0x00282000, "OB", b"ICC")
    ds.add_new(0x60003000, "OW", b"\0" * 8)  # Overlay Data: bulk
    ds.add_new(0x60000010, "US", 2)
    ds.add_new(0x00290010, "LO", "ACME 1.0")  # private creator of block 10
    ds.add_new(0x00291001, "DS", "12.5")
    ds.add_new(0x00291002, "LO", ["a", "b"])
    ds.add_new(0x00291003, "OB", b"blob")
    ds.add_new(0x00291101, "LO", "no creator for block 11")
    ds.add_new(0x00290020, "LO", "ACME SQ")
    ds.add_new(0x00292001, "SQ", Sequence([_item(PatientID="in a private sequence")]))
    code = _item(CodeValue="T-D3000", CodingSchemeDesignator="SRT", CodeMeaning="Poitrine é")
    code.add_new(0x00110010, "LO", "ITEM CREATOR")
    code.add_new(0x00111001, "SH", "item private")
    code.add_new(0x00111002, "SQ", Sequence([_item(CodeValue="deep")]))
    ds.AnatomicRegionSequence = Sequence([code, _item(), _item(CodeValue="2")])
    ds.ProcedureCodeSequence = Sequence()  # empty sequence
    icon = _item(Rows=1, Columns=1, BitsAllocated=8, PixelData=b"\x80\x80")
    ds.IconImageSequence = Sequence([icon])  # pixel data inside an item: not a stop
    waveform = _item(NumberOfWaveformChannels=1)
    waveform.add_new(0x54001010, "OW", b"\0\1\2\3")  # Waveform Data: bulk
    ds.WaveformSequence = Sequence([waveform])
    ds.ReferencedStudySequence = Sequence([_item(
        ReferencedSOPClassUID="1.2.840.10008.3.1.2.3.1",
        ReferencedSeriesSequence=Sequence([_item(SeriesInstanceUID="1.2.3.4")]))])
    ds.PixelData = b"\1\0\2\0\3\0\4\0"
    ds.add_new(0x7FE10010, "LO", "ACME TRAILER")  # after the pixels
    ds.add_new(0x7FE11001, "LO", ["after", "the pixels"])
    ds.add_new(0xFFFCFFFC, "OB", b"\0" * 6)  # trailing padding
    if undefined:
        for elem in ds.iterall():
            if elem.VR == "SQ":
                elem.is_undefined_length = True
                for item in elem.value:
                    item.is_undefined_length_sequence_item = True
    return ds


def _save(ds: Dataset, path: Path, syntax: str = ExplicitVRLittleEndian) -> Path:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("charset", [None, "", "ISO_IR 6", "ISO 2022 IR 6", "ISO_IR 100",
                                     "ISO_IR 192"])
@pytest.mark.parametrize("undefined", [False, True], ids=["defined", "undefined"])
def test_rich_file_is_taken_and_matches(tmp_path, charset, undefined):
    path = _save(_rich(charset, undefined), tmp_path / "rich.dcm")
    assert len(path.read_bytes()) > fast.FIRST_READ  # the header is read in two goes
    assert check(path)
    parsed = fast_outcome(path)
    assert [e.value_text for e in parsed.elements if e.keyword_path == "(7FE1,1001)"] == [
        "after", "the pixels"]


@pytest.mark.parametrize("max_values", [1, 2, 3])
def test_max_values_is_applied_the_same_way(tmp_path, max_values):
    assert check(_save(_rich(), tmp_path / "rich.dcm"), max_values=max_values)


def test_encapsulated_file_is_taken_and_matches(tmp_path):
    ds = _rich(undefined=True)
    ds.PixelData = encapsulate([b"\xff\xd8" + b"a" * 998, b"\xff\xd8" + b"b" * 998])
    ds["PixelData"].VR = "OB"
    ds.NumberOfFrames = 2
    assert check(_save(ds, tmp_path / "jpeg.dcm", JPEGBaseline8Bit))
    assert check(_save(ds, tmp_path / "rle.dcm", RLELossless))


@pytest.mark.parametrize("charset", ["ISO_IR 144", "\\ISO 2022 IR 87", "GB18030"])
def test_other_character_sets_are_left_to_pydicom(tmp_path, charset):
    ds = _rich()
    ds.SpecificCharacterSet = charset
    path = _save(ds, tmp_path / "other.dcm")
    assert fast_outcome(path) == BAIL
    check(path)


def test_elements_pydicom_may_read_otherwise_are_left_to_it(tmp_path):
    ds = _rich()
    ds.add_new(0x00091001, "UN", b"ACME\0\0")  # UN: pydicom may give it a VR
    assert fast_outcome(_save(ds, tmp_path / "un.dcm")) == BAIL
    ds = _rich()
    ds.add_new(0x00080005, "LO", "ISO_IR 100")  # a character set not of VR CS
    assert fast_outcome(_save(ds, tmp_path / "lo.dcm")) == BAIL
    ds = _rich()
    ds.add_new(0x00181063, "DS", "1")
    path = _save(ds, tmp_path / "badlen.dcm")
    data = path.read_bytes()
    path.write_bytes(data.replace(b"\x18\x00\x63\x10DS\x02\x001 ", b"\x18\x00\x63\x10UL\x02\x001 "))
    assert fast_outcome(path) == BAIL  # a UL of two bytes: pydicom converts it its way
    check(path)


# -- remembered values and person names -------------------------------------------------


def test_remembered_values_follow_the_character_set(tmp_path):
    """The same bytes under another Specific Character Set are decoded again."""
    ds = _rich("ISO_IR 192")
    ds.InstitutionName = "Hôpital"
    utf8 = _save(ds, tmp_path / "utf8.dcm")
    latin1 = tmp_path / "latin1.dcm"
    latin1.write_bytes(utf8.read_bytes().replace(b"ISO_IR 192", b"ISO_IR 100"))
    for path, name in [(utf8, "Hôpital"), (latin1, "HÃ´pital"), (utf8, "Hôpital")]:
        assert check(path)
        rows = fast_outcome(path).elements
        assert [e.value_text for e in rows if e.keyword_path == "InstitutionName"] == [name]


def test_a_full_memory_is_emptied(synthetic, monkeypatch):
    monkeypatch.setattr(fast, "REMEMBERED_VALUES", 2)
    fast.forget_values()
    for path in synthetic * 2:
        assert check(path)
    for table in fast._common_vrs.values():
        assert all(len(memory) <= 2 for _, _, memory in table.values())


@pytest.mark.parametrize("charset", ["ISO_IR 6", "ISO_IR 100", "ISO_IR 192"])
def test_person_names_are_pydicoms(charset):
    """Names decoded without PersonName objects are what str(PersonName) gives."""
    from pydicom.charset import convert_encodings
    from pydicom.multival import MultiValue
    from pydicom.values import convert_PN

    from sendit_pydicom.elements import decode_value

    encodings = convert_encodings(charset)
    pieces = [b"A", b"b", b"^", b"=", b" ", b"\\", b"\0", b"\xe9", b"\xc3\xa9", b"\xff", b"1"]
    rng = random.Random(charset)
    for _ in range(3000):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 12)))
        names = convert_PN(data, encodings)
        names = names if isinstance(names, MultiValue) else [names]
        expected = [(str(name).rstrip("\0 ")[:MAX_VALUE_LENGTH], None) for name in names]
        assert decode_value("PN", data, True, encodings) == expected, data


# -- broken files -------------------------------------------------------------------------


def _pixel_start(data: bytes) -> int:
    return data.rindex(b"\xe0\x7f\x10\x00")


@pytest.mark.parametrize("name", ["native", "jpeg"])
def test_cut_inside_the_pixel_data_is_reported_like_pydicom(tmp_path, name):
    ds = _rich()
    del ds[0x7FE10010], ds[0x7FE11001], ds[0xFFFCFFFC]
    syntax = ExplicitVRLittleEndian
    if name == "jpeg":
        ds.PixelData = encapsulate([b"\xff\xd8" + b"a" * 998, b"\xff\xd8" + b"b" * 998])
        ds["PixelData"].VR = "OB"
        syntax = JPEGBaseline8Bit
    path = _save(ds, tmp_path / "whole.dcm", syntax)
    data = path.read_bytes()
    start = _pixel_start(data)
    for cut in (start + 12, start + 14, start + 18, len(data) - 1):
        path.write_bytes(data[:cut])
        answer = fast_outcome(path)
        assert answer[0] == "ParseError" and "Pixel Data" in answer[1]  # not left to pydicom
        assert_same(answer, slow_outcome(path))


def _mutants(data: bytes, rng: random.Random, flips: int) -> list[bytes]:
    """Truncations through the header and around the pixel data, and random flips."""
    header_end = _pixel_start(data) + 12 if b"\xe0\x7f\x10\x00" in data else min(len(data), 4096)
    step = max(3, header_end // 300)
    cuts = {*range(1, header_end, step), *(header_end + d for d in range(-12, 12)), len(data) - 1}
    mutants = [data[:cut] for cut in sorted(cuts) if 0 < cut < len(data)]
    for _ in range(flips):
        mutant = bytearray(data)
        for _ in range(rng.choice((1, 1, 2, 3))):
            pos = rng.randrange(128, header_end)
            mutant[pos] = rng.choice((0, 0xFF, 0x20, 0x5C, rng.randrange(256), mutant[pos] ^ 1))
        mutants.append(bytes(mutant))
    return mutants


@pytest.mark.parametrize("source", ["synthetic", "rich", "CT_small.dcm", "JPEG2000.dcm",
                                    "SC_rgb_jpeg_dcmtk.dcm"])
def test_fuzzed_files_get_the_pydicom_answer(tmp_path, synthetic, source):
    if source == "synthetic":
        data = synthetic[0].read_bytes()
    elif source == "rich":
        data = _save(_rich(undefined=True), tmp_path / "rich.dcm").read_bytes()
    else:
        data = (DATA / "test_files" / source).read_bytes()
    rng = random.Random(source)
    path = tmp_path / "mutant.dcm"
    taken = 0
    for mutant in _mutants(data, rng, flips=250):
        path.write_bytes(mutant)
        taken += check(path)
    assert taken  # the fast reader did answer for some of them
