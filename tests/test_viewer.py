"""The viewer plugin's endpoints and the image page, through WebTest, on real files.

One module-wide app (SQLite) holds the data most tests read: pydicom's bundled
files (every one with pixel data, each imported as its own batch, plus SR and
RT Plan objects without pixels) and synthetic series with a bright marker at a
known patient-space point, written in shuffled file order with uneven pixel
spacing in axial (``sendit_core.synth``), coronal and oblique orientations
(``sendit_viewer.phantom``). Tests that change data build their own app (and run
on PostgreSQL too when it is configured).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom.pixels import apply_color_lut, apply_modality_lut
from pyramid.interfaces import IRoutesMapper
from sqlalchemy import select
from webtest import TestApp

from sendit_core import Panel, hookimpl
from sendit_core.app import create_app, load_config
from sendit_core.models import Image
from sendit_core.pipeline import Ingestor, import_now, iter_files, submit
from sendit_core.plugins import DEFAULT_PLUGINS, get_plugin_manager
from sendit_core.synth import SeriesSpec, write_series
from sendit_core.testing import PASSWORD, SECRET, SenditApp, login
from sendit_viewer.cache import VolumeCache
from sendit_viewer.geometry import voxel_to_patient
from sendit_viewer.phantom import write_phantom_series
from sendit_viewer.volume import target_for

TEST_FILES = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent
COS30, SIN30 = math.cos(math.radians(30)), math.sin(math.radians(30))

#: synthetic series: name -> how it is written, and where its marker is
AXIAL = dict(spec=SeriesSpec(slices=24, rows=48, columns=40, pixel_spacing=(0.8, 0.6), slice_spacing=2.5,
                             origin=(-12.0, -20.0, 30.0), marker=(-1.0, -4.0, 60.0), marker_radius=3.0),
             marker=(-1.0, -4.0, 60.0))
CORONAL = dict(rows=40, columns=36, slices=20, pixel_spacing=(1.5, 1.2), slice_spacing=3.0,
               orientation=(1, 0, 0, 0, 0, -1), centre=(10.0, 5.0, -20.0), marker=(16.0, -7.0, -8.0),
               marker_radius=3.5, anatomy=False)
OBLIQUE = dict(rows=32, columns=32, slices=12, pixel_spacing=(1.0, 1.0), slice_spacing=2.0,
               orientation=(COS30, SIN30, 0, -SIN30, COS30, 0), centre=(0.0, 0.0, 0.0),
               marker=(5.0, -6.0, 2.0), marker_radius=3.0, anatomy=False)


def planted_dose(path: Path, hot: tuple[int, int, int]) -> Path:
    """pydicom's ``rtdose.dcm`` with one hot voxel at (frame, row, column) and its
    frames listed head first (a descending Grid Frame Offset Vector)."""
    ds = pydicom.dcmread(TEST_FILES / "rtdose.dcm")
    dose = np.zeros((15, 10, 10), dtype=np.uint32)
    dose[hot] = 1000
    ds.PixelData = dose.tobytes()
    ds.GridFrameOffsetVector = [-5.0 * f for f in range(15)]
    ds.SOPInstanceUID = ds.SOPInstanceUID + ".7"
    ds.SeriesInstanceUID = ds.SeriesInstanceUID + ".7"
    ds.save_as(path)
    return path


def dose_point(hot: tuple[int, int, int]) -> list[float]:
    """Where the planted voxel is, from the file's own geometry."""
    ds = pydicom.dcmread(TEST_FILES / "rtdose.dcm", stop_before_pixels=True)
    frame, row, column = hot
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    return [x + 10.0 * column, y + 10.0 * row, z - 5.0 * frame]


HOT = (3, 2, 7)


def readable_pixel_files() -> list[str]:
    """pydicom's bundled files that carry pixel data and can be read."""
    names = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in sorted(TEST_FILES.glob("*.dcm")):
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=False, defer_size=1024)
            except Exception:  # noqa: BLE001 - files the reader refuses are not importable
                continue
            if "PixelData" in ds and "file_meta" in dir(ds):
                names.append(path.name)
    return names


PIXEL_FILES = readable_pixel_files()
NO_PIXELS = ["test-SR.dcm", "rtplan.dcm"]


# -- the shared app -----------------------------------------------------------


