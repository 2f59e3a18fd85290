"""The query language (sendit_core.query): its parser, every error message, and
each operator against known values in real files, on SQLite and PostgreSQL.

The files are pydicom's and deid-data's, plus a few written here with pydicom in
real character sets (Latin-1, Cyrillic, UTF-8, ISO 2022 Japanese). They are
imported once per database with the real pipeline; every query's answer is
checked against an oracle that reads the same files with pydicom.
"""
from __future__ import annotations

import fnmatch
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import deid_data
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from sqlalchemy import create_engine, func, select, text, true
from sqlalchemy.engine import make_url

from sendit_core.app import load_config
from sendit_core.models import Image, get_engine, get_session_factory, upgrade_schema
from sendit_core.pipeline import Ingestor, import_now, iter_files, submit
from sendit_core.plugins import get_plugin_manager
from sendit_core.query import (And, Condition, Has, InBatch, Not, Or, QueryError, field_text,
                               image_filter, parse, present_fields, quote_value, resolve_field,
                               suggest_values)
from sendit_core.testing import skip_or_fail

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
DEID = Path(deid_data.__file__).parent / "data"
PYDICOM_FILES = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "rtdose.dcm", "JPEG2000.dcm",
                 "ExplVR_BigEnd.dcm", "SC_rgb_rle.dcm", "examples_overlay.dcm",
                 "liver_1frame.dcm", "waveform_ecg.dcm"]
DEID_FILES = ["dicom-cookies/image1.dcm", "dicom-cookies/image2.dcm", "humans/ctbrain1.dcm"]


# -- the corpus: real files and a few in real character sets -------------------------


def _written(folder: Path, name: str, charset, **elements) -> Path:
    """A small file written by pydicom (which encodes the text in ``charset``)."""
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = folder / name
    ds.save_as(path, enforce_file_format=True)
    return path


