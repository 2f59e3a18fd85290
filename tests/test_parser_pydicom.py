"""The built-in pydicom parser plugin, called directly (no web app, no database)."""
from __future__ import annotations

import random
import warnings
from pathlib import Path

import deid_data
import pydicom
import pydicom.data
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian,
    JPEGBaseline8Bit, generate_uid,
)

import sendit_pydicom
from sendit_core.models.header import MAX_VALUE_LENGTH
from sendit_core.parsing import ParsedFile, ParseError, parse_file
from sendit_core.plugins import get_plugin_manager
from sendit_core.settings import SettingsError, load_settings
from sendit_core.synth import SeriesSpec, write_series
from sendit_pydicom.elements import BYTES_VRS, tag_text

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
CHARSET_FILES = Path(pydicom.data.__file__).parent / "charset_files"
COOKIES = Path(deid_data.__file__).parent / "data" / "dicom-cookies"
ALL_TEST_FILES = sorted(p for p in TEST_FILES.rglob("*") if p.is_file())


@pytest.fixture(autouse=True)
def quiet_pydicom():
    """pydicom warns about the odd test files on purpose; that is not our concern."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def parse(path, **settings) -> ParsedFile | None:
    return sendit_pydicom.sendit_parse_file(path=Path(path), settings=settings)


def values(parsed: ParsedFile, keyword_path: str, item: str = "") -> list:
    """The value texts of one element, in position order."""
    rows = [e for e in parsed.elements if e.keyword_path == keyword_path and e.item == item]
    return [e.value_text for e in sorted(rows, key=lambda e: e.position)]


def row(parsed: ParsedFile, keyword_path: str, item: str = "", position: int = 0):
    (found,) = [e for e in parsed.elements if e.keyword_path == keyword_path
                and e.item == item and e.position == position]
    return found


def image_dataset(**elements) -> Dataset:
    """A minimal CT image with file meta; keyword arguments add elements."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.PatientName = "Test^Patient"
    ds.InstanceNumber = 3
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def write(ds: Dataset, path: Path, **kwargs) -> Path:
    ds.save_as(path, **kwargs)
    return path


# -- every bundled file ends in one of the three outcomes ------------------------


@pytest.mark.parametrize("path", ALL_TEST_FILES, ids=lambda p: str(p.relative_to(TEST_FILES)))
def test_every_pydicom_test_file_is_parsed_declined_or_rejected(path):
    try:
        parsed = parse(path)
    except ParseError as exc:
        assert str(exc), "a ParseError must say why"
        return
    if parsed is None:
        return
    assert parsed.sop_instance_uid and parsed.parser == "sendit_pydicom"
    assert parsed.transfer_syntax_uid
    for element in parsed.elements:
        assert element.vr not in BYTES_VRS and len(element.vr) == 2
        assert not element.tag_path.endswith(("7FE00010", "7FE00008", "7FE00009"))
        assert element.value_text is None or len(element.value_text) <= MAX_VALUE_LENGTH
        assert all(len(part) == 8 for part in element.tag_path.split("."))
        assert element.keyword_path.count(".") == element.tag_path.count(".")


@pytest.mark.parametrize("name, outcome", [
    ("CT_small.dcm", "parsed"),
    ("JPEG2000.dcm", "parsed"),
    ("MR_small_RLE.dcm", "parsed"),
    ("image_dfl.dcm", "parsed"),  # deflated
    ("SC_rgb_jpeg.dcm", "parsed"),  # claims explicit VR, is implicit
    ("ExplVR_LitEndNoMeta.dcm", "parsed"),
    ("ExplVR_BigEndNoMeta.dcm", "parsed"),
    ("MR_truncated.dcm", "file is truncated"),
    ("rtplan_truncated.dcm", "file is truncated"),
    ("dicomdirtests/DICOMDIR", "this is a DICOMDIR"),
    ("README.txt", None),
    ("crayons.icc", None),
    ("zipMR.gz", None),
])
def test_known_outcomes(name, outcome):
    path = TEST_FILES / name
    if outcome is None:
        assert parse(path) is None
    elif outcome == "parsed":
        assert isinstance(parse(path), ParsedFile)
    else:
        with pytest.raises(ParseError, match=outcome):
            parse(path)


# -- values -------------------------------------------------------------------------