def build_app(root: Path, template: Path, *, plugins=(), builtins=DEFAULT_PLUGINS, **overrides) -> SenditApp:
    root.mkdir(parents=True, exist_ok=True)
    database = root / "sendit.sqlite"
    shutil.copyfile(template, database)
    raw = {"sqlalchemy.url": f"sqlite:///{database}", "sendit.var_dir": str(root / "var"),
           "sendit.data_dir": str(root / "data"), "sendit.storage_dir": str(root / "storage"),
           "sendit.lockdown.password": PASSWORD, "sendit.session.secret": SECRET,
           "sendit.db.auto_create": "false", "here": str(root), **overrides}
    pm = get_plugin_manager(load_entrypoints=False, builtins=builtins, extra=list(plugins))
    converted, pm = load_config(raw, here=str(root), pm=pm)
    wsgi = create_app(converted, pm)
    return SenditApp(wsgi, wsgi.registry.settings, pm)


def import_batch(app: SenditApp, paths, name: str, batch_id: int | None = None) -> int:
    factory = app.registry["dbsession_factory"]
    submission = submit(factory, app.settings, iter_files(paths), batch_name=name, batch_id=batch_id,
                        publish=False)
    import_now(Ingestor(app.settings, app.pm, factory), submission)
    return submission.batch_id


def series_ids(app: SenditApp, batch_id: int) -> list[int]:
    """The batch's image ids by instance number (= slice order for the generated series)."""
    with app.session() as db:
        return db.scalars(select(Image.id).where(Image.batch_id == batch_id)
                          .order_by(Image.instance_number, Image.id)).all()


def client(app: SenditApp) -> TestApp:
    web = TestApp(app.wsgi)
    assert login(web).status_int == 303
    return web


@dataclass
class World:
    app: SenditApp
    web: TestApp
    root: Path
    files: dict[str, int] = field(default_factory=dict)      # pydicom file name -> image id
    series: dict[str, list[int]] = field(default_factory=dict)  # synthetic series -> ids in slice order


def apart(names: list[str]) -> list[list[str]]:
    """The files in as few batches as possible, no two of a batch sharing a SOP
    Instance UID (refused as a duplicate) or a series (one volume)."""
    groups: list[tuple[list[str], set]] = []
    for name in names:
        ds = pydicom.dcmread(TEST_FILES / name, stop_before_pixels=True, force=True)
        uids = {("sop", ds.get("SOPInstanceUID")), ("series", ds.get("SeriesInstanceUID"))}
        for group, taken in groups:
            if not uids & taken:
                group.append(name)
                taken.update(uids)
                break
        else:
            groups.append(([name], set(uids)))
    return [group for group, _ in groups]


@pytest.fixture(scope="module")
def world(tmp_path_factory, _sqlite_template) -> World:
    root = tmp_path_factory.mktemp("viewer")
    app = build_app(root, _sqlite_template)
    found = World(app, client(app), root)
    write_series(root / "in" / "axial", AXIAL["spec"], shuffle=True, seed=3)
    write_phantom_series(root / "in" / "coronal", shuffle=True, seed=4, **CORONAL)
    write_phantom_series(root / "in" / "oblique", shuffle=True, seed=5, **OBLIQUE)
    planted_dose(root / "in" / "dose.dcm", HOT)
    for name in ("axial", "coronal", "oblique", "dose.dcm"):
        found.series[name] = series_ids(app, import_batch(app, [root / "in" / name], name))
    for number, group in enumerate(apart(PIXEL_FILES + NO_PIXELS)):
        batch = import_batch(app, [TEST_FILES / name for name in group], f"pydicom-{number}")
        with app.session() as db:
            stored = dict(db.execute(select(Image.original_name, Image.id).where(Image.batch_id == batch)).all())
        found.files.update({name: stored[name] for name in group if name in stored})
    yield found
    app.close()


def volume(web: TestApp, image_id: int) -> tuple[dict, np.ndarray]:
    info = web.get(f"/viewer/images/{image_id}/volume.json").json
    body = web.get(info["urls"]["volume"]).body
    shape = info["shape"] + ([3] if info["channels"] == 3 else [])
    return info, np.frombuffer(body, dtype=np.dtype(info["dtype"]).newbyteorder("<")).reshape(shape)


def own_slice(web: TestApp, image_id: int) -> tuple[dict, np.ndarray]:
    response = web.get(f"/viewer/images/{image_id}/slice.raw")
    assert response.content_type == "application/octet-stream"
    info = json.loads(response.headers["X-Sendit-Slice"])
    shape = info["shape"][1:] + ([3] if info["channels"] == 3 else [])
    return info, np.frombuffer(response.body, dtype=np.dtype(info["dtype"]).newbyteorder("<")).reshape(shape)


