"""Real DICOM files through the whole pipeline: pydicom's bundled files and deid-data's."""
from pathlib import Path

import pydicom.data
import pytest
from sqlalchemy import func, select

from sendit_core.models import (
    Batch, BatchStatus, FileOutcome, HeaderField, HeaderValue, Image, IngestError, JobFile,
)
from sendit_core.pipeline import Ingestor, import_now, iter_files, submit

PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"
CHARSET_FILES = Path(pydicom.data.__file__).parent / "charset_files"
COOKIES = Path(__import__("deid_data").__file__).parent / "data" / "dicom-cookies"


@pytest.fixture
def factory(app):
    return app.registry["dbsession_factory"]


def import_folder(app, folder, **kw):
    factory = app.registry["dbsession_factory"]
    submission = submit(factory, app.settings, iter_files([folder]), publish=False, **kw)
    result = import_now(Ingestor(app.settings, app.pm, factory), submission)
    return submission, result


def value_of(factory, keyword_path, sop_uid=None, item=None, batch_id=None):
    query = (select(HeaderValue.value_text)
             .join(HeaderField, HeaderField.id == HeaderValue.field_id)
             .join(Image, Image.id == HeaderValue.image_id)
             .where(HeaderField.keyword_path == keyword_path))
    if sop_uid:
        query = query.where(Image.sop_instance_uid == sop_uid)
    if item is not None:
        query = query.where(HeaderValue.item == item)
    if batch_id:
        query = query.where(Image.batch_id == batch_id)
    with factory() as db:
        return db.scalars(query.order_by(HeaderValue.position)).all()


def test_every_bundled_pydicom_file_is_one_image_or_one_error(app, factory):
    files = [p for p in PYDICOM_FILES.rglob("*") if p.is_file()]
    submission, result = import_folder(app, PYDICOM_FILES, batch_name="pydicom")
    assert submission.file_count == len(files)
    assert result.imported + result.duplicates + result.errors == len(files)
    with factory() as db:
        batch = db.get(Batch, submission.batch_id)
        images = db.scalar(select(func.count()).select_from(Image))
        errors = db.scalars(select(IngestError)).all()
        outcomes = dict(db.execute(select(JobFile.outcome, func.count()).group_by(JobFile.outcome)).all())
    assert images == result.imported == batch.image_count
    assert len(errors) == result.errors == batch.error_count
    assert len({e.path for e in errors}) == len(errors), "one error row per failed file"
    assert FileOutcome.PENDING not in outcomes
    assert batch.status is BatchStatus.DONE
    assert result.imported > 100
    by_file = {e.path: (e.step, e.message) for e in errors}
    for name in ("README.txt", "crayons.icc", "test1.json", "zipMR.gz", "rtplan.dump"):
        assert by_file[f"test_files/{name}"] == ("parse", "not a DICOM file (no parser accepted it)")
    assert by_file["test_files/MR_truncated.dcm"][1].startswith("file is truncated")
    assert by_file["test_files/rtplan_truncated.dcm"][1].startswith("file is truncated")
    assert "DICOMDIR" in by_file["test_files/dicomdirtests/DICOMDIR"][1]
    # the same MR image in other transfer syntaxes: same UID, different bytes
    step, message = by_file["test_files/MR_small_bigendian.dcm"]
    assert step == "store" and "a different file with SOP Instance UID" in message
    assert all(message for _, message in by_file.values())