def write_charset_files(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    private = _written(folder, "private.dcm", "ISO_IR 100", PatientName="Private^Case",
                       PatientID="PRIV1", StudyDate="20200315",
                       AcquisitionDateTime="20200315101500.5", ImageType=["DERIVED", "SECONDARY"])
    ds = pydicom.dcmread(private)
    ds.add_new(0x00110010, "LO", "SENDIT TEST")
    ds.add_new(0x00111001, "DS", "3.5")
    ds.add_new(0x00111002, "LO", "SENDIT PRIVATE VALUE")
    item = Dataset()
    item.add_new(0x00110010, "LO", "SENDIT TEST")
    item.add_new(0x00111003, "LO", "inside a private sequence")
    ds.add_new(0x00111004, "SQ", Sequence([item]))
    ds.save_as(private, enforce_file_format=True)
    return [
        private,
        _written(folder, "latin1.dcm", "ISO_IR 100", PatientName="Buc^Jérôme", PatientID="FR1",
                 InstitutionName="Hôpital Général", StudyDate="20190704",
                 AcquisitionDateTime="20191231235959"),
        _written(folder, "cyrillic.dcm", "ISO_IR 144", PatientName="Иванов^Пётр",
                 PatientID="RU1", StudyDate="20210202"),
        _written(folder, "utf8.dcm", "ISO_IR 192", PatientName="Wang^XiaoDong=王^小東",
                 PatientID="CN1", StudyDescription="Ärztliche Übersicht", StudyDate="20220101"),
        _written(folder, "japanese.dcm", ["", "ISO 2022 IR 87"],
                 PatientName="Yamada^Tarou=山田^太郎=やまだ^たろう", PatientID="JP1",
                 StudyDate="20230505"),
    ]


@dataclass
class Corpus:
    url: str
    engine: object
    factory: object
    #: file name -> image id
    ids: dict[str, int]
    #: image id -> the file read by pydicom (the oracle)
    datasets: dict[int, Dataset]
    batch_a: int
    batch_b: int

    def run(self, query: str) -> set[int]:
        with self.factory() as db:
            return set(db.scalars(select(Image.id).where(image_filter(query))))

    def expected(self, predicate) -> set[int]:
        return {i for i, ds in self.datasets.items() if predicate(ds)}


def fresh_database(backend: str, folder: Path, sqlite_template: Path | None) -> tuple[str, object]:
    """A migrated empty database of its own (and how to drop it)."""
    if backend == "sqlite":
        path = folder / "search.sqlite"
        shutil.copyfile(sqlite_template, path)
        return f"sqlite:///{path}", lambda: None
    base = os.environ.get("SENDIT_TEST_DATABASE_URL")
    if not base:
        skip_or_fail("SENDIT_TEST_DATABASE_URL is not set: PostgreSQL tests skipped")
    url = make_url(base)
    name = f"sendit_test_q_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001
        admin.dispose()
        skip_or_fail(f"cannot create a test database: {exc}")
    test_url = url.set(database=name).render_as_string(hide_password=False)
    engine = get_engine({"sqlalchemy.url": test_url})
    upgrade_schema({"sqlalchemy.url": test_url}, engine)
    engine.dispose()

    def drop():
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return test_url, drop


def raw_settings(url: str, folder: Path) -> dict:
    return {"sqlalchemy.url": url, "sendit.var_dir": str(folder / "var"),
            "sendit.data_dir": str(folder / "data"), "sendit.storage_dir": str(folder / "storage"),
            "sendit.lockdown.password": "test-password-1234",
            "sendit.session.secret": "test-secret-" + "x" * 40,
            "sendit.db.auto_create": "false", "sendit.worker": "external"}


def build_corpus(url: str, folder: Path) -> Corpus:
    """Import batch A (pydicom's files) and batch B (deid-data's and ours)."""
    settings, pm = load_config(raw_settings(url, folder), here=str(folder),
                               pm=get_plugin_manager(load_entrypoints=False))
    engine = get_engine(settings)
    factory = get_session_factory(engine)
    a_dir, b_dir = folder / "a", folder / "b"
    a_dir.mkdir()
    for name in PYDICOM_FILES:
        shutil.copy(get_testdata_file(name), a_dir / name)
    b_dir.mkdir()
    for name in DEID_FILES:
        shutil.copy(DEID / name, b_dir / name.replace("/", "-"))
    write_charset_files(b_dir)
    batches = []
    for source, name in ((a_dir, "pydicom files"), (b_dir, "deid-data and charsets")):
        submission = submit(factory, settings, iter_files([source]), batch_name=name, publish=False)
        result = import_now(Ingestor(settings, pm, factory), submission)
        assert result.errors == 0, result
        batches.append(submission.batch_id)
    with factory() as db:
        rows = db.execute(select(Image.id, Image.original_name)).all()
    ids = {Path(original).name: image_id for image_id, original in rows}
    sources = {**{n: a_dir / n for n in PYDICOM_FILES},
               **{p.name: p for p in b_dir.iterdir()}}
    datasets = {ids[name]: pydicom.dcmread(path, stop_before_pixels=True)
                for name, path in sources.items()}
    assert len(datasets) == len(PYDICOM_FILES) + len(DEID_FILES) + 5
    return Corpus(url, engine, factory, ids, datasets, *batches)


@pytest.fixture(scope="module")
def database_url(request, tmp_path_factory):
    """This module's own database (SQLite, and PostgreSQL when configured),
    imported once: the parametrization is the suite's ``database_url``'s."""
    backend = getattr(request, "param", "sqlite")
    folder = tmp_path_factory.mktemp(f"query-{backend}")
    template = request.getfixturevalue("_sqlite_template") if backend == "sqlite" else None
    url, drop = fresh_database(backend, folder, template)
    request.addfinalizer(drop)
    return url


@pytest.fixture(scope="module")
def corpus(database_url, tmp_path_factory):
    built = build_corpus(database_url, tmp_path_factory.mktemp("corpus"))
    yield built
    built.engine.dispose()


# -- oracle helpers ------------------------------------------------------------------------


def values(ds: Dataset, *path) -> list:
    """The values of the element at ``path`` (keywords or tags), through every
    item of the sequences on the way; multi-valued elements give each value."""
    level = [ds]
    for step in path[:-1]:
        level = [item for d in level if step in d for item in (d[step].value or [])]
    out = []
    for d in level:
        if path[-1] in d and d[path[-1]].value not in (None, ""):
            value = d[path[-1]].value
            out.extend(value if isinstance(value, (list, pydicom.multival.MultiValue)) else [value])
    return out


def text_of(ds, *path) -> list[str]:
    return [str(v) for v in values(ds, *path)]


def date_of(ds, keyword="StudyDate") -> int | None:
    found = [v.replace(".", "") for v in text_of(ds, keyword)]
    return int(found[0]) if found and found[0].isdigit() else None


def number(ds, keyword) -> list[float]:
    return [float(v) for v in values(ds, keyword)]


# -- the parser ---------------------------------------------------------------------------


def test_the_empty_query_matches_every_image():
    assert parse("") is None and parse("   \t ") is None and parse(None) is None
    assert image_filter("") is true() or str(image_filter("")) == "true"


def test_spaces_and_AND_join_OR_binds_looser_and_parentheses_group():
    tree = parse("Modality=CT StudyDate>=2020 OR PatientID=1")
    assert isinstance(tree, Or) and isinstance(tree.nodes[0], And)
    assert [c.field.text for c in tree.nodes[0].nodes] == ["Modality", "StudyDate"]
    tree = parse("Modality=CT and (StudyDate>=2020 or PatientID=1)")
    assert isinstance(tree, And) and isinstance(tree.nodes[1], Or)
    tree = parse("NOT Modality=CT -has:PatientAge")
    assert isinstance(tree, And) and all(isinstance(n, Not) for n in tree.nodes)
    assert isinstance(tree.nodes[1].node, Has)
    assert isinstance(parse("batch:12"), InBatch) and parse("batch:12").batch_id == 12


def test_a_field_by_keyword_tag_or_hex_is_the_same_element():
    paths = {parse(q).field.tag_path for q in
             ("PatientID=1", "(0010,0020)=1", "00100020=1", "( 0010 , 0020 )=1", "patientid=1")}
    assert paths == {"00100020"}
    seq = parse("ReferencedImageSequence.ReferencedSOPInstanceUID=1.2.3")
    assert seq.field.tag_path == "00081140.00081155"
    assert parse("00081140.00081155=1").field.tag_path == "00081140.00081155"
    assert parse("(0009,1001)=x").field.vr is None  # private: any VR
    assert resolve_field("OverlayRows").tag_path == "60000010"  # a repeating group
    assert field_text("60020010", "OverlayRows") == "(6002,0010)"
    assert field_text("00100020", "PatientID") == "PatientID"
    assert field_text("00091001", "(0009,1001)") == "(0009,1001)"


def test_values_quoted_literal_and_unquoted():
    c = parse('PatientName="DOE^JOHN \\"JR\\" \\\\ (x)"')
    assert isinstance(c, Condition) and c.quoted and c.value == 'DOE^JOHN "JR" \\ (x)'
    c = parse("PatientName=Yamada^Tarou=山田^太郎")
    assert c.op == "=" and c.value == "Yamada^Tarou=山田^太郎" and not c.quoted
    assert parse("SliceThickness<=2.5").op == "<=" and parse("PatientName~=doe").op == "~="
    assert parse("PatientAge=\"\"").value == ""
    assert parse("(Modality=CT)").op == "="  # the value stops at )


@pytest.mark.parametrize("value", ["plain", "with space", 'quote " inside', "back\\slash",
                                   "*literal?", "", "(paren)", "=start", "ünï©ødé 山田"])
def test_quote_value_round_trips(value):
    condition = parse(f"PatientName={quote_value(value)}")
    assert condition.value == value and condition.quoted
    assert quote_value(value).startswith('"') and quote_value(value).endswith('"')


ERRORS = [
    # (query, what the message says, position)
    ("PatientNme=DOE", 'unknown field "PatientNme": did you mean PatientName', 0),
    ("Frobnicate=1", 'unknown field "Frobnicate" (a DICOM keyword such as PatientID', 0),
    ("Modality=CT PatientNme=DOE", 'unknown field "PatientNme"', 12),
    ("(0010,002G)=1", "bad tag (0010,002G): write a tag as (gggg,eeee)", 0),
    ("0010002=1", "bad tag 0010002: a tag number has 8 hex digits", 0),
    ("PatientName.PatientID=1", "PatientName is not a sequence", 0),
    ("Patient..ID=1", 'a "." in a field must be followed by the field inside the sequence', 7),
    ("PatientName.=1", 'a "." in a field must be followed by the field inside', 11),
    ("Frobnicate!x", 'unknown field "Frobnicate"', 0),
    ("PatientName", "PatientName needs an operator and a value: e.g. PatientName=VALUE", 11),
    ("PatientName)", "PatientName needs an operator and a value", 11),
    ("PatientName!x", 'unexpected "!" after PatientName: expected an operator', 11),
    ("PatientName==DOE", 'unknown operator "==": write "="', 11),
    ("StudyDate=<2020", 'unknown operator "=<": write "<="', 9),
    ("StudyDate=>2020", 'unknown operator "=>": write ">="', 9),
    ("Modality<>CT", 'unknown operator "<>": write "!="', 8),
    ("PatientID:123", 'unknown operator ":": write "="', 9),
    ("PatientName=", 'missing value after "=" (write "" to find an empty value)', 12),
    ("PatientName= DOE", 'missing value after "="', 12),
    ("PatientName~~doe", 'unexpected "~" after "~": one operator per condition', 12),
    ('PatientName="DOE', 'unterminated quoted value: the closing " is missing', 12),
    ('PatientName="DOE"X', "a quoted value must be followed by a space", 17),
    ('PatientName="a\\b"', "in a quoted value a backslash must be followed by", 14),
    ('"DOE"', "a value needs a field before it", 0),
    ("=DOE", 'unexpected "=": expected a condition', 0),
    ("Modality=CT - PatientSex=F", '"-" must stand right before the condition it negates', 12),
    ("Modality=CT OR", "OR needs a condition on both sides", 12),
    ("OR Modality=CT", "OR needs a condition on both sides", 0),
    ("Modality=CT OR OR Modality=MR", "OR needs a condition on both sides", 12),
    ("Modality=CT AND", "AND needs a condition on both sides", 12),
    ("AND Modality=CT", "AND needs a condition on both sides", 0),
    ("Modality=CT NOT", "NOT needs a condition after it", 12),
    ("Modality=CT -", '"-" must stand right before the condition', 12),
    ("(Modality=CT", 'missing ")" for this "("', 0),
    ("(Modality=CT OR (PatientSex=F)", 'missing ")" for this "("', 0),
    ("(", 'missing ")" for this "("', 0),
    ("Modality=CT)", 'unmatched ")": no "(" opens it', 11),
    (")", 'unmatched ")"', 0),
    ("()", "empty parentheses: put conditions inside", 0),
    ("has:", "has: needs a field, e.g. has:PatientAge", 4),
    ("has:PatientAge=1", 'unexpected "=" after has:PatientAge', 14),
    ("has:PixelData", "PixelData holds binary data, which is not indexed", 4),
    ("batch:x", "batch: needs a batch number, e.g. batch:12", 6),
    ("batch:", "batch: needs a batch number", 6),
    ("batch:99999999999999999999", "batch: the batch number is too large", 6),
    ("PixelData=1", "PixelData holds binary data, which is not indexed", 0),
    ("ReferencedImageSequence=1", "ReferencedImageSequence is a sequence: search a field inside "
                                  "it", 0),
    ("PatientName~DOE*", 'wildcards (* and ?) work with =, != and ~=, not with "~"', 12),
    ("StudyDate>2020*", "wildcards (* and ?) work with =, != and ~=", 10),
    ("StudyDate>=abc", 'StudyDate holds dates: >= needs a date such as 20200131', 11),
    ("StudyDate<2020-13-01", "StudyDate holds dates: < needs a date", 10),
    ("StudyTime<25", "StudyTime holds times: < needs a time such as 101500", 10),
    ("SliceThickness<thin", "SliceThickness holds numbers: < needs a number such as 2.5", 15),
    ("StudyDate=2020-abc", 'a range A-B needs a date such as 20200131, 2020-01-31, 202001 or 2020 '
                           'on each side, not "abc"', 15),
    ("StudyDate=20201231-20200101", "the range 20201231-20200101 ends before it starts", 10),
    ("StudyTime=12-1x", 'StudyTime holds times: a range A-B needs a time', 13),
    ("Modality=CT\x00", "the query contains a NUL character", 11),
]


@pytest.mark.parametrize(("query", "message", "position"), ERRORS, ids=[e[0] for e in ERRORS])
def test_every_error_says_what_and_where(query, message, position):
    with pytest.raises(QueryError) as info:
        image_filter(query)
    error = info.value
    assert message in str(error), str(error)
    assert error.position == position, (str(error), error.position)
    assert str(error).endswith(f"(at position {position})")
    pointer = error.pointer(query).splitlines()
    assert pointer[1].index("^") == position


def test_limits_and_odd_inputs_are_errors_too():
    with pytest.raises(QueryError, match="too long: at most 4,000 characters"):
        image_filter("Modality=CT " * 400)
    with pytest.raises(QueryError, match="too many conditions: at most 64"):
        image_filter(" ".join(["Modality=CT"] * 65))
    with pytest.raises(QueryError, match="the query must be text"):
        image_filter(42)
    with pytest.raises(QueryError, match="no field given"):
        resolve_field("  ")
    with pytest.raises(QueryError, match='bad field "Patient Name"'):
        resolve_field("Patient Name")
    assert QueryError("no position").pointer("abc") == "abc"
    deep = "(" * 40 + "Modality=CT" + ")" * 40
    with pytest.raises(QueryError, match="nest too deeply") as info:
        image_filter(deep)
    assert info.value.position == 32
    with pytest.raises(QueryError, match="nest too deeply"):
        image_filter("-" * 2000 + "Modality=CT")
    assert image_filter("(" * 30 + "Modality=CT" + ")" * 30) is not None


# -- the engine against the files ------------------------------------------------------------


def fn(pattern):
    return lambda values: any(fnmatch.fnmatchcase(v, pattern) for v in values)


CASES = [
    # equals, not equals, wildcards
    ("Modality=CT", lambda d: text_of(d, "Modality") == ["CT"]),
    ("Modality!=CT", lambda d: text_of(d, "Modality") != ["CT"]),
    ("-Modality=CT -Modality=MR", lambda d: text_of(d, "Modality") not in (["CT"], ["MR"])),
    ("PatientName=CompressedSamples*", lambda d: fn("CompressedSamples*")(text_of(d, "PatientName"))),
    ("PatientName=CompressedSamples^?R1", lambda d: fn("CompressedSamples^?R1")(text_of(d, "PatientName"))),
    ("PatientName=*^*^*", lambda d: fn("*^*^*")(text_of(d, "PatientName"))),
    ('PatientName="CompressedSamples*"', lambda d: False),
    ('InstitutionName="JFK IMAGING CENTER"', lambda d: text_of(d, "InstitutionName") == ["JFK IMAGING CENTER"]),
    ('SeriesDescription="marked lesion<MPR Collection>"',
     lambda d: text_of(d, "SeriesDescription") == ["marked lesion<MPR Collection>"]),
    ("PatientID=nobody", lambda d: False),
    # contains and case-insensitive equals
    ("PatientName~lestrade", lambda d: any("lestrade" in v.lower() for v in text_of(d, "PatientName"))),
    ("InstitutionName~imaging", lambda d: any("imaging" in v.lower() for v in text_of(d, "InstitutionName"))),
    ("PatientName~=compressedsamples^ct1", lambda d: [v.lower() for v in text_of(d, "PatientName")] == ["compressedsamples^ct1"]),
    ("PatientName~=simpson*", lambda d: any(v.lower().startswith("simpson") for v in text_of(d, "PatientName"))),
    ("PatientName~^ct", lambda d: any("^ct" in v.lower() for v in text_of(d, "PatientName"))),
    ('PatientName~"%"', lambda d: False),
    ("PatientName~=compressedsamples^_t1", lambda d: False),
    ("PatientName~=compressedsamples^?t1", lambda d: [v.lower() for v in text_of(d, "PatientName")] == ["compressedsamples^ct1"]),
    # numbers: equality by value, ranges, multi-valued elements
    ("SliceThickness=5", lambda d: 5.0 in number(d, "SliceThickness")),
    ("SliceThickness<3", lambda d: any(v < 3 for v in number(d, "SliceThickness"))),
    ("SliceThickness>=4.8", lambda d: any(v >= 4.8 for v in number(d, "SliceThickness"))),
    ("InstanceNumber=1", lambda d: 1 in [int(v) for v in values(d, "InstanceNumber")]),
    ("ImagePositionPatient<-170", lambda d: any(v < -170 for v in number(d, "ImagePositionPatient"))),
    ("ImageType=DERIVED", lambda d: "DERIVED" in text_of(d, "ImageType")),
    # dates: a value, a period, a DICOM range, open ranges, the old YYYY.MM.DD form
    ("StudyDate>=20040101", lambda d: (date_of(d) or 0) >= 20040101),
    ("StudyDate<20040101", lambda d: date_of(d) is not None and date_of(d) < 20040101),
    ("StudyDate=20040826", lambda d: date_of(d) == 20040826),
    ("StudyDate=2004-08-26", lambda d: date_of(d) == 20040826),
    ("StudyDate=2004", lambda d: str(date_of(d)).startswith("2004")),
    ("StudyDate=200408", lambda d: str(date_of(d)).startswith("200408")),
    ("StudyDate<=2003", lambda d: date_of(d) is not None and date_of(d) <= 20031231),
    ("StudyDate>2019", lambda d: (date_of(d) or 0) > 20191231),
    ("StudyDate=20030101-20041231", lambda d: 20030101 <= (date_of(d) or 0) <= 20041231),
    ("StudyDate=-20031231", lambda d: date_of(d) is not None and date_of(d) <= 20031231),
    ("StudyDate=2013-", lambda d: (date_of(d) or 0) >= 20130101),
    ("StudyDate=1997*", lambda d: str(date_of(d)).startswith("1997")),
    ("StudyDate=19970424", lambda d: date_of(d) == 19970424),
    # times and date-times
    ("StudyTime>=12", lambda d: any(float(v.replace(":", "")) >= 120000 for v in text_of(d, "StudyTime"))),
    ("StudyTime=10-11:59", lambda d: any(100000 <= float(v.replace(":", "")) < 120000 for v in text_of(d, "StudyTime"))),
    ("AcquisitionDateTime=20200315*", lambda d: fn("20200315*")(text_of(d, "AcquisitionDateTime"))),
    ("AcquisitionDateTime<=2019", lambda d: any(v[:4] <= "2019" for v in text_of(d, "AcquisitionDateTime"))),
    ("AcquisitionDateTime>=2020", lambda d: any(v[:4] >= "2020" for v in text_of(d, "AcquisitionDateTime"))),
    ("AcquisitionDateTime=20190101-20191231", lambda d: any(v[:4] == "2019" for v in text_of(d, "AcquisitionDateTime"))),
    # presence and empty values
    ("has:PatientAge", lambda d: bool(text_of(d, "PatientAge"))),
    ("-has:PatientAge", lambda d: not text_of(d, "PatientAge")),
    ('PatientAge=""', lambda d: "PatientAge" in d and not d.PatientAge),
    # fields by tag, hex and case-insensitive keyword
    ("(0010,0020)=1CT1", lambda d: text_of(d, "PatientID") == ["1CT1"]),
    ("00100020=4MR1", lambda d: text_of(d, "PatientID") == ["4MR1"]),
    ("patientid=id00001", lambda d: text_of(d, "PatientID") == ["id00001"]),
    # sequences
    ("ReferencedRTPlanSequence.ReferencedSOPInstanceUID=*",
     lambda d: bool(text_of(d, "ReferencedRTPlanSequence", "ReferencedSOPInstanceUID"))),
    ("(300C,0002).(0008,1155)=1.2.123.456.78.9.0123.4567.89012345678901",
     lambda d: "1.2.123.456.78.9.0123.4567.89012345678901" in text_of(d, "ReferencedRTPlanSequence", "ReferencedSOPInstanceUID")),
    ("ReferencedRTPlanSequence.ReferencedFractionGroupSequence.ReferencedBeamSequence.ReferencedBeamNumber=1",
     lambda d: "1" in text_of(d, "ReferencedRTPlanSequence", "ReferencedFractionGroupSequence",
                              "ReferencedBeamSequence", "ReferencedBeamNumber")),
    ("BeamSequence.BeamName~field", lambda d: any("field" in v.lower() for v in text_of(d, "BeamSequence", "BeamName"))),
    ("has:BeamSequence", lambda d: "BeamSequence" in d),
    # private tags: GE's in CT_small, ours in a private sequence
    ("(0009,1002)=CT01", lambda d: text_of(d, 0x00091002) == ["CT01"]),
    ("(0009,1027)>800000000", lambda d: any(v > 800000000 for v in values(d, 0x00091027))),
    ("(0011,1001)>3", lambda d: any(float(v) > 3 for v in values(d, 0x00111001))),
    ("(0011,1001)=3.5", lambda d: any(float(v) == 3.5 for v in values(d, 0x00111001))),
    ("(0011,1002)=SENDIT*", lambda d: fn("SENDIT*")(text_of(d, 0x00111002))),
    ("(0011,1004).(0011,1003)~private", lambda d: any("private" in v for v in text_of(d, 0x00111004, 0x00111003))),
    ("has:(0011,1004)", lambda d: 0x00111004 in d),
    # character sets
    ("PatientName=Buc^Jérôme", lambda d: text_of(d, "PatientName") == ["Buc^Jérôme"]),
    ("PatientName~JÉRÔME", lambda d: any("jérôme" in v.lower() for v in text_of(d, "PatientName"))),
    ('InstitutionName~="hôpital général"', lambda d: [v.lower() for v in text_of(d, "InstitutionName")] == ["hôpital général"]),
    ("PatientName~иванов", lambda d: any("иванов" in v.lower() for v in text_of(d, "PatientName"))),
    ("PatientName=Иванов*", lambda d: fn("Иванов*")(text_of(d, "PatientName"))),
    ("PatientName~小東", lambda d: any("小東" in v for v in text_of(d, "PatientName"))),
    ("StudyDescription~ärztliche", lambda d: any("ärztliche" in v.lower() for v in text_of(d, "StudyDescription"))),
    ("PatientName=Yamada^Tarou=山田^太郎=やまだ^たろう",
     lambda d: text_of(d, "PatientName") == ["Yamada^Tarou=山田^太郎=やまだ^たろう"]),
    ("PatientName~やまだ", lambda d: any("やまだ" in v for v in text_of(d, "PatientName"))),
    # OR, NOT, parentheses
    ("Modality=CT OR Modality=MR", lambda d: text_of(d, "Modality") in (["CT"], ["MR"])),
    ("(Modality=CT OR Modality=MR) PatientSex=F",
     lambda d: text_of(d, "Modality") in (["CT"], ["MR"]) and text_of(d, "PatientSex") == ["F"]),
    ("NOT (Modality=CT OR Modality=MR)", lambda d: text_of(d, "Modality") not in (["CT"], ["MR"])),
    ("Modality=CT -PatientName=SIMPSON*",
     lambda d: text_of(d, "Modality") == ["CT"] and not fn("SIMPSON*")(text_of(d, "PatientName"))),
    ("has:PatientAge OR Modality=RTPLAN", lambda d: bool(text_of(d, "PatientAge")) or text_of(d, "Modality") == ["RTPLAN"]),
    ("Modality=CT OR -has:PatientAge", lambda d: text_of(d, "Modality") == ["CT"] or not text_of(d, "PatientAge")),
    ("StudyDate>=2004 (PatientSex=F OR PatientSex=M) -Modality=MR",
     lambda d: (date_of(d) or 0) >= 20040101 and text_of(d, "PatientSex") in (["F"], ["M"]) and text_of(d, "Modality") != ["MR"]),
    ("AcquisitionContextSequence.ConceptNameCodeSequence.CodeValue=x", lambda d: False),
]


@pytest.mark.parametrize(("query", "predicate"), CASES, ids=[c[0] for c in CASES])
def test_each_operator_finds_what_pydicom_sees(corpus, query, predicate):
    expected = corpus.expected(predicate)
    assert corpus.run(query) == expected, query


def test_batch_condition(corpus):
    in_a = {corpus.ids[name] for name in PYDICOM_FILES}
    assert corpus.run(f"batch:{corpus.batch_a}") == in_a
    assert corpus.run(f"batch:{corpus.batch_a} Modality=CT") == {corpus.ids["CT_small.dcm"]}
    assert corpus.run(f"-batch:{corpus.batch_a}") == set(corpus.datasets) - in_a
    assert corpus.run(f"batch:{corpus.batch_b} OR Modality=RTDOSE") == \
        (set(corpus.datasets) - in_a) | {corpus.ids["rtdose.dcm"]}
    assert corpus.run("batch:999999") == set()


def test_the_empty_query_and_every_image(corpus):
    assert corpus.run("") == set(corpus.datasets) == corpus.run("  ")


def test_the_clause_combines_counts_and_pages_like_any_other(corpus):
    """How the API and the page use it: with other filters, counted, paged, and
    the same statement shape again with other values (the compiled-SQL cache)."""
    with corpus.factory() as db:
        cond = image_filter("PatientName=CompressedSamples*")
        total = db.scalar(select(func.count()).select_from(Image).where(cond))
        page = db.scalars(select(Image.id).where(cond, Image.batch_id == corpus.batch_a)
                          .order_by(Image.id.desc()).limit(2)).all()
        assert total == 3 and len(page) == 2 and page == sorted(page, reverse=True)
        for prefix, name in (("Lestrade*", "SC_rgb_rle.dcm"), ("SIMPSON*", "humans-ctbrain1.dcm"),
                             ("Buc^J*", "latin1.dcm")):
            found = db.scalars(select(Image.id).where(image_filter(f"PatientName={prefix}"))).all()
            assert found == [corpus.ids[name]], prefix


def test_fields_present_and_value_suggestions(corpus):
    with corpus.factory() as db:
        fields = {f.text: f for f in present_fields(db)}
        assert {"PatientName", "Modality", "ReferencedRTPlanSequence.ReferencedSOPInstanceUID",
                "(0011,1001)", "(0011,1004).(0011,1003)"} <= set(fields)
        assert fields["(0011,1001)"].private_creator == "SENDIT TEST"
        assert "PixelData" not in fields
        assert suggest_values(db, "PatientName", "Compressed") == [
            "CompressedSamples^CT1", "CompressedSamples^MR1", "CompressedSamples^NM1"]
        assert suggest_values(db, "Modality", "", limit=3) == sorted(
            {text_of(d, "Modality")[0] for d in corpus.datasets.values() if text_of(d, "Modality")})[:3]
        assert suggest_values(db, "SliceThickness", "") == ["0.8000", "4", "4.8", "5.000000"]
        assert suggest_values(db, "SliceThickness", "4") == ["4", "4.8"]
        assert suggest_values(db, "PatientName", "*") == []  # a literal star, not a wildcard
        assert suggest_values(db, "ReferencedRTPlanSequence", "") == []
        with pytest.raises(QueryError, match="unknown field"):
            suggest_values(db, "Nonsense", "")


def test_plans_read_the_indexes_never_the_whole_table(corpus):
    """EXPLAIN: every query shape finds its rows by index range scans and seeks."""
    queries = ["PatientID=1CT1", "PatientName=Compressed*", "StudyDate=20030101-20041231",
               "Modality=CT StudyDate>=2004 PatientSex=O", "PatientName~doe Modality=CT",
               "(Modality=CT OR Modality=MR) -PatientSex=F", "has:PatientAge", "SliceThickness<3",
               "StudyDate=2004*"]
    with corpus.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SET enable_seqscan = off"))  # tiny tables: prove an index path exists
        for query in queries:
            stmt = select(func.count()).select_from(Image).where(image_filter(query))
            sql = str(stmt.compile(conn, compile_kwargs={"literal_binds": True}))
            if conn.dialect.name == "sqlite":
                plan = " | ".join(r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
                assert "SCAN header_value" not in plan, (query, plan)
                assert "INDEX ix_header_value_field" in plan, (query, plan)
            else:
                plan = " | ".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + sql))
                assert "Seq Scan on header_value" not in plan, (query, plan)
                # a sorted page fetches the matching images by id (the set built
                # once), never walks the images probing each (a semi-join)
                page = (select(Image.id).where(image_filter(query)).order_by(Image.id.desc()).limit(50)
                        .compile(conn, compile_kwargs={"literal_binds": True}))
                plan = " | ".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {page}"))
                assert "Index Cond: (id = ANY" in plan and "Semi Join" not in plan, (query, plan)
        if conn.dialect.name == "sqlite":  # a prefix is an index range, not the whole field
            sql = str(select(func.count()).select_from(Image)
                      .where(image_filter("PatientName=Compressed*"))
                      .compile(conn, compile_kwargs={"literal_binds": True}))
            plan = " ".join(r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
            assert "value_text>? AND value_text<?" in plan, plan