def marker_centre(info: dict, voxels: np.ndarray) -> list[float]:
    """The patient-space centre of the marker's voxels (HU 2000) in a served volume."""
    values = voxels * info["rescale"]["slope"] + info["rescale"]["intercept"]
    k, j, i = np.nonzero(values >= 1990)
    assert len(k), "the marker is not in the volume"
    return voxel_to_patient(info, k.mean(), j.mean(), i.mean())


# -- geometry -------------------------------------------------------------------


@pytest.mark.parametrize("name, settings", [("axial", AXIAL), ("coronal", CORONAL), ("oblique", OBLIQUE)])
def test_the_marker_is_where_the_patient_coordinates_say(world, name, settings):
    ids = world.series[name]
    info, voxels = volume(world.web, ids[len(ids) // 2])
    assert info["shape"][0] == len(ids)  # every slice, whatever the file order
    assert info["image_ids"] == ids       # sorted along the normal = by instance number here
    assert np.allclose(marker_centre(info, voxels), settings["marker"], atol=0.5)
    if name == "axial":
        spec = settings["spec"]
        assert info["spacing"] == pytest.approx([spec.slice_spacing, *spec.pixel_spacing])
        assert info["axes"] == [[0, 0, 1], [0, 1, 0], [1, 0, 0]]
        assert info["origin"] == pytest.approx(spec.origin)
    if name == "coronal":  # slices go to the back, rows down to the feet, columns to the left
        assert info["spacing"] == pytest.approx([3.0, 1.5, 1.2])
        assert np.allclose(info["axes"], [[0, 1, 0], [0, 0, -1], [1, 0, 0]])
    assert info["unit"] == "HU" and info["oriented"] is True


def test_the_image_itself_is_the_current_slice_and_comes_first(world):
    ids = world.series["axial"]
    for index in (0, 7, len(ids) - 1):
        info = world.web.get(f"/viewer/images/{ids[index]}/volume.json").json
        assert info["current"] == index
        own, pixels = own_slice(world.web, ids[index])
        _, voxels = volume(world.web, ids[index])
        assert own["provisional"] is True and own["shape"] == [1, 48, 40]
        assert np.array_equal(pixels, voxels[index])
        z = AXIAL["spec"].origin[2] + index * AXIAL["spec"].slice_spacing
        assert own["origin"] == pytest.approx([-12.0, -20.0, z])
        assert own["axes"] == info["axes"]  # the same frame: the browser reuses the slice


def test_multiframe_rtdose_is_a_volume_of_its_frames(world):
    path = TEST_FILES / "rtdose.dcm"
    ds = pydicom.dcmread(path)
    info, voxels = volume(world.web, world.files["rtdose.dcm"])
    assert info["multiframe"] is True and info["shape"] == [15, 10, 10]
    assert info["spacing"] == pytest.approx([5.0, 10.0, 10.0])
    assert info["rescale"] == {"slope": pytest.approx(float(ds.DoseGridScaling)), "intercept": 0.0}
    # the hottest voxel, located from the file itself, lands at the same patient point
    frames = ds.pixel_array
    f, row, col = np.unravel_index(np.argmax(frames), frames.shape)
    expected = (np.array(ds.ImagePositionPatient, float) + col * 10.0 * np.array([1, 0, 0])
                + row * 10.0 * np.array([0, 1, 0]) + float(ds.GridFrameOffsetVector[f]) * np.array([0, 0, 1]))
    k, j, i = np.unravel_index(np.argmax(voxels), voxels.shape)
    assert voxel_to_patient(info, k, j, i) == pytest.approx(list(expected))
    assert info["current"] == 7  # the middle frame
    own, pixels = own_slice(world.web, world.files["rtdose.dcm"])
    assert np.array_equal(pixels, voxels[7]) and own["frames"] == 15


def test_a_marker_in_a_multiframe_file_is_where_its_frame_offsets_say(world):
    info, voxels = volume(world.web, world.series["dose.dcm"][0])
    k, j, i = np.unravel_index(np.argmax(voxels), voxels.shape)
    assert (k, j, i) == (14 - HOT[0], HOT[1], HOT[2])  # frames sorted feet to head
    assert voxel_to_patient(info, k, j, i) == pytest.approx(dose_point(HOT))
    assert info["spacing"] == pytest.approx([5.0, 10.0, 10.0]) and info["axes"][0] == [0, 0, 1]


def test_frames_without_positions_are_kept_in_order(world):
    info, voxels = volume(world.web, world.files["examples_ybr_color.dcm"])
    expected = pydicom.dcmread(TEST_FILES / "examples_ybr_color.dcm").pixel_array
    assert info["channels"] == 3 and info["shape"] == [30, 240, 320] and info["oriented"] is False
    assert np.array_equal(voxels, expected)


# -- pixels of every bundled file -------------------------------------------------


def expected_pixels(path: Path) -> np.ndarray:
    """What pydicom makes of the file: frames sorted along the normal, rescaled."""
    ds = pydicom.dcmread(path)
    array = ds.pixel_array
    colour = int(ds.get("SamplesPerPixel", 1)) == 3 or ds.PhotometricInterpretation == "PALETTE COLOR"
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        array = apply_color_lut(array, ds)
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames == 1:
        array = array[None]
    if not colour:
        if "RescaleSlope" in ds or "ModalityLUTSequence" in ds:
            array = apply_modality_lut(array, ds)
        elif "DoseGridScaling" in ds:
            array = array * float(ds.DoseGridScaling)
    if frames > 1 and "GridFrameOffsetVector" in ds:
        array = array[np.argsort([float(v) for v in ds.GridFrameOffsetVector], kind="stable")]
    return array


def decodes(path: Path) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pydicom.dcmread(path).pixel_array
            return True
        except Exception:  # noqa: BLE001
            return False


@pytest.mark.parametrize("name", PIXEL_FILES)
def test_served_pixels_equal_pydicoms_or_a_clear_message(world, name):
    path = TEST_FILES / name
    if name not in world.files:
        pytest.skip(f"{name} is refused at import (an error row of its batch)")
    image_id = world.files[name]
    if not decodes(path):
        for url in (f"/viewer/images/{image_id}/slice.raw", f"/viewer/images/{image_id}/volume.json"):
            answer = world.web.get(url, status=422).json
            assert answer["error"] == "undecodable"
            assert answer["message"].startswith("The pixel data of this image")
            assert "Traceback" not in answer["message"] and len(answer["message"]) < 400
        assert world.web.get(f"/images/{image_id}").status_int == 200
        return
    expected = expected_pixels(path)
    info, voxels = volume(world.web, image_id)
    colour = info["channels"] == 3
    served = voxels if colour else voxels * info["rescale"]["slope"] + info["rescale"]["intercept"]
    assert served.shape == expected.shape
    if colour:
        assert np.array_equal(served, expected)
    else:
        assert np.allclose(served, expected, rtol=1e-6, atol=1e-9)
    own, pixels = own_slice(world.web, image_id)
    middle = len(expected) // 2 if len(expected) > 1 else 0
    mine = pixels if colour else pixels * own["rescale"]["slope"] + own["rescale"]["intercept"]
    assert np.allclose(mine, expected[middle]) and own["dtype"] == info["dtype"]


def test_the_compressed_syntaxes_are_decoded(world):
    """The decoders the project depends on are installed and used."""
    names = {"JPEG2000.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
             "MR_small_RLE.dcm", "SC_rgb_jpeg_gdcm.dcm", "SC_rgb_jpeg_dcmtk.dcm", "JPEGLSNearLossless_16.dcm",
             "SC_rgb_rle_2frame.dcm", "rtdose_rle.dcm", "image_dfl.dcm"}
    for name in names:
        info = world.web.get(f"/viewer/images/{world.files[name]}/volume.json").json
        assert info["shape"][1] > 0, name


def test_12_bit_jpeg_needs_the_optional_decoder(world):
    answer = world.web.get(f"/viewer/images/{world.files['JPEG-lossy.dcm']}/volume.json", status=422).json
    if decodes(TEST_FILES / "JPEG-lossy.dcm"):
        pytest.skip("pylibjpeg-libjpeg is installed")
    assert "pylibjpeg-libjpeg" in answer["message"] and "sendit[jpeg-extended]" in answer["message"]


@pytest.mark.parametrize("name", NO_PIXELS)
def test_objects_without_pixels_say_there_is_nothing_to_display(world, name):
    image_id = world.files[name]
    for url in (f"/viewer/images/{image_id}/slice.raw", f"/viewer/images/{image_id}/volume.json"):
        answer = world.web.get(url, status=422).json
        assert answer["error"] == "no-pixels" and "nothing to display" in answer["message"]
    page = world.web.get(f"/images/{image_id}")
    panel = page.html.find(id="panel-viewer")
    assert "There is nothing to display" in panel.text and panel.find("canvas") is None
    assert len(page.html.find(id="header").find("tbody").find_all("tr")) > 10


# -- endpoints: bad requests ----------------------------------------------------------


def test_unknown_images_and_planes_get_json_answers(world):
    web = world.web
    assert web.get("/viewer/images/999999/volume.json", status=404).json["error"] == "not-found"
    assert "not an image number" in web.get("/viewer/images/abc/slice.raw", status=404).json["message"]
    assert web.get("/viewer/images/0/volume.json", status=404).json["error"] == "not-found"
    info = web.get(f"/viewer/images/{world.series['axial'][0]}/volume.json").json
    plane = info["urls"]["plane"]
    assert web.get(plane.replace("AXIS", "3").replace("INDEX", "0"), status=400).json["error"] == "bad-plane"
    answer = web.get(plane.replace("AXIS", "0").replace("INDEX", "24"), status=404).json
    assert answer["message"] == "Plane 24 is outside the volume: axis 0 has planes 0 to 23."
    assert web.get(plane.replace("AXIS", "x").replace("INDEX", "1"), status=400).json["error"] == "bad-plane"
    for key in ("s0000000000000000-0000000000000000", "..%2e", "a" * 200, "%2e%2e%5cetc"):
        assert web.get(f"/viewer/volumes/{key}/volume.raw", status=410).json["error"] == "expired"
        assert web.get(f"/viewer/volumes/{key}/planes/0/0.raw", status=410).json["error"] == "expired"
    web.get("/viewer/volumes/../../setup.cfg", status=404)  # no route: the not-found page


def test_planes_are_cut_from_the_volume(world):
    info, voxels = volume(world.web, world.series["coronal"][3])
    for axis, index, cut in ((0, 3, voxels[3]), (1, 11, voxels[:, 11]), (2, 35, voxels[:, :, 35])):
        url = info["urls"]["plane"].replace("AXIS", str(axis)).replace("INDEX", str(index))
        body = world.web.get(url).body
        assert np.array_equal(np.frombuffer(body, dtype=info["dtype"]).reshape(cut.shape), cut)


def test_a_missing_file_is_a_message_not_a_500(world, tmp_path):
    app = world.app
    batch = import_batch(app, [TEST_FILES / "CT_small.dcm"], "gone")
    (image_id,) = series_ids(app, batch)
    with app.session() as db:
        stored = Path(app.settings["sendit.storage_dir"]) / db.get(Image, image_id).stored_path
    stored.unlink()
    for url in (f"/viewer/images/{image_id}/slice.raw", f"/viewer/images/{image_id}/volume.json"):
        answer = world.web.get(url, status=404).json
        assert answer["error"] == "missing-file" and "stored file" in answer["message"]
    assert world.web.get(f"/images/{image_id}").html.find(id="viewer") is not None


def test_an_oversized_volume_shows_the_own_slice_only(world, monkeypatch):
    monkeypatch.setitem(world.app.settings, "sendit.viewer.max_volume_mb", 0)
    image_id = world.series["oblique"][0]
    with world.app.session() as db:  # forget the volume if an earlier test built it
        key = target_for(db, db.get(Image, image_id), Path(world.app.settings["sendit.storage_dir"])).key
    shutil.rmtree(world.app.registry["sendit_viewer.cache"].path(key), ignore_errors=True)
    answer = world.web.get(f"/viewer/images/{image_id}/volume.json", status=413).json
    assert answer["error"] == "too-large" and "sendit.viewer.max_volume_mb" in answer["message"]
    assert own_slice(world.web, image_id)[1].shape == (32, 32)


def test_anonymous_requests_get_nothing(world):
    anonymous = TestApp(world.app.wsgi)
    image_id = world.series["axial"][0]
    for url in (f"/viewer/images/{image_id}/volume.json", f"/viewer/images/{image_id}/slice.raw",
                "/static-viewer/viewer.js"):
        response = anonymous.get(url, status="*")
        assert response.status_int in (302, 303, 401, 403) and b"\x00" not in response.body


# -- the cache --------------------------------------------------------------------------


def test_a_volume_is_assembled_once_and_rebuilt_when_the_series_grows(make_app, tmp_path):
    app = make_app()
    web = client(app)
    spec = SeriesSpec(slices=6, rows=16, columns=16, series_uid="1.2.826.0.1.3680043.10.1234.99.1",
                      study_uid="1.2.826.0.1.3680043.10.1234.99")
    paths = write_series(tmp_path / "series", spec)
    batch = import_batch(app, paths[:5], "growing")
    ids = series_ids(app, batch)
    first = web.get(f"/viewer/images/{ids[0]}/volume.json").json
    folder = app.registry["sendit_viewer.cache"].path(first["key"])
    built = (folder / "volume.raw").stat().st_mtime_ns
    again = web.get(f"/viewer/images/{ids[4]}/volume.json").json
    assert again["key"] == first["key"] and again["current"] == 4
    assert (folder / "volume.raw").stat().st_mtime_ns == built  # not rebuilt
    import_batch(app, paths[5:], "growing", batch_id=batch)  # the series gains a slice
    grown = web.get(f"/viewer/images/{ids[0]}/volume.json").json
    assert grown["key"] != first["key"] and grown["shape"][0] == 6
    assert not folder.exists()  # the stale volume is gone
    assert web.get(first["urls"]["volume"], status=410).json["error"] == "expired"


def test_deleting_a_batch_removes_its_volumes_from_the_cache(make_app, tmp_path):
    """The cached volumes hold the batch's pixels: they go with it (through
    ``sendit_batch_deleted``), in this process's open maps too, and the other
    batch's volume stays."""
    import base64

    app = make_app()
    web = client(app)
    kept_paths = write_series(tmp_path / "kept", SeriesSpec(
        slices=3, rows=8, columns=8, series_uid="1.2.826.0.1.3680043.10.1234.98.1",
        study_uid="1.2.826.0.1.3680043.10.1234.98"))
    gone_paths = write_series(tmp_path / "gone", SeriesSpec(
        slices=3, rows=8, columns=8, series_uid="1.2.826.0.1.3680043.10.1234.97.1",
        study_uid="1.2.826.0.1.3680043.10.1234.97"))
    kept = series_ids(app, import_batch(app, kept_paths, "kept"))
    gone_batch = import_batch(app, gone_paths, "gone")
    gone = series_ids(app, gone_batch)
    kept_info, _ = volume(web, kept[0])
    gone_info, _ = volume(web, gone[0])  # read: its voxels are memory-mapped in this process
    cache = app.registry["sendit_viewer.cache"]
    assert gone_info["batch"] == gone_batch and cache.describe(gone_info["key"]) is not None
    stale = cache.new_entry("sold-00000001")  # cached before volumes named their batch
    (stale / "volume.raw").write_bytes(b"x")
    cache.commit("sold-00000001", stale, {"shape": [1, 1, 1], "channels": 1, "dtype": "uint8"})

    basic = {"Authorization": "Basic " + base64.b64encode(f"client:{PASSWORD}".encode()).decode()}
    TestApp(app.wsgi).delete(f"/api/batches/{gone_batch}", headers=basic, status=204)

    assert cache.describe(gone_info["key"]) is None and cache.open(gone_info["key"]) is None
    assert web.get(gone_info["urls"]["volume"], status=410).json["error"] == "expired"
    assert cache.describe("sold-00000001") is None
    assert cache.describe(kept_info["key"]) is not None
    assert volume(web, kept[0])[0]["key"] == kept_info["key"]


def test_the_cache_keeps_to_its_size(tmp_path):
    cache = VolumeCache(tmp_path / "cache", limit_bytes=2500)
    for n, key in enumerate(("sa-00000001", "sb-00000002", "sc-00000003")):
        folder = cache.new_entry(key)
        (folder / "volume.raw").write_bytes(b"x" * 1000)
        cache.commit(key, folder, {"shape": [1, 1, 1000], "channels": 1, "dtype": "uint8"})
        if n == 0:  # the first one is the least recently used
            os.utime(cache.path(key), (time.time() - 100, time.time() - 100))
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["sb-00000002", "sc-00000003"]
    assert cache.describe("sa-00000001") is None and cache.open("sb-00000002")[1].shape == (1, 1, 1000)
    with pytest.raises(KeyError):
        cache.path("../etc")


def test_settings_are_declared_and_checked(make_app):
    from sendit_core.settings import SettingsError

    app = make_app(settings={"sendit.viewer.cache_mb": "64", "sendit.viewer.cache_dir": "cache-here"})
    assert app.settings["sendit.viewer.cache_mb"] == 64
    assert app.registry["sendit_viewer.cache"].folder == Path(app.settings["here"]) / "cache-here"
    with pytest.raises(SettingsError, match="sendit.viewer.max_volume_mb"):
        make_app(settings={"sendit.viewer.max_volume_mb": "0"})


# -- the image page ----------------------------------------------------------------------


def header_rows(page) -> list:
    return [tr for tr in page.html.find(id="header").find("tbody").find_all("tr")]


def test_the_header_table_nests_sequences_and_names_private_creators(world):
    page = world.web.get(f"/images/{world.series['axial'][0]}")
    rows = {tr.get("id"): tr for tr in header_rows(page)}
    sequence = next(tr for tr in rows.values() if "AnatomicRegionSequence" in tr.text)
    assert "1 item" in sequence.find(class_="value").text and "sequence-row" in sequence["class"]
    item = rows[f"h{int(sequence['id'][1:]) + 1}"]
    assert item.text.strip() == "Item 1" and item["data-parents"] == sequence["id"]
    meaning = next(tr for tr in rows.values() if tr.find("span", title="AnatomicRegionSequence.CodeMeaning"))
    assert meaning["data-parents"].split() == [sequence["id"], item["id"]]
    assert "depth-2" in meaning.find(class_="keyword")["class"]  # below its item (depth-1)
    assert "depth-1" in item.find("td", colspan="3")["class"]
    assert meaning.find(class_="name").text == "Code Meaning"
    private = next(tr for tr in rows.values() if tr.find(class_="tag").text == "(0009,1002)")
    assert "Private · creator SENDIT_SYNTH" in private.text and "SYNTH PRIVATE" in private.text
    creator = next(tr for tr in rows.values() if tr.find(class_="tag").text == "(0009,0010)")
    assert "Private · reserves (0009,10xx)" in creator.text
    windows = next(tr for tr in rows.values() if tr.find("span", title="WindowCenter"))
    assert [v.text for v in windows.find(class_="value").find_all(["a", "span"], class_=["value-link", "value-text"])] == ["40", "400"]
    names = [tr.find(class_="tag").text for tr in rows.values() if "item-row" not in tr.get("class", [])]
    assert names.index("(0008,0016)") < names.index("(0008,2218)") < names.index("(0010,0010)")


def test_values_link_to_a_search_for_them_when_there_is_a_search_page(world):
    page = world.web.get(f"/images/{world.series['axial'][0]}")
    has_search = world.app.registry.getUtility(IRoutesMapper).get_route("search")
    link = page.html.find("span", title="PatientName").find_parent("tr").find("a", class_="value-link")
    if has_search is None:
        assert link is None
        pytest.skip("no search page in this app")
    assert link["href"] == "/search?q=PatientName%3D%22SYNTHETIC%5EPATIENT%22"
    nested = page.html.find("span", title="AnatomicRegionSequence.CodeValue").find_parent("tr")
    assert "q=AnatomicRegionSequence.CodeValue%3D%22T-D3000%22" in nested.find("a", class_="value-link")["href"]


class SearchRoute:
    """A stand-in search page, for apps built without the search plugin."""

    @hookimpl
    def sendit_pyramid_configure(self, config):
        config.add_route("search", "/search")
        config.add_view(lambda request: {"q": request.GET.get("q")}, route_name="search", renderer="json")


def test_search_links_quote_values_and_vanish_without_a_search_page(tmp_path, _sqlite_template):
    builtins = tuple(p for p in DEFAULT_PLUGINS if p != "sendit_search")
    path = tmp_path / "odd.dcm"
    ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    ds.PatientName = 'O"BRIEN\\JR*'  # a quote, a backslash (two values) and a wildcard
    ds.ImageComments = "x" * 400
    ds.save_as(path)
    with_search = build_app(tmp_path / "a", _sqlite_template, builtins=builtins, plugins=[SearchRoute()])
    without = build_app(tmp_path / "b", _sqlite_template, builtins=builtins)
    try:
        for app in (with_search, without):
            (image_id,) = series_ids(app, import_batch(app, [path], "odd"))
            page = client(app).get(f"/images/{image_id}")
            row = page.html.find("span", title="PatientName").find_parent("tr")
            links = row.find_all("a", class_="value-link")
            comments = page.html.find("span", title="ImageComments").find_parent("tr")
            assert comments.find("details", class_="fold").find("summary").text.startswith("x" * 100)
            if app is without:
                assert links == [] and [s.text for s in row.find_all(class_="value-text")] == ['O"BRIEN', "JR*"]
                continue
            assert [a.text for a in links] == ['O"BRIEN', "JR*"]
            target = client(app).get(links[1]["href"]).json["q"]
            assert target == 'PatientName="JR*"'  # quoted: the * is literal
            from sendit_core.query import quote_value

            assert client(app).get(links[0]["href"]).json["q"] == "PatientName=" + quote_value('O"BRIEN')
    finally:
        with_search.close()
        without.close()


def test_the_filter_keeps_matching_rows_and_their_sequences(world):
    image_id = world.series["axial"][0]
    page = world.web.get(f"/images/{image_id}", params={"filter": "code meaning"})
    shown = [tr for tr in header_rows(page) if not tr.has_attr("hidden")]
    assert [tr.find(class_="tag").text for tr in shown if "item-row" not in tr.get("class", [])] == [
        "(0008,1032)", "(0008,0104)", "(0008,2218)", "(0008,0104)"]
    assert page.html.find(id="header-count").text.strip().startswith("2 of ")
    assert page.html.find(id="header-filter")["value"] == "code meaning"
    assert len(header_rows(page)) > 60  # every row is there for the script, hidden or not
    none = world.web.get(f"/images/{image_id}", params={"filter": "no such thing"})
    assert not none.html.find(id="header-none").has_attr("hidden")
    assert all(tr.has_attr("hidden") for tr in header_rows(none))


def test_previous_and_next_image_of_the_series_and_the_batch_link(world):
    ids = world.series["coronal"]
    first, middle, last = (world.web.get(f"/images/{i}") for i in (ids[0], ids[5], ids[-1]))
    assert first.html.find(id="previous-image") is None and first.html.find(id="next-image")["href"] == f"/images/{ids[1]}"
    assert middle.html.find(id="previous-image")["href"] == f"/images/{ids[4]}"
    assert middle.html.find(id="next-image")["href"] == f"/images/{ids[6]}"
    assert middle.html.find(id="series-position").text == f"Image 6 of {len(ids)} in this series"
    assert last.html.find(id="next-image") is None
    with world.app.session() as db:
        batch = db.get(Image, ids[0]).batch_id
    assert middle.html.find(id="batch-link")["href"] == f"/batches/{batch}"
    viewer = middle.html.find(id="viewer")
    assert viewer["data-info-url"] == f"/viewer/images/{ids[5]}/volume.json"
    assert "20 images in this series" in viewer.text


def test_the_image_page_works_on_every_database(make_app, tmp_path):
    app = make_app()
    paths = write_series(tmp_path / "three", SeriesSpec(slices=3, rows=16, columns=16))
    ids = series_ids(app, import_batch(app, paths, "three"))
    web = client(app)
    page = web.get(f"/images/{ids[1]}")
    assert page.html.find(id="series-position").text == "Image 2 of 3 in this series"
    assert page.html.find(id="previous-image")["href"] == f"/images/{ids[0]}"
    info = web.get(f"/viewer/images/{ids[1]}/volume.json").json
    assert info["shape"] == [3, 16, 16] and info["current"] == 1 and info["image_ids"] == ids


def test_hook_sendit_image_panels_can_join_the_viewer(make_app, tmp_path):
    class Extra:
        @hookimpl
        def sendit_image_panels(self, request, image):
            from markupsafe import Markup

            return [Panel("extra", Markup("<p>Another view</p>"), title="Extra", order=5)]

    app = make_app(plugins=[Extra()])
    (image_id,) = series_ids(app, import_batch(app, [TEST_FILES / "CT_small.dcm"], "one"))
    page = client(app).get(f"/images/{image_id}")
    titles = [h2.text for h2 in page.html.select("section.panel h2")]
    assert titles == ["Extra", "Viewer"]
    disabled = make_app(settings={"sendit.plugins.disabled": "sendit_viewer"})
    (other,) = series_ids(disabled, import_batch(disabled, [TEST_FILES / "CT_small.dcm"], "one"))
    page = client(disabled).get(f"/images/{other}")
    assert page.html.find(id="viewer") is None and page.html.find(id="header") is not None