def test_known_files_have_their_uids_and_values(app, factory):
    import_folder(app, PYDICOM_FILES)
    ct_uid = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"
    with factory() as db:
        ct = db.scalars(select(Image).where(Image.sop_instance_uid == ct_uid)).one()
    assert (ct.modality, ct.original_name) == ("CT", "test_files/CT_small.dcm")
    assert ct.study_instance_uid == "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
    assert ct.transfer_syntax_uid == "1.2.840.10008.1.2.1"
    assert value_of(factory, "PatientName", ct_uid) == ["CompressedSamples^CT1"]
    stored = Path(app.settings["sendit.storage_dir"]) / ct.stored_path
    assert stored.read_bytes() == (PYDICOM_FILES / "CT_small.dcm").read_bytes()
    with factory() as db:
        thickness = db.scalar(
            select(HeaderValue.value_num).join(HeaderField, HeaderField.id == HeaderValue.field_id)
            .where(HeaderValue.image_id == ct.id, HeaderField.keyword_path == "SliceThickness"))
    assert thickness == pytest.approx(5.0)


def test_a_nested_sequence_value_is_found_by_its_path(app, factory):
    import_folder(app, PYDICOM_FILES)
    path = "BeamSequence.ControlPointSequence.ReferencedDoseReferenceSequence.ReferencedDoseReferenceNumber"
    assert value_of(factory, path, item="0.1.1")
    with factory() as db:
        field = db.scalars(select(HeaderField).where(HeaderField.keyword_path == path)).first()
    assert field.tag_path == "300A00B0.300A0111.300C0050.300C0051" and field.depth == 3


def test_charset_files_decode_patient_names(app, factory):
    import_folder(app, CHARSET_FILES)
    names = set(value_of(factory, "PatientName"))
    assert "Yamada^Tarou=山田^太郎=やまだ^たろう" in names
    assert "Buc^Jérôme" in names
    assert any("Διονυσιος" in name for name in names)


def test_private_tags_keep_their_tag_number_and_creator(app, factory):
    import_folder(app, PYDICOM_FILES)
    with factory() as db:
        private = db.scalars(select(HeaderField).where(HeaderField.keyword_path.like("(%"),
                                                        HeaderField.private_creator.is_not(None))).first()
    assert private is not None
    assert private.keyword_path.startswith("(") and private.tag_path[4:8] != "0000"


def test_importing_the_same_folder_again_adds_nothing(app, factory):
    submission, first = import_folder(app, PYDICOM_FILES)
    with factory() as db:
        before = [db.scalar(select(func.count()).select_from(m)) for m in (Image, HeaderValue, IngestError)]
    _, again = import_folder(app, PYDICOM_FILES, batch_id=submission.batch_id)
    with factory() as db:
        after = [db.scalar(select(func.count()).select_from(m)) for m in (Image, HeaderValue, IngestError)]
    assert after == before
    assert again.imported == 0
    assert again.duplicates == first.imported + first.duplicates


def test_deid_dicom_cookies(app, factory):
    submission, result = import_folder(app, COOKIES, batch_name="cookies")
    assert (result.imported, result.errors) == (7, 0)
    with factory() as db:
        batch = db.get(Batch, submission.batch_id)
        assert (batch.status, batch.image_count) == (BatchStatus.DONE, 7)
        uids = set(db.scalars(select(Image.sop_instance_uid)))
    assert len(uids) == 7
    assert sorted(value_of(factory, "PatientID", batch_id=submission.batch_id))[0].startswith("cookie-")


def test_the_synthetic_ct_series_imports_with_every_header_field(app, factory, tmp_path):
    from sendit_core.synth import SeriesSpec, write_series

    paths = write_series(tmp_path / "ct", SeriesSpec(slices=12, rows=32, columns=32))
    _, result = import_folder(app, tmp_path / "ct")
    assert result.imported == 12
    import pydicom

    ds = pydicom.dcmread(paths[0], stop_before_pixels=True)
    with factory() as db:
        image = db.scalars(select(Image).where(Image.sop_instance_uid == ds.SOPInstanceUID)).one()
        keywords = set(db.scalars(select(HeaderField.keyword_path).join(
            HeaderValue, HeaderValue.field_id == HeaderField.id).where(HeaderValue.image_id == image.id)))
    expected = {elem.keyword for elem in ds if elem.keyword}
    assert expected <= keywords
    assert image.instance_number == 1 and image.series_instance_uid == ds.SeriesInstanceUID