def test_ct_small_known_values():
    parsed = parse(get_testdata_file("CT_small.dcm"))
    assert parsed.sop_instance_uid == "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"
    assert parsed.sop_class_uid == CTImageStorage
    assert parsed.study_instance_uid == "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
    assert parsed.series_instance_uid == "1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322"
    assert parsed.modality == "CT"
    assert parsed.instance_number == 1
    assert parsed.transfer_syntax_uid == ExplicitVRLittleEndian
    assert values(parsed, "PatientName") == ["CompressedSamples^CT1"]
    thickness = row(parsed, "SliceThickness")
    assert (thickness.vr, thickness.value_text, thickness.value_num) == ("DS", "5.000000", 5.0)
    assert row(parsed, "ExposureTime").value_num == 1601.0  # IS
    assert row(parsed, "StudyDate").value_num == 20040119  # DA as YYYYMMDD
    assert row(parsed, "StudyTime").value_num == 72730  # TM as HHMMSS
    assert row(parsed, "Rows").value_num == 128  # US
    assert row(parsed, "(0027,1043)").value_text == "9.7"  # FL, without float32 noise
    assert row(parsed, "AccessionNumber").value_text is None  # empty element: one row
    assert values(parsed, "TransferSyntaxUID") == [ExplicitVRLittleEndian]  # file meta


def test_multi_valued_elements_give_one_row_per_position():
    parsed = parse(get_testdata_file("CT_small.dcm"))
    assert values(parsed, "ImageType") == ["ORIGINAL", "PRIMARY", "AXIAL"]
    position = [row(parsed, "ImagePositionPatient", position=i) for i in range(3)]
    assert [r.value_num for r in position] == [-158.135803, -179.035797, -75.699997]
    assert [r.position for r in position] == [0, 1, 2]


def test_nested_sequence_value_by_keyword_path_and_item():
    parsed = parse(get_testdata_file("rtplan.dcm"))  # implicit VR little endian
    path = ("BeamSequence.ControlPointSequence.ReferencedDoseReferenceSequence."
            "ReferencedDoseReferenceNumber")
    found = row(parsed, path, item="0.1.1")
    assert found.tag_path == "300A00B0.300A0111.300C0050.300C0051"
    assert (found.value_text, found.value_num, found.vr) == ("2", 2.0, "IS")
    assert values(parsed, path, item="0.1.0") == ["1"]


def test_a_sequence_is_one_row_counting_its_items(tmp_path):
    ds = image_dataset(ReferencedImageSequence=Sequence([Dataset(), Dataset()]),
                       ProcedureCodeSequence=Sequence())
    ds.ReferencedImageSequence[1].ReferencedSOPInstanceUID = "1.2.3"
    parsed = parse(write(ds, tmp_path / "s.dcm"))
    seq = row(parsed, "ReferencedImageSequence")
    assert (seq.vr, seq.value_text, seq.value_num, seq.item) == ("SQ", None, 2.0, "")
    assert row(parsed, "ProcedureCodeSequence").value_num == 0.0
    assert values(parsed, "ReferencedImageSequence.ReferencedSOPInstanceUID", "1") == ["1.2.3"]


def test_private_tag_keeps_its_tag_text_and_creator():
    parsed = parse(get_testdata_file("CT_small.dcm"))
    private = row(parsed, "(0009,1001)")
    assert private.tag_path == "00091001"
    assert (private.value_text, private.private_creator) == ("GE_GENESIS_FF", "GEMS_IDEN_01")
    assert row(parsed, "(0009,0010)").value_text == "GEMS_IDEN_01"


def test_private_tag_inside_a_sequence_item(tmp_path):
    item = Dataset()
    item.add_new(0x00110010, "LO", "ACME 1.0")
    item.add_new(0x00111001, "DS", "12.5")
    ds = image_dataset(ReferencedSeriesSequence=Sequence([item]))
    parsed = parse(write(ds, tmp_path / "p.dcm"))
    found = row(parsed, "ReferencedSeriesSequence.(0011,1001)", item="0")
    assert (found.private_creator, found.value_num) == ("ACME 1.0", 12.5)
    assert found.tag_path == "00081115.00111001"


@pytest.mark.parametrize("name, expected", [
    ("chrH31.dcm", "Yamada^Tarou=山田^太郎=やまだ^たろう"),
    ("chrGerm.dcm", "Äneas^Rüdiger"),
    ("chrRuss.dcm", "Люкceмбypг"),
    ("chrI2.dcm", "Hong^Gildong=洪^吉洞=홍^길동"),
    ("chrArab.dcm", "قباني^لنزار"),
])
def test_character_sets_are_decoded(name, expected):
    parsed = parse(CHARSET_FILES / name)
    assert values(parsed, "PatientName") == [expected]


@pytest.mark.parametrize("path", sorted(CHARSET_FILES.glob("chr*.dcm")), ids=lambda p: p.name)
def test_text_matches_pydicom_in_every_charset_file(path):
    try:
        parsed = parse(path)
    except ParseError:  # fragments without a SOP Instance UID
        return
    ds = pydicom.dcmread(path)
    for element in ds:
        if element.VR in ("PN", "LO", "SH", "ST", "LT", "UT") and element.value:
            expected = element.value if element.VM > 1 else [element.value]
            keyword = element.keyword or tag_text(element.tag)
            assert values(parsed, keyword) == [str(v).strip() for v in expected]


