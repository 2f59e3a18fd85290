#!/usr/bin/env python
"""Search speed: the query engine at 20,000 and 200,000 images, against Orthanc's /tools/find.

1. Generates (once, cached under ``$TMPDIR/sendit-bench-search``) a corpus of
   synthetic DICOM files with realistic variety: ~150 patients, several studies
   each over ten years, CT/MR/PT/CR series of 10-80 images, ~100 header
   elements per file (a nested sequence and private tags among them).
2. Imports it into a fresh sendit (SQLite, ``sendit import --now``; with
   ``--postgresql URL`` also into a fresh PostgreSQL database).
3. Times 200 queries of each kind, their values drawn from the corpus:
   one equality (``PatientID=…``), one wildcard (``PatientName=ABC*``), three
   conditions with a range (``Modality=… StudyDate=A-B PatientSex=…``), and a
   few more shapes (contains, OR, negation, has:). Each query is timed as the
   search page runs it (the count and the first 50 images) and as a full list
   of matching image ids; mean and p95 are printed.
4. Uploads the same files to Orthanc (Debian's package, on loopback) and times
   the same queries through ``POST /tools/find`` (Level Instance).
5. Grows the database to 200,000 images (copies of the 20,000 with new UIDs and
   patient IDs, written with SQL) and times the queries again.

    .venv/bin/python bench/search.py
    .venv/bin/python bench/search.py --files 2000 --no-orthanc --scale 2
    .venv/bin/python bench/search.py --postgresql postgresql+psycopg://postgres@127.0.0.1:5432/test
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
BIN = Path(sys.executable).parent

SURNAMES = ["ADAMS", "BAKER", "CARTER", "DAVIS", "EVANS", "FISCHER", "GARCIA", "HUGHES", "IVANOV",
            "JONES", "KELLER", "LOPEZ", "MARTIN", "NGUYEN", "OLSEN", "PETERS", "QUINN", "ROSSI",
            "SCHMIDT", "TANAKA", "USMAN", "VARGA", "WAGNER", "XU", "YAMADA", "ZIMMER", "BRUNO",
            "COSTA", "DUBOIS", "EKSTROM", "FARAH", "GUPTA", "HANSEN", "ITO", "JANSSEN", "KOWALSKI"]
GIVEN = ["ANNA", "BEN", "CLARA", "DAVID", "EMMA", "FELIX", "GRACE", "HUGO", "IDA", "JONAS",
         "KAREN", "LEO", "MIA", "NOAH", "OLGA", "PAUL", "RITA", "SAM", "TARA", "VIKTOR"]
MODALITIES = {  # modality: (weight, SOP class, study descriptions, series descriptions)
    "CT": (5, "1.2.840.10008.5.1.4.1.1.2", ["CT CHEST", "CT ABDOMEN PELVIS", "CT HEAD", "CT CAP"],
           ["AXIAL 1.25", "AXIAL 5.0", "CORONAL MPR", "LUNG KERNEL", "BONE WINDOW"]),
    "MR": (3, "1.2.840.10008.5.1.4.1.1.4", ["MR BRAIN", "MR KNEE", "MR SPINE"],
           ["T1 SAG", "T2 AX", "FLAIR", "DWI", "T1 POST GD"]),
    "PT": (1, "1.2.840.10008.5.1.4.1.1.128", ["PET CT WHOLE BODY"], ["PET AC", "PET NAC"]),
    "CR": (1, "1.2.840.10008.5.1.4.1.1.1", ["XR CHEST 2 VIEWS"], ["PA", "LATERAL"]),
}
MANUFACTURERS = ["SIEMENS", "GE MEDICAL SYSTEMS", "Philips", "CANON_MEC"]
ROOT = "1.2.826.0.1.3680043.10.4242."


def uid() -> str:
    return ROOT + str(uuid.uuid4().int)[:30]


# -- corpus ------------------------------------------------------------------


def series_dataset(rng: random.Random, patient: dict, study: dict, number: int) -> Dataset:
    """The elements every image of one series shares (~95 of them)."""
    modality = study["modality"]
    _w, sop_class, _studies, series_names = MODALITIES[modality]
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", rng.choice(["AXIAL", "LOCALIZER", "OTHER"])]
    ds.InstanceCreationDate = study["date"]
    ds.InstanceCreationTime = study["time"]
    ds.SOPClassUID = sop_class
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study["date"]
    ds.StudyTime = study["time"]
    ds.SeriesTime = f"{int(study['time'][:2]):02d}{rng.randint(0, 59):02d}{rng.randint(0, 59):02d}"
    ds.AccessionNumber = study["accession"]
    ds.Modality = modality
    ds.ConversionType = "" if modality != "CR" else "DI"
    ds.Manufacturer = study["manufacturer"]
    ds.InstitutionName = study["institution"]
    ds.InstitutionAddress = "1 Hospital Road"
    ds.ReferringPhysicianName = rng.choice(["HOUSE^GREGORY", "GREY^MEREDITH", "WHO^DOCTOR", ""])
    ds.StationName = f"{modality}{rng.randint(1, 4):02d}"
    ds.StudyDescription = study["description"]
    ds.SeriesDescription = rng.choice(series_names)
    ds.InstitutionalDepartmentName = "Radiology"
    ds.PerformingPhysicianName = rng.choice(["", "SMITH^JOHN", "DOE^JANE"])
    ds.OperatorsName = rng.choice(["TECH^ONE", "TECH^TWO", "TECH^THREE"])
    ds.ManufacturerModelName = f"Model {rng.randint(100, 999)}"
    ds.PatientName = patient["name"]
    ds.PatientID = patient["id"]
    ds.IssuerOfPatientID = "HOSP"
    ds.PatientBirthDate = patient["birth"]
    ds.PatientSex = patient["sex"]
    ds.OtherPatientIDs = "X" + patient["id"]
    ds.PatientAge = f"{int(study['date'][:4]) - int(patient['birth'][:4]):03d}Y"
    ds.PatientSize = f"{patient['size']:.2f}"
    ds.PatientWeight = f"{patient['weight']:.1f}"
    ds.EthnicGroup = ""
    ds.PatientComments = ""
    ds.ContrastBolusAgent = rng.choice(["", "", "IOHEXOL"])
    ds.BodyPartExamined = rng.choice(["CHEST", "ABDOMEN", "HEAD", "KNEE", "SPINE"])
    ds.ScanOptions = "HELICAL MODE" if modality == "CT" else ""
    thickness = rng.choice([0.625, 1.0, 1.25, 2.0, 2.5, 3.0, 5.0])
    ds.SliceThickness = f"{thickness}"
    ds.KVP = rng.choice(["100", "120", "140"])
    ds.SpacingBetweenSlices = f"{thickness}"
    ds.DataCollectionDiameter = "500.0"
    ds.DeviceSerialNumber = f"{rng.randint(10000, 99999)}"
    ds.SoftwareVersions = rng.choice(["VA40", "syngo CT 2012", "R5.1"])
    ds.ProtocolName = study["description"] + " PROTOCOL"
    ds.ReconstructionDiameter = f"{rng.choice([350, 400, 450, 500])}.0"
    ds.DistanceSourceToDetector = "1085.6"
    ds.DistanceSourceToPatient = "595.0"
    ds.GantryDetectorTilt = "0.0"
    ds.TableHeight = f"{rng.uniform(120, 200):.1f}"
    ds.RotationDirection = "CW"
    ds.ExposureTime = str(rng.randint(300, 1000))
    ds.XRayTubeCurrent = str(rng.randint(80, 400))
    ds.Exposure = str(rng.randint(50, 300))
    ds.FilterType = "BODY FILTER"
    ds.GeneratorPower = "30000"
    ds.FocalSpots = "1.2"
    ds.ConvolutionKernel = rng.choice(["B30f", "B70f", "STANDARD", "LUNG"])
    ds.PatientPosition = rng.choice(["HFS", "FFS", "HFP"])
    ds.StudyInstanceUID = study["uid"]
    ds.SeriesInstanceUID = uid()
    ds.StudyID = study["id"]
    ds.SeriesNumber = number
    ds.AcquisitionNumber = 1
    ds.FrameOfReferenceUID = study["uid"] + ".0"
    ds.PositionReferenceIndicator = ""
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = "0.0"
    ds.ImageComments = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 8
    ds.PixelSpacing = [0.7, 0.7]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = ["40", "400"]
    ds.WindowWidth = ["400", "1500"]
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.LossyImageCompression = "00"
    ds.RequestingPhysician = ds.ReferringPhysicianName
    ds.RequestedProcedureDescription = study["description"]
    ds.PerformedProcedureStepStartDate = study["date"]
    ds.PerformedProcedureStepStartTime = study["time"]
    ds.PerformedProcedureStepID = study["accession"][-6:]
    ds.PerformedProcedureStepDescription = study["description"]
    code = Dataset()
    code.CodeValue = rng.choice(["T-D3000", "T-D4000", "T-D1100"])
    code.CodingSchemeDesignator = "SRT"
    code.CodeMeaning = {"T-D3000": "Chest", "T-D4000": "Abdomen", "T-D1100": "Head"}[code.CodeValue]
    ds.AnatomicRegionSequence = Sequence([code])
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    ref.ReferencedSOPInstanceUID = study["uid"] + ".7"
    ds.ReferencedStudySequence = Sequence([ref])
    ds.add_new(0x00090010, "LO", "SENDIT_BENCH")
    ds.add_new(0x00091001, "DS", f"{rng.uniform(0, 10):.2f}")
    ds.add_new(0x00091002, "LO", rng.choice(["ALPHA", "BETA", "GAMMA"]))
    ds.add_new(0x00091003, "SH", study["accession"][:8])
    return ds


def write_corpus(folder: Path, files: int, seed: int = 7) -> int:
    """Write ``files`` images: patients, their studies, series and images."""
    rng = random.Random(seed)
    pixels = np.zeros((8, 8), dtype=np.uint16).tobytes()
    weights = [m for m, spec in MODALITIES.items() for _ in range(spec[0])]
    written = 0
    patient_no = 0
    while written < files:
        patient_no += 1
        patient = {
            "id": f"P{patient_no:07d}",
            "name": f"{rng.choice(SURNAMES)}^{rng.choice(GIVEN)}",
            "birth": f"{rng.randint(1935, 2010)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}",
            "sex": rng.choice("MFMFO"),
            "size": rng.uniform(1.5, 1.95), "weight": rng.uniform(45, 120),
        }
        for study_no in range(rng.randint(1, 3)):
            if written >= files:
                break
            modality = rng.choice(weights)
            study = {
                "uid": uid(), "id": str(study_no + 1), "modality": modality,
                "date": f"{rng.randint(2015, 2024)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}",
                "time": f"{rng.randint(7, 19):02d}{rng.randint(0, 59):02d}{rng.randint(0, 59):02d}",
                "accession": f"A{rng.randint(10**8, 10**9 - 1)}",
                "description": rng.choice(MODALITIES[modality][2]),
                "manufacturer": rng.choice(MANUFACTURERS),
                "institution": rng.choice(["General Hospital", "University Clinic", "Imaging Center"]),
            }
            for series_no in range(1, rng.randint(2, 4) + 1):
                if written >= files:
                    break
                base = series_dataset(rng, patient, study, series_no)
                count = min(rng.randint(10, 80) if modality != "CR" else 1, files - written)
                target = folder / patient["id"] / f"{study['id']}-{series_no}"
                target.mkdir(parents=True, exist_ok=True)
                for index in range(count):
                    ds = base.copy()
                    ds.SOPInstanceUID = base.SeriesInstanceUID + f".{index + 1}"
                    ds.InstanceNumber = index + 1
                    z = index * float(base.SliceThickness)
                    ds.ImagePositionPatient = [-175.0, -175.0, z]
                    ds.SliceLocation = f"{z:.2f}"
                    ds.AcquisitionTime = ds.ContentTime = base.SeriesTime
                    ds.PixelData = pixels
                    ds.file_meta = FileMetaDataset()
                    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
                    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
                    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
                    ds.save_as(target / f"{index + 1:04d}.dcm", enforce_file_format=True)
                    written += 1
    return written


def corpus(root: Path, files: int) -> Path:
    folder = root / f"search-{files}"
    done = root / f"{folder.name}.complete"
    if not done.exists():
        shutil.rmtree(folder, ignore_errors=True)
        started = time.monotonic()
        count = write_corpus(folder, files)
        done.write_text(str(count))
        print(f"  generated {count} files in {time.monotonic() - started:.0f} s: {folder}", flush=True)
    return folder


# -- sendit ------------------------------------------------------------------


def import_sendit(folder: Path, workdir: Path, url: str) -> tuple[float, str]:
    """A fresh sendit on ``url`` with the corpus imported; returns (seconds, ini path)."""
    ini = workdir / "sendit.ini"
    ini.write_text("\n".join([
        "[app:main]", "use = egg:sendit",
        f"sqlalchemy.url = {url.replace('%', '%%')}",
        f"sendit.storage_dir = {workdir / 'storage'}", f"sendit.var_dir = {workdir / 'var'}",
        f"sendit.data_dir = {workdir / 'data'}",
        "sendit.lockdown.password = bench-password-1234", "sendit.worker = external",
        "sendit.db.auto_create = false",
    ]) + "\n")
    subprocess.run([str(BIN / "sendit"), "initdb", str(ini)], check=True, capture_output=True)
    started = time.monotonic()
    result = subprocess.run([str(BIN / "sendit"), "import", str(ini), str(folder), "--now", "-q"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"sendit import failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return time.monotonic() - started, str(ini)


def engine_for(url: str):
    from sendit_core.models import get_engine

    return get_engine({"sqlalchemy.url": url})


# -- queries -------------------------------------------------------------------


def query_sets(engine, runs: int, seed: int = 11) -> dict[str, list[tuple[str, dict]]]:
    """``runs`` queries of each kind, values drawn from the stored images:
    (sendit query, the equivalent Orthanc /tools/find Query or None)."""
    from sqlalchemy import text

    rng = random.Random(seed)
    with engine.connect() as conn:
        def values(tag: str) -> list[str]:
            return sorted(r[0] for r in conn.execute(text(
                "SELECT DISTINCT v.value_text FROM header_value v JOIN header_field f ON f.id = v.field_id "
                "WHERE f.tag_path = :tag AND v.value_text IS NOT NULL"), {"tag": tag}))
        patient_ids = values("00100020")
        names = values("00100010")
        described = sorted(tuple(r) for r in conn.execute(text(
            "SELECT DISTINCT d.value_text, m.value_text FROM header_value d "
            "JOIN header_value m ON m.image_id = d.image_id "
            "WHERE d.field_id = (SELECT id FROM header_field WHERE tag_path = '0008103E') "
            "AND m.field_id = (SELECT id FROM header_field WHERE tag_path = '00080060') "
            "AND d.value_num IS NULL AND m.value_num IS NULL")))
    prefixes = sorted({n[:3] for n in names})
    sets: dict[str, list] = {"equality": [], "wildcard": [], "three conditions with a range": [],
                             "contains": [], "OR and NOT": []}
    for _ in range(runs):
        pid = rng.choice(patient_ids)
        sets["equality"].append((f"PatientID={pid}", {"PatientID": pid}))
        prefix = rng.choice(prefixes)
        sets["wildcard"].append((f"PatientName={prefix}*", {"PatientName": f"{prefix}*"}))
        modality = rng.choice(["CT", "CT", "MR", "PT", "CR"])
        year = rng.randint(2015, 2023)
        sex = rng.choice("MFO")
        sets["three conditions with a range"].append((
            f"Modality={modality} StudyDate={year}0101-{year + 1}1231 PatientSex={sex}",
            {"Modality": modality, "StudyDate": f"{year}0101-{year + 1}1231", "PatientSex": sex}))
        description, described_modality = rng.choice(described)
        word = description.split()[-1].lower()
        sets["contains"].append((f"SeriesDescription~{word} Modality={described_modality}", None))
        sets["OR and NOT"].append((f"(Modality=PT OR Modality={modality}) -PatientSex={sex} "
                                   f"StudyDate>={year}0601", None))
    return sets


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


def time_sendit(engine, queries: list[tuple[str, dict]]) -> dict:
    """Each query as the search page and the API run it (the count and the
    first 50 images, newest first) and as the full list of matching ids."""
    from sqlalchemy import func, select

    from sendit_core.models import Image
    from sendit_core.query import image_filter

    page, full, counts = [], [], []
    with engine.connect() as conn:
        conn.execute(select(func.count()).select_from(Image)).scalar()  # warm the cache
        for q, _orthanc in queries:
            started = time.perf_counter()
            cond = image_filter(q)
            total = conn.execute(select(func.count()).select_from(Image).where(cond)).scalar()
            conn.execute(select(Image.id, Image.sop_instance_uid, Image.batch_id).where(cond)
                         .order_by(Image.id.desc()).limit(50)).all()
            page.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            ids = conn.execute(select(Image.id).where(image_filter(q))).all()
            full.append((time.perf_counter() - started) * 1000)
            counts.append(total)
            assert len(ids) == total, (q, len(ids), total)
    return {"page": page, "full": full, "counts": counts}


def time_search_page(url: str, workdir: Path, queries: list[tuple[str, dict]]) -> list[float]:
    """The whole /search page (WebTest, in process): the summary with series,
    study and batch counts, the first 50 rows with their header columns, the template."""
    from webtest import TestApp

    from sendit_core.app import create_app, load_config
    from sendit_core.plugins import get_plugin_manager

    raw = {"sqlalchemy.url": url, "sendit.var_dir": str(workdir / "var"),
           "sendit.data_dir": str(workdir / "data"), "sendit.storage_dir": str(workdir / "storage"),
           "sendit.lockdown.password": "bench-password-1234", "sendit.session.secret": "s" * 40,
           "sendit.worker": "external", "sendit.db.auto_create": "false"}
    settings, pm = load_config(raw, here=str(workdir), pm=get_plugin_manager(load_entrypoints=False))
    app = create_app(settings, pm)
    client = TestApp(app)
    form = client.get("/login").forms[0]
    form["password"] = "bench-password-1234"
    form.submit()
    client.get("/search", params={"q": queries[0][0]})
    times = []
    for q, _orthanc in queries:
        started = time.perf_counter()
        client.get("/search", params={"q": q})
        times.append((time.perf_counter() - started) * 1000)
    app.registry.settings["sendit.engine"].dispose()
    return times


def time_orthanc(orthanc, queries: list[tuple[str, dict]]) -> dict:
    import http.client

    from ingest import AUTH

    times, counts = [], []
    conn = http.client.HTTPConnection("127.0.0.1", orthanc.port, timeout=300)
    for _q, query in queries:
        body = json.dumps({"Level": "Instance", "Query": query, "Expand": False})
        started = time.perf_counter()
        conn.request("POST", "/tools/find", body=body,
                     headers={"Content-Type": "application/json", "Authorization": AUTH})
        answer = json.loads(conn.getresponse().read())
        times.append((time.perf_counter() - started) * 1000)
        counts.append(len(answer))
    conn.close()
    return {"full": times, "counts": counts}


# -- growing the database ---------------------------------------------------------------


def grow(engine, factor: int) -> float:
    """Copy the images (and their values) until there are ``factor`` times as
    many: new UIDs, patient IDs and accession numbers per copy, the rest as is."""
    from sqlalchemy import text

    started = time.monotonic()
    with engine.begin() as conn:
        n = conn.execute(text("SELECT max(id) FROM image")).scalar()
        b = conn.execute(text("SELECT max(id) FROM batch")).scalar()
        renamed = [r[0] for r in conn.execute(text(
            "SELECT id FROM header_field WHERE vr = 'UI' OR tag_path IN "
            "('00100020', '00101000', '00080050', '00091003')"))]
        ids = ", ".join(str(i) for i in renamed)
        for k in range(1, factor):
            conn.execute(text(
                "INSERT INTO batch (id, name, status, source, image_count, error_count, pending_count, "
                "total_bytes, created_at, updated_at, finished_at) SELECT id + :o, name || '-' || :k, status, "
                "source, image_count, error_count, pending_count, total_bytes, created_at, updated_at, "
                "finished_at FROM batch WHERE id <= :b"), {"o": k * b, "k": str(k), "b": b})
            conn.execute(text(
                "INSERT INTO image (id, batch_id, sop_instance_uid, sop_class_uid, study_instance_uid, "
                "series_instance_uid, modality, instance_number, transfer_syntax_uid, stored_path, "
                "original_name, size, created_at) SELECT id + :o, batch_id + :ob, "
                "sop_instance_uid || '.' || :k, sop_class_uid, study_instance_uid || '.' || :k, "
                "series_instance_uid || '.' || :k, modality, instance_number, transfer_syntax_uid, "
                "stored_path, original_name, size, created_at FROM image WHERE id <= :n"),
                {"o": k * n, "ob": k * b, "k": str(k), "n": n})
            conn.execute(text(
                "INSERT INTO header_value (image_id, field_id, item, position, value_text, value_num) "
                f"SELECT image_id + :o, field_id, item, position, CASE WHEN field_id IN ({ids}) "
                "THEN value_text || '.' || :k ELSE value_text END, value_num FROM header_value "
                "WHERE image_id <= :n"), {"o": k * n, "k": str(k), "n": n})
            print(f"    copy {k}/{factor - 1} written ({time.monotonic() - started:.0f} s)", flush=True)
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT setval('image_id_seq', (SELECT max(id) FROM image))"))
            conn.execute(text("SELECT setval('batch_id_seq', (SELECT max(id) FROM batch))"))
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    return time.monotonic() - started


# -- the run ----------------------------------------------------------------------------


def fmt(values: list[float]) -> str:
    return f"{statistics.mean(values):7.1f} {percentile(values, 95):7.1f}"


def measure(label: str, url: str, workdir: Path, sets: dict, results: list, orthanc=None) -> None:
    engine = engine_for(url)
    print(f"  [{label}]  query kind: mean / p95 ms (count + first page | all ids | whole /search page)"
          + (" | Orthanc /tools/find" if orthanc else ""), flush=True)
    for kind, queries in sets.items():
        s = time_sendit(engine, queries)
        page = time_search_page(url, workdir, queries[: max(20, len(queries) // 4)])
        row = {"db": label, "kind": kind, "page": s["page"], "full": s["full"], "html": page,
               "matches": statistics.median(s["counts"])}
        line = (f"    {kind:32} {fmt(s['page'])} | {fmt(s['full'])} | {fmt(page)} "
                f"(median {row['matches']:.0f} matches)")
        if orthanc is not None and queries[0][1] is not None:
            o = time_orthanc(orthanc, queries)
            row["orthanc"] = o["full"]
            differ = sum(1 for a, b in zip(s["counts"], o["counts"]) if a != b)
            line += f" | {fmt(o['full'])}" + (f" ({differ} counts differ)" if differ else "")
        print(line, flush=True)
        results.append(row)
    engine.dispose()


def create_postgresql(base: str) -> str:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(base)
    name = f"sendit_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


def drop_postgresql(test_url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(test_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
    admin.dispose()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=20_000, help="images in the corpus (default 20,000)")
    parser.add_argument("--runs", type=int, default=200, help="queries of each kind (default 200)")
    parser.add_argument("--scale", type=int, default=10, help="then grow the database this many times (1: no)")
    parser.add_argument("--corpus-dir", type=Path, default=Path(tempfile.gettempdir()) / "sendit-bench-search")
    parser.add_argument("--no-orthanc", action="store_true", help="measure sendit only")
    parser.add_argument("--postgresql", metavar="URL", help="also on a fresh database on this server")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only (with --postgresql)")
    args = parser.parse_args(argv)
    from sqlalchemy import text

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up Orthanc and databases
    has_orthanc = shutil.which("Orthanc") is not None and not args.no_orthanc
    print(f"corpus of {args.files} files", flush=True)
    folder = corpus(args.corpus_dir, args.files)
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="sendit-bench-search-") as tmp:
        work = Path(tmp)
        backends = [] if args.no_sqlite else \
            [("SQLite", f"sqlite:///{work / 'sqlite' / 'sendit.sqlite'}", work / "sqlite")]
        if args.postgresql:
            backends.append(("PostgreSQL", create_postgresql(args.postgresql), work / "pg"))
        orthanc = None
        try:
            if has_orthanc and not args.no_sqlite:
                from ingest import Orthanc  # bench/ingest.py: the same Orthanc set-up (and password)

                (work / "orthanc").mkdir()
                orthanc = Orthanc(work / "orthanc")
                files = sorted(folder.rglob("*.dcm"))
                seconds = orthanc.upload(files)
                print(f"  Orthanc: {len(files)} files uploaded in {seconds:.0f} s", flush=True)
            for label, url, workdir in backends:
                workdir.mkdir()
                seconds, _ini = import_sendit(folder, workdir, url)
                engine = engine_for(url)
                with engine.connect() as conn:
                    images = conn.execute(text("SELECT count(*) FROM image")).scalar()
                    values = conn.execute(text("SELECT count(*) FROM header_value")).scalar()
                if label == "PostgreSQL":  # what autovacuum does after a big import
                    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                        conn.execute(text("VACUUM ANALYZE"))
                print(f"  {label}: imported {images} images, {values} header values in {seconds:.0f} s",
                      flush=True)
                sets = query_sets(engine, args.runs)
                engine.dispose()
                measure(f"{label}, {images:,} images", url, workdir, sets, results,
                        orthanc if label == "SQLite" else None)
                if args.scale > 1:
                    engine = engine_for(url)
                    seconds = grow(engine, args.scale)
                    with engine.connect() as conn:
                        images = conn.execute(text("SELECT count(*) FROM image")).scalar()
                        values = conn.execute(text("SELECT count(*) FROM header_value")).scalar()
                    engine.dispose()
                    print(f"  {label}: grown to {images} images, {values} header values in "
                          f"{seconds:.0f} s", flush=True)
                    measure(f"{label}, {images:,} images", url, workdir,
                            {k: v for k, v in sets.items()}, results)
        finally:
            if orthanc is not None:
                orthanc.stop()
            if args.postgresql:
                drop_postgresql(backends[-1][1])
    print("\n| database | query | matches (median) | count + first page, mean / p95 | all ids, mean / p95 "
          "| /search page, mean / p95 | Orthanc /tools/find, mean / p95 |")
    print("|---|---|---|---|---|---|---|")
    for row in results:
        o = row.get("orthanc")
        print(f"| {row['db']} | {row['kind']} | {row['matches']:,.0f} | "
              f"{statistics.mean(row['page']):.1f} / {percentile(row['page'], 95):.1f} ms | "
              f"{statistics.mean(row['full']):.1f} / {percentile(row['full'], 95):.1f} ms | "
              f"{statistics.mean(row['html']):.1f} / {percentile(row['html'], 95):.1f} ms | "
              + (f"{statistics.mean(o):.1f} / {percentile(o, 95):.1f} ms |" if o else "— |"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