def test_big_endian_file_gives_the_same_values_as_little_endian():
    big = parse(get_testdata_file("MR_small_bigendian.dcm"))
    little = parse(get_testdata_file("MR_small.dcm"))
    assert big.transfer_syntax_uid == ExplicitVRBigEndian
    for keyword in ("PatientName", "Rows", "PixelSpacing", "ImagePositionPatient", "EchoTime"):
        assert values(big, keyword) == values(little, keyword)
    assert big.sop_instance_uid == little.sop_instance_uid


def test_implicit_vr_file_without_preamble_is_accepted(tmp_path):
    ds = image_dataset(SliceThickness="2.5", ImageType=["DERIVED", "SECONDARY"])
    del ds.file_meta
    path = write(ds, tmp_path / "raw.dcm", implicit_vr=True, little_endian=True)
    assert path.read_bytes()[:2] == b"\x08\x00" and b"DICM" not in path.read_bytes()[:132]
    parsed = parse(path)
    assert parsed.sop_instance_uid == ds.SOPInstanceUID
    assert parsed.transfer_syntax_uid == ImplicitVRLittleEndian
    assert row(parsed, "SliceThickness").value_num == 2.5
    assert values(parsed, "ImageType") == ["DERIVED", "SECONDARY"]


def test_explicit_big_endian_file_without_preamble_is_accepted():
    parsed = parse(TEST_FILES / "ExplVR_BigEndNoMeta.dcm")
    assert parsed.transfer_syntax_uid == ExplicitVRBigEndian
    assert parsed.modality == "RTPLAN"


def test_long_values_are_truncated_and_padding_stripped(tmp_path):
    ds = image_dataset(ImageComments="x" * 5000, InstitutionName="General  ",
                       StudyDescription="  CHEST  ")
    parsed = parse(write(ds, tmp_path / "long.dcm"))
    assert values(parsed, "ImageComments") == ["x" * MAX_VALUE_LENGTH]
    assert values(parsed, "InstitutionName") == ["General"]
    assert values(parsed, "StudyDescription") == ["CHEST"]  # LO: leading spaces insignificant
    assert not parsed.sop_instance_uid.endswith("\0")


def test_time_and_date_numbers(tmp_path):
    ds = image_dataset(StudyTime="12", SeriesTime="1230", AcquisitionTime="123456.789",
                       ContentTime="10:15:30", StudyDate="2024.01.15", SeriesDate="bad")
    parsed = parse(write(ds, tmp_path / "t.dcm"))
    assert row(parsed, "StudyTime").value_num == 120000.0
    assert row(parsed, "SeriesTime").value_num == 123000.0
    assert row(parsed, "AcquisitionTime").value_num == 123456.789
    assert row(parsed, "ContentTime").value_num == 101530.0
    assert row(parsed, "StudyDate").value_num == 20240115
    assert row(parsed, "SeriesDate").value_num is None


def test_unparsable_instance_number_is_none(tmp_path):
    path = write(image_dataset(InstanceNumber="12"), tmp_path / "n.dcm")
    data = path.read_bytes()
    assert data.count(b"IS\x02\x0012") == 1
    path.write_bytes(data.replace(b"IS\x02\x0012", b"IS\x02\x00ab"))
    parsed = parse(path)
    assert parsed.instance_number is None
    assert values(parsed, "InstanceNumber") == ["ab"]


def test_max_values_caps_the_positions(tmp_path):
    ds = image_dataset(ImageType=[f"T{i}" for i in range(40)])
    parsed = parse(write(ds, tmp_path / "m.dcm"), **{"sendit.pydicom.max_values": 10})
    assert values(parsed, "ImageType") == [f"T{i}" for i in range(10)]


def test_no_binary_values_are_indexed():
    parsed = parse(get_testdata_file("waveform_ecg.dcm"))
    assert not [e for e in parsed.elements if e.vr in BYTES_VRS]
    assert not [e for e in parsed.elements if e.keyword_path.endswith("WaveformData")]
    assert values(parsed, "WaveformSequence.NumberOfWaveformChannels", "0") == ["12"]


# -- what follows the pixel data ------------------------------------------------------


def test_elements_after_native_pixel_data_are_indexed(tmp_path):
    ds = image_dataset(Rows=2, Columns=2, BitsAllocated=16, PixelData=b"\0" * 8)
    ds.add_new(0x7FE10010, "LO", "ACME TRAILER")
    ds.add_new(0x7FE11001, "LO", "after the pixels")
    parsed = parse(write(ds, tmp_path / "tail.dcm"))
    found = row(parsed, "(7FE1,1001)")
    assert (found.value_text, found.private_creator) == ("after the pixels", "ACME TRAILER")


def test_encapsulated_pixel_data_is_skipped_and_checked(tmp_path):
    ds = image_dataset(Rows=8, Columns=8, NumberOfFrames=2,
                       PixelData=encapsulate([b"\xff\xd8" + b"a" * 998, b"\xff\xd8" + b"b" * 998]))
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.add_new(0x7FE10010, "LO", "ACME TRAILER")
    ds.add_new(0x7FE11001, "LO", "after the fragments")
    path = write(ds, tmp_path / "jpeg.dcm")
    parsed = parse(path)
    assert parsed.transfer_syntax_uid == JPEGBaseline8Bit
    assert values(parsed, "(7FE1,1001)") == ["after the fragments"]
    data = path.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: data.index(b"b" * 100)])
    with pytest.raises(ParseError, match="file is truncated: a .* fragment"):
        parse(cut)


# -- broken and foreign files ---------------------------------------------------------


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.dcm").write_bytes(b"")
    with pytest.raises(ParseError, match=r"^empty file \(0 bytes\)$"):
        parse(tmp_path / "empty.dcm")


@pytest.mark.parametrize("source", ["CT_small.dcm", "rtplan.dcm", "MR_small_bigendian.dcm"])
def test_file_cut_in_half_is_truncated(tmp_path, source):
    data = Path(get_testdata_file(source)).read_bytes()
    path = tmp_path / "half.dcm"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ParseError, match="^file is truncated"):
        parse(path)


def test_generated_ct_cut_in_half_is_truncated(tmp_path):
    (ct,) = write_series(tmp_path / "series", SeriesSpec(slices=1, rows=256, columns=256))
    assert parse(ct).modality == "CT"
    data = ct.read_bytes()
    (tmp_path / "half.dcm").write_bytes(data[: len(data) // 2])
    with pytest.raises(ParseError, match=r"^file is truncated: \(7FE0,0010\) Pixel Data"):
        parse(tmp_path / "half.dcm")


@pytest.mark.parametrize("content", [
    b"Hello, this is a plain text file.\nNothing to see.\n" * 20,
    random.Random(7).randbytes(4096),
    b"\x89PNG\r\n\x1a\n" + random.Random(8).randbytes(500),
    b"\x08",  # shorter than an element header
], ids=["text", "random", "png", "one-byte"])
def test_non_dicom_files_are_declined(tmp_path, content):
    path = tmp_path / "file.bin"
    path.write_bytes(content)
    assert parse(path) is None


def test_dicom_without_sop_instance_uid(tmp_path):
    ds = image_dataset()
    del ds.SOPInstanceUID
    with pytest.raises(ParseError, match=r"^no SOP Instance UID \(0008,0018\): "):
        parse(write(ds, tmp_path / "nouid.dcm"))


def test_file_larger_than_the_limit(tmp_path):
    (big,) = write_series(tmp_path, SeriesSpec(slices=1, rows=1024, columns=1024))
    with pytest.raises(ParseError, match=r"^file is 2\.0 MB, larger than the limit "
                                         r"sendit\.pydicom\.max_file_mb = 1$"):
        parse(big, **{"sendit.pydicom.max_file_mb": 1})
    assert parse(big, **{"sendit.pydicom.max_file_mb": 3}) is not None


# -- real-world sets and the plugin wiring ---------------------------------------------


def test_all_dicom_cookies_parse():
    paths = sorted(COOKIES.glob("*.dcm"))
    assert len(paths) == 7
    parsed = [parse(path) for path in paths]
    assert len({p.sop_instance_uid for p in parsed}) == 7
    for one in parsed:
        assert values(one, "PatientName") and one.elements


def test_settings_are_declared_and_converted():
    settings = load_settings({"sendit.lockdown.enabled": "false"},
                             declared=sendit_pydicom.sendit_settings(), environ={})
    assert settings["sendit.pydicom.max_file_mb"] == 2048
    assert settings["sendit.pydicom.max_values"] == 1024
    with pytest.raises(SettingsError, match="sendit.pydicom.max_file_mb"):
        load_settings({"sendit.lockdown.enabled": "false", "sendit.pydicom.max_file_mb": "0"},
                      declared=sendit_pydicom.sendit_settings(), environ={})


def test_registered_as_a_plugin_it_answers_the_parse_hook():
    pm = get_plugin_manager(load_entrypoints=False, builtins=(), extra=[sendit_pydicom])
    parsed = parse_file(pm, Path(get_testdata_file("MR_small.dcm")), {})
    assert parsed.modality == "MR" and parsed.parser == "sendit_pydicom"
    assert parse_file(pm, TEST_FILES / "README.txt", {}) is None
