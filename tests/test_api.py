"""The REST API (sendit_api) through WebTest, on files really imported.

One app per database backend is built for the whole module (read-only tests):
pydicom's CT_small, MR_small and rtplan (nested sequences) plus a truncated
file and a text file in batch "mixed", deid-data's dicom-cookies in batch
"cookies", and five plain batch rows for paging. Tests that change data
(uploads, deletes, new imports) build their own app.
"""
from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import deid_data
import pydicom
import pydicom.data
import pytest
from sqlalchemy import func, select
from webtest import TestApp

from sendit_core.app import create_app, load_config
from sendit_core.models import Batch, BatchStatus, HeaderValue, Image
from sendit_core.pipeline import Ingestor, import_now, iter_files, submit
from sendit_core.plugins import get_plugin_manager
from sendit_core.settings import SettingsError
from sendit_core.testing import PASSWORD, SECRET, SenditApp, _truncate_postgresql, login

COOKIES = Path(deid_data.__file__).parent / "data" / "dicom-cookies"
CT = Path(pydicom.data.get_testdata_file("CT_small.dcm"))
MR = Path(pydicom.data.get_testdata_file("MR_small.dcm"))
RTPLAN = Path(pydicom.data.get_testdata_file("rtplan.dcm"))
TRUNCATED = Path(pydicom.data.get_testdata_file("MR_truncated.dcm"))
BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get("SENDIT_TEST_DATABASE_URL") else [])


def basic(password=PASSWORD, user="api"):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


AUTH = basic()


def build_app(folder: Path, url: str, **overrides) -> SenditApp:
    raw = {
        "sqlalchemy.url": url, "sendit.var_dir": str(folder / "var"),
        "sendit.data_dir": str(folder / "data"), "sendit.storage_dir": str(folder / "storage"),
        "sendit.lockdown.password": PASSWORD, "sendit.session.secret": SECRET,
        "sendit.db.auto_create": "false", "sendit.worker": "external", "here": str(folder),
        **overrides,
    }
    pm = get_plugin_manager(load_entrypoints=False)
    settings, pm = load_config(raw, here=str(folder), pm=pm)
    wsgi = create_app(settings, pm)
    return SenditApp(wsgi, wsgi.registry.settings, pm)


def import_batch(app, paths, name, **kw) -> int:
    factory = app.registry["dbsession_factory"]
    submission = submit(factory, app.settings, iter_files(paths), batch_name=name, publish=False, **kw)
    import_now(Ingestor(app.settings, app.pm, factory), submission)
    return submission.batch_id


@pytest.fixture(scope="module", params=BACKENDS)
def world(request, tmp_path_factory):
    """The module's app and what it holds: ``world.app``, ``world.web`` (Basic auth), ids."""
    folder = tmp_path_factory.mktemp("api")
    if request.param == "sqlite":
        path = folder / "sendit.sqlite"
        shutil.copyfile(request.getfixturevalue("_sqlite_template"), path)
        url = f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("_postgresql_database")
        _truncate_postgresql(url)
    app = build_app(folder, url, **{"sendit.api.page_size": "4", "sendit.api.max_page_size": "50"})
    mixed = folder / "in" / "mixed"
    mixed.mkdir(parents=True)
    for source in (CT, MR, RTPLAN, TRUNCATED):
        shutil.copy(source, mixed)
    (mixed / "notes.txt").write_text("not an image")

    class World:
        pass

    w = World()
    w.app = app
    w.mixed = import_batch(app, [mixed], "mixed")
    w.cookies = import_batch(app, [COOKIES], "cookies", source="watcher")
    with app.session() as db:
        rows = [Batch(name=f"plain-{n}", status=status, source="cli")
                for n, status in enumerate([BatchStatus.QUEUED, BatchStatus.EMPTY, BatchStatus.EMPTY,
                                            BatchStatus.ERROR, BatchStatus.PROCESSING])]
        db.add_all(rows)
        db.commit()
        w.plain = [b.id for b in rows]
        w.images = {name: db.scalar(select(Image.id).where(Image.original_name.like(f"%{name}")))
                    for name in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm")}
    w.web = TestApp(app.wsgi, extra_environ={"HTTP_HOST": "sendit.test"})
    yield w
    app.close()


def get(world, url, status=200, **kw):
    return world.web.get(url, headers={**AUTH, **kw.pop("headers", {})}, status=status, **kw)


def assert_error(response, status, name=None):
    assert response.status_int == status
    assert response.content_type == "application/json"
    body = response.json
    assert body["status"] == status and body["message"]
    if name:
        assert [e["name"] for e in body["errors"]] == [name], body
    return body


# -- authentication -----------------------------------------------------------------------

GET_PATHS = ["/api/batches", "/api/batches/{b}", "/api/batches/{b}/images", "/api/batches/{b}/errors",
             "/api/images", "/api/images/{i}", "/api/images/{i}/headers", "/api/images/{i}/file",
             "/api/headers", "/api/openapi.json"]


def paths(world):
    return [p.format(b=world.mixed, i=world.images["CT_small.dcm"]) for p in GET_PATHS]


def test_without_credentials_every_call_is_a_json_401(world):
    anon = TestApp(world.app.wsgi)
    for path in paths(world):
        for method in ("GET", "POST", "DELETE", "PUT"):
            response = anon.request(path, method=method, expect_errors=True)
            body = assert_error(response, 401)
            assert body["error"] == "Unauthorized", (method, path)
            assert response.headers["WWW-Authenticate"] == 'Basic realm="sendit"'


def test_http_basic_with_the_lockdown_password_opens_every_resource(world):
    for path in paths(world):
        response = get(world, path)
        assert response.content_type in ("application/json", "application/dicom"), path
    anon = TestApp(world.app.wsgi, extra_environ={"REMOTE_ADDR": "10.9.9.9"})
    assert_error(anon.get("/api/batches", headers=basic("not-it"), expect_errors=True), 401)


def test_a_logged_in_browser_session_works_too(world):
    browser = TestApp(world.app.wsgi)
    assert login(browser).status_int == 303
    assert browser.get("/api/batches").json["count"] == 7
    page = browser.get("/api")
    assert 'id="swagger-ui"' in page.text and "swagger-ui-bundle.js" in page.text
    browser.get(page.html.find("script", src=lambda s: s and "swagger-ui-bundle" in s)["src"])


def test_the_swagger_page_sends_strangers_to_the_login(world):
    anon = TestApp(world.app.wsgi)
    assert "/login?next=%2Fapi" in anon.get("/api", status=303).location
    assert_error(anon.get("/api/", expect_errors=True), 401)
    web = TestApp(world.app.wsgi)
    login(web)
    assert web.get("/api/", status=303).location.endswith("/api")


# -- batches ---------------------------------------------------------------------------------


def test_batches_list_with_counts_status_and_links(world):
    body = get(world, "/api/batches?page_size=10").json
    assert body["count"] == 7 and body["count_exact"] is True
    assert body["next"] is None and body["previous"] is None
    mixed, cookies = body["results"][:2]
    assert (mixed["id"], mixed["name"], mixed["status"], mixed["source"]) == (world.mixed, "mixed", "DONE", "cli")
    assert (mixed["image_count"], mixed["error_count"], mixed["pending_count"]) == (3, 2, 0)
    assert (cookies["name"], cookies["image_count"], cookies["source"]) == ("cookies", 7, "watcher")
    assert mixed["links"] == {
        "self": f"http://sendit.test/api/batches/{world.mixed}",
        "images": f"http://sendit.test/api/batches/{world.mixed}/images",
        "errors": f"http://sendit.test/api/batches/{world.mixed}/errors",
        "html": f"http://sendit.test/batches/{world.mixed}",
    }
    assert mixed["created_at"].endswith("+00:00")


def test_batch_filters(world):
    def names(query):
        body = get(world, "/api/batches?page_size=50&" + query).json
        assert body["count"] == len(body["results"])
        return [b["name"] for b in body["results"]]

    assert names("status=EMPTY") == ["plain-1", "plain-2"]
    assert names("status=done,error") == ["mixed", "cookies", "plain-3"]
    assert names("status=QUEUED&status=PROCESSING") == ["plain-0", "plain-4"]
    assert names("name=COOK") == ["cookies"]
    assert names("name=plain-%25") == []  # % is literal, not a wildcard
    assert names("source=watcher") == ["cookies"]
    assert names("source=watcher&status=EMPTY") == []
    body = assert_error(get(world, "/api/batches?status=DONE,LOST", status=400), 400, "status")
    assert "'LOST' is not one of" in body["message"]


def test_pagination_first_middle_last_and_beyond(world):
    first = get(world, "/api/batches?page_size=3&status=DONE,EMPTY,ERROR,QUEUED,PROCESSING").json
    assert first["count"] == 7 and first["page"] == 1 and first["page_size"] == 3
    assert first["previous"] is None
    assert first["next"] == ("http://sendit.test/api/batches?page_size=3&"
                             "status=DONE%2CEMPTY%2CERROR%2CQUEUED%2CPROCESSING&page=2")
    middle = world.web.get(first["next"], headers=AUTH).json
    assert middle["page"] == 2 and middle["previous"].endswith("status=DONE%2CEMPTY%2CERROR%2CQUEUED%2CPROCESSING")
    last = world.web.get(middle["next"], headers=AUTH).json
    assert last["next"] is None and len(last["results"]) == 1
    seen = [b["id"] for page in (first, middle, last) for b in page["results"]]
    assert seen == sorted(seen) and len(set(seen)) == 7
    beyond = assert_error(get(world, "/api/batches?page_size=3&page=4", status=404), 404, "page")
    assert "the last page is 3" in beyond["message"]
    assert_error(get(world, "/api/images?batch=999&page=2", status=404), 404, "page")
    assert get(world, "/api/images?batch=999").json == {
        "count": 0, "count_exact": True, "page": 1, "page_size": 4, "next": None, "previous": None,
        "results": []}


def test_page_size_default_and_maximum_come_from_the_ini(world):
    body = get(world, "/api/batches").json
    assert body["page_size"] == 4 and len(body["results"]) == 4
    assert body["next"] == "http://sendit.test/api/batches?page=2"
    assert len(get(world, "/api/batches?page_size=50").json["results"]) == 7
    error = assert_error(get(world, "/api/batches?page_size=51", status=400), 400, "page_size")
    assert "51 is more than the maximum 50 (sendit.api.max_page_size)" in error["message"]


@pytest.mark.parametrize("query, name, reason", [
    ("page=0", "page", "0 is less than minimum value 1"),
    ("page=-3", "page", "less than minimum"),
    ("page=abc", "page", '"abc" is not a number'),
    ("page=1.5", "page", "is not a number"),
    ("page=99999999999", "page", "greater than maximum"),
    ("page=1&page=2", "page", "given more than once"),
    ("page_size=0", "page_size", "less than minimum"),
    ("page_size=x", "page_size", "is not a number"),
])
def test_bad_paging_parameters_are_400s_naming_them(world, query, name, reason):
    for base in ("/api/batches", "/api/images", "/api/headers", f"/api/batches/{world.mixed}/errors"):
        body = assert_error(get(world, f"{base}?{query}", status=400), 400, name)
        assert reason in body["message"], body


def test_several_problems_are_all_named(world):
    body = assert_error(get(world, "/api/images?page=0&page_size=x&batch=y", status=400), 400)
    assert sorted(e["name"] for e in body["errors"]) == ["batch", "page", "page_size"]


def test_batch_detail_and_its_errors(world):
    batch = get(world, f"/api/batches/{world.mixed}").json
    assert batch["name"] == "mixed" and batch["status"] == "DONE" and batch["error_count"] == 2
    errors = get(world, f"/api/batches/{world.mixed}/errors").json
    assert errors["count"] == 2
    assert sorted((e["path"], e["step"]) for e in errors["results"]) == [
        ("mixed/MR_truncated.dcm", "parse"), ("mixed/notes.txt", "parse")]
    assert "truncated" in errors["results"][0]["message"]
    assert errors["results"][0]["links"]["batch"].endswith(f"/api/batches/{world.mixed}")
    assert get(world, f"/api/batches/{world.cookies}/errors").json["count"] == 0


@pytest.mark.parametrize("path", ["/api/batches/{}", "/api/batches/{}/images", "/api/batches/{}/errors",
                                  "/api/images/{}", "/api/images/{}/headers", "/api/images/{}/file"])
def test_unknown_and_malformed_ids(world, path):
    body = assert_error(get(world, path.format(424242), status=404), 404)
    assert "424242" in body["message"]
    for bad, reason in (("abc", "is not a number"), ("0", "less than minimum"),
                        ("2147483648", "greater than maximum value 2147483647"),
                        ("99999999999999999999", "greater than maximum")):
        body = assert_error(get(world, path.format(bad), status=400), 400, "id")
        assert reason in body["message"]


def test_batch_images(world):
    body = get(world, f"/api/batches/{world.cookies}/images?page_size=5").json
    assert body["count"] == 7 and len(body["results"]) == 5 and body["next"]
    assert {i["batch"] for i in body["results"]} == {world.cookies}
    mr = get(world, f"/api/batches/{world.mixed}/images?modality=MR").json
    assert [i["id"] for i in mr["results"]] == [world.images["MR_small.dcm"]]


# -- images ------------------------------------------------------------------------------------


def test_images_list_and_summary(world):
    body = get(world, "/api/images?page_size=50").json
    assert body["count"] == 10 and len(body["results"]) == 10
    ct = next(i for i in body["results"] if i["id"] == world.images["CT_small.dcm"])
    ds = pydicom.dcmread(CT, stop_before_pixels=True)
    assert ct["sop_instance_uid"] == ds.SOPInstanceUID
    assert ct["study_instance_uid"] == ds.StudyInstanceUID
    assert ct["series_instance_uid"] == ds.SeriesInstanceUID
    assert ct["sop_class_uid"] == ds.SOPClassUID
    assert (ct["modality"], ct["instance_number"], ct["batch"]) == ("CT", 1, world.mixed)
    assert ct["size"] == CT.stat().st_size
    assert ct["links"]["file"] == f"http://sendit.test/api/images/{ct['id']}/file"
    assert ct["links"]["batch"] == f"http://sendit.test/api/batches/{world.mixed}"
    assert get(world, f"/api/images/{ct['id']}").json == ct


def test_image_filters(world):
    def ids(query):
        body = get(world, "/api/images?page_size=50&" + query).json
        assert body["count"] == len(body["results"]), query
        return [i["id"] for i in body["results"]]

    ct, mr, plan = (world.images[n] for n in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm"))
    ds = pydicom.dcmread(MR, stop_before_pixels=True)
    assert ids(f"batch={world.mixed}") == sorted([ct, mr, plan])
    assert len(ids(f"batch={world.cookies}")) == 7
    assert ids("modality=MR") == [mr]
    assert ids("modality=RTPLAN&batch=" + str(world.mixed)) == [plan]
    assert ids(f"study_instance_uid={ds.StudyInstanceUID}") == [mr]
    assert ids(f"series_instance_uid={ds.SeriesInstanceUID}") == [mr]
    assert ids(f"sop_instance_uid={ds.SOPInstanceUID}") == [mr]
    assert ids("modality=MR&batch=" + str(world.cookies)) == []
    assert ids("sop_instance_uid=1.2.3") == []


def test_the_search_query_filters_images(world):
    def ids(query, **params):
        body = world.web.get("/api/images", {"q": query, "page_size": 50, **params}, headers=AUTH).json
        assert body["count"] == len(body["results"]), query
        return [i["id"] for i in body["results"]]

    ct, mr, plan = (world.images[n] for n in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm"))
    assert ids("Modality=MR") == [mr]
    assert ids("PatientID=1CT1") == [ct]
    assert ids("(0008,0060)=RT*") == [plan]
    assert ids("BeamSequence.BeamName=\"Field 1\"") == [plan]
    assert ids("300A00B0.300A00C2=Field*") == [plan]
    assert ids("Modality=CT OR Modality=MR") == sorted([ct, mr])
    assert ids("Modality=MR", batch=world.cookies) == []
    assert ids("   ") == ids("")  # an empty query matches every image
    assert len(ids("PatientID=cookie-*", batch=world.cookies)) == 7
    assert ids("PatientID=cookie-*", batch=world.mixed) == []


@pytest.mark.parametrize("query, position", [("Modality=", 9), ("NoSuchField=1", 0), ("(Modality=CT", 0)])
def test_a_bad_search_query_is_a_400_pointing_at_the_problem(world, query, position):
    response = world.web.get("/api/images", {"q": query}, headers=AUTH, status=400)
    body = assert_error(response, 400, "q")
    assert body["errors"][0]["position"] == position
    assert body["message"].startswith("q: ")


def test_text_parameters_refuse_nul_and_overlong_values(world):
    assert_error(get(world, "/api/images?modality=C%00T", status=400), 400, "modality")
    assert_error(get(world, "/api/images?modality=" + "X" * 17, status=400), 400, "modality")
    assert_error(get(world, "/api/batches?name=%00", status=400), 400, "name")


def test_undecodable_and_pathological_queries_are_400s(world):
    from webob import Request

    for url in ("/api/images?q=%FF", "/api/batches?name=%C3%28", "/api/headers?field=%FE"):
        response = Request.blank(url, headers=AUTH).get_response(world.app.wsgi)
        assert response.status_int == 400 and response.content_type == "application/json", url
        assert "not valid UTF-8" in response.json["message"]
    body = assert_error(world.web.get("/api/images", {"q": "(" * 600 + "Modality=CT" + ")" * 600},
                                      headers=AUTH, status=400), 400, "q")
    assert "too deeply" in body["message"]


def test_image_headers_are_nested_like_the_file(world):
    plan = world.images["rtplan.dcm"]
    body = get(world, f"/api/images/{plan}/headers").json
    ds = pydicom.dcmread(RTPLAN)
    top = {e["keyword"]: e for e in body["elements"]}
    assert body["element_count"] == len(body["elements"]) == len(top)
    assert [e["tag"] for e in body["elements"]] == sorted(e["tag"] for e in body["elements"])
    assert top["PatientID"]["values"] == [ds.PatientID]
    assert top["AccessionNumber"]["values"] == []  # empty element
    beams = top["BeamSequence"]
    assert beams["vr"] == "SQ" and "values" not in beams
    assert len(beams["items"]) == len(ds.BeamSequence)
    beam = {e["keyword"]: e for e in beams["items"][0]}
    assert beam["BeamName"]["values"] == [ds.BeamSequence[0].BeamName]
    assert beam["BeamName"]["keyword_path"] == "BeamSequence.BeamName"
    assert beam["BeamName"]["tag_path"] == "300A00B0.300A00C2"
    points = beam["ControlPointSequence"]["items"]
    assert len(points) == len(ds.BeamSequence[0].ControlPointSequence)
    devices = {e["keyword"]: e for e in points[0]}["BeamLimitingDevicePositionSequence"]["items"]
    jaws = {e["keyword"]: e for e in devices[0]}["LeafJawPositions"]
    expected = ds.BeamSequence[0].ControlPointSequence[0].BeamLimitingDevicePositionSequence[0].LeafJawPositions
    assert [float(v) for v in jaws["values"]] == [float(v) for v in expected]  # multi-valued, in order
    assert jaws["keyword_path"] == ("BeamSequence.ControlPointSequence."
                                    "BeamLimitingDevicePositionSequence.LeafJawPositions")


def test_private_elements_keep_their_tag_and_creator(world):
    body = get(world, f"/api/images/{world.images['CT_small.dcm']}/headers").json
    private = [e for e in body["elements"] if int(e["tag"][:4], 16) % 2 == 1]
    assert private, "CT_small.dcm has private elements"
    element = next(e for e in private if e["tag"] == "00091001")
    assert element["keyword"] == "(0009,1001)" and element["private_creator"] == "GEMS_IDEN_01"
    assert "7FE00010" not in {e["tag"] for e in body["elements"]}  # pixel data is never indexed


def test_the_file_is_the_stored_dicom_streamed(world):
    ct = world.images["CT_small.dcm"]
    response = get(world, f"/api/images/{ct}/file")
    assert response.content_type == "application/dicom"
    assert response.body == CT.read_bytes()
    assert response.headers["Content-Length"] == str(CT.stat().st_size)
    assert response.headers["Content-Disposition"].startswith('attachment; filename="1.3.6.1.4.1.5962')
    assert pydicom.dcmread(__import__("io").BytesIO(response.body)).Modality == "CT"
    partial = get(world, f"/api/images/{ct}/file", status=206, headers={"Range": "bytes=128-131"})
    assert partial.body == b"DICM"
    body = assert_error(get(world, f"/api/images/{ct}/file", status=416, headers={"Range": "bytes=999999-"}), 416)
    assert "outside the file" in body["message"]
    assert world.web.head(f"/api/images/{ct}/file", headers=AUTH).headers["Content-Length"] == str(
        CT.stat().st_size)
    assert get(world, f"/api/images/{ct}/file", status=304,
               headers={"If-None-Match": response.headers["ETag"]}).body == b""


def test_a_stored_file_missing_from_disk_is_a_404(world, tmp_path):
    mr = world.images["MR_small.dcm"]
    with world.app.session() as db:
        stored = Path(world.app.settings["sendit.storage_dir"]) / db.get(Image, mr).stored_path
    moved = tmp_path / "moved.dcm"
    shutil.move(stored, moved)
    try:
        body = assert_error(get(world, f"/api/images/{mr}/file", status=404), 404)
        assert "missing from the storage folder" in body["message"]
    finally:
        shutil.move(moved, stored)


def test_conditional_requests(world):
    for path in (f"/api/batches/{world.mixed}", f"/api/images/{world.images['MR_small.dcm']}",
                 f"/api/images/{world.images['MR_small.dcm']}/headers", "/api/images?modality=MR",
                 "/api/batches"):
        first = get(world, path)
        assert first.headers["ETag"], path
        get(world, path, status=304, headers={"If-None-Match": first.headers["ETag"]})
    batch = get(world, f"/api/batches/{world.mixed}")
    get(world, f"/api/batches/{world.mixed}", status=304,
        headers={"If-Modified-Since": batch.headers["Last-Modified"]})


# -- header values ---------------------------------------------------------------------------------


def test_header_values_by_field_in_every_form(world):
    def values(**params):
        body = world.web.get("/api/headers", {"page_size": 50, **params}, headers=AUTH).json
        assert body["count"] == len(body["results"]) and body["count_exact"], params
        return sorted((r["image"], r["value"]) for r in body["results"])

    expected = sorted((world.images[n], pydicom.dcmread(p).PatientID)
                      for n, p in (("CT_small.dcm", CT), ("MR_small.dcm", MR), ("rtplan.dcm", RTPLAN)))
    mixed = values(field="PatientID", batch=world.mixed)
    assert mixed == expected
    assert values(field="00100020", batch=world.mixed) == expected
    assert values(field="(0010,0020)", batch=world.mixed) == expected
    assert values(field="(0010,0020)", batch=world.mixed, value=expected[0][1]) == [expected[0]]
    assert values(field="PatientID", value="1CT*", batch=world.mixed) == [
        (world.images["CT_small.dcm"], "1CT1")]
    assert values(field="PatientID", value="?CT?") == [(world.images["CT_small.dcm"], "1CT1")]
    assert values(field="PatientID", value="[1]CT1") == []  # brackets are literal
    assert len(values(field="PatientID")) == 10
    assert values(field="NoSuchKeyword") == []
    assert values(field="BeamSequence.BeamName") == [(world.images["rtplan.dcm"], "Field 1")]
    numbers = world.web.get("/api/headers", {"field": "Rows", "value": "128"}, headers=AUTH).json
    assert numbers["results"] and all(r["number"] == 128 for r in numbers["results"])


def test_header_values_of_one_image(world):
    ct = world.images["CT_small.dcm"]
    body = world.web.get("/api/headers", {"image": ct, "page_size": 50}, headers=AUTH).json
    with world.app.session() as db:
        stored = db.scalar(select(func.count()).select_from(HeaderValue).where(HeaderValue.image_id == ct))
    assert body["count"] == stored and body["count_exact"]
    assert len(body["results"]) == 50 and body["next"]
    first = body["results"][0]
    assert first["image"] == ct and first["batch"] == world.mixed
    assert first["links"]["headers"].endswith(f"/api/images/{ct}/headers")


def test_a_value_alone_is_refused(world):
    body = assert_error(get(world, "/api/headers?value=CT", status=400), 400, "value")
    assert "give `field` too" in body["message"]


def test_unfiltered_header_values_are_estimated_over_many_images(world, monkeypatch):
    from sendit_api import resources

    exact = get(world, "/api/headers?page_size=1").json
    assert exact["count_exact"]
    monkeypatch.setattr(resources, "EXACT_HEADER_COUNT_IMAGES", 5)
    estimated = get(world, "/api/headers?page_size=1").json
    assert estimated["count_exact"] is False
    assert 0.3 * exact["count"] < estimated["count"] < 3 * exact["count"]
    assert estimated["next"] and estimated["results"] == exact["results"]


# -- errors are JSON ---------------------------------------------------------------------------------


def test_wrong_methods_and_unknown_paths_are_json(world):
    response = world.web.request("/api/images", method="DELETE", headers=AUTH, expect_errors=True)
    body = assert_error(response, 405)
    assert "DELETE is not allowed on /api/images" in body["message"] and "GET" in body["message"]
    assert "GET" in response.headers["Allow"]
    assert_error(world.web.put(f"/api/batches/{world.mixed}", headers=AUTH, expect_errors=True), 405)
    body = assert_error(get(world, "/api/nothing/here", status=404), 404)
    assert "/api/nothing/here" in body["message"]


def test_server_errors_are_json_too(world, monkeypatch):
    from sendit_api import represent

    def broken(self, row):
        raise RuntimeError("boom")

    monkeypatch.setattr(represent.Links, "batch", broken)
    body = assert_error(get(world, "/api/batches", status=500), 500)
    assert "boom" not in body["message"]


# -- settings --------------------------------------------------------------------------------------


def test_a_default_page_size_above_the_maximum_stops_start_up(tmp_path):
    with pytest.raises(SettingsError, match="sendit.api.page_size = 200 is larger than sendit.api.max_page_size"):
        build_app(tmp_path, f"sqlite:///{tmp_path}/x.sqlite",
                  **{"sendit.api.page_size": "200", "sendit.api.max_page_size": "100"})
    with pytest.raises(SettingsError, match="sendit.api.max_page_size"):
        build_app(tmp_path, f"sqlite:///{tmp_path}/x.sqlite", **{"sendit.api.max_page_size": "0"})


def test_the_settings_page_lists_the_api_keys(world):
    web = TestApp(world.app.wsgi)
    login(web)
    page = web.get("/settings").text
    assert "sendit.api.page_size" in page and "sendit.api.max_page_size" in page
    nav = web.get("/").html.find("nav", attrs={"aria-label": "Main"})
    assert nav.find("a", string="API")["href"] == "/api"


def test_nesting_puts_each_element_in_its_item_whatever_the_row_order():
    from sendit_api.elements import Row, nest

    rows = [Row("00081115", "RefSeq", "SQ", None, "", 0, None, 12.0)]
    rows += [Row("00081115.0020000E", "RefSeq.SeriesInstanceUID", "UI", None, str(i), 0, f"1.{i}", None)
             for i in (11, 2, 10, 0)]
    rows += [Row("00081115.00081199", "RefSeq.Inner", "SQ", None, "2", 0, None, 1.0),
             Row("00081115.00081199.00081155", "RefSeq.Inner.ReferencedSOPInstanceUID", "UI", None, "2.0", 0,
                 "9.9", None),
             Row("00280030", "PixelSpacing", "DS", None, "", 1, "0.5", 0.5),
             Row("00280030", "PixelSpacing", "DS", None, "", 0, "0.25", 0.25),
             Row("00500010.00081155", "Orphan.ReferencedSOPInstanceUID", "UI", None, "1", 0, "7.7", None)]
    top = nest(reversed(rows))
    assert [e["tag"] for e in top] == ["00081115", "00280030", "00500010"]
    items = top[0]["items"]
    assert len(items) == 12 and items[1] == [] and items[3] == []
    assert [e["keyword"] for e in items[2]] == ["Inner", "SeriesInstanceUID"]  # tag order
    assert items[2][1]["values"] == ["1.2"]
    assert [item[0]["values"][0] for item in (items[0], items[10], items[11])] == ["1.0", "1.10", "1.11"]
    inner = {e["keyword"]: e for e in items[2]}["Inner"]
    assert inner["items"][0][0]["values"] == ["9.9"]
    assert top[1]["values"] == ["0.25", "0.5"]  # multi-valued, by position
    orphan = top[2]  # a sequence row that was never stored still holds its items
    assert orphan["vr"] == "SQ" and orphan["items"][1][0]["values"] == ["7.7"]


@pytest.mark.parametrize("params", [
    {"field": "PatientID", "value": "cookie-*"},
    {"field": "Rows", "value": "128"},
    {"field": "(0028,0010)", "value": "512"},
    {"field": "InstanceNumber", "value": "1"},
    {"field": "PatientID", "value": "1CT1"},
])
def test_common_and_rare_values_list_the_same_rows_whatever_the_plan(world, monkeypatch, params):
    """A value matching many rows is listed by walking the images, a rare one by
    sorting its index entries: the answer is the same."""
    from sendit_api import resources

    def listing(batch=None):
        query = {**params, "page_size": 50, **({"batch": batch} if batch else {})}
        body = world.web.get("/api/headers", query, headers=AUTH).json
        return body["count"], [(r["image"], r["tag_path"], r["item"], r["position"], r["value"])
                               for r in body["results"]]

    sorted_plan = [listing(), listing(world.cookies)]
    monkeypatch.setattr(resources, "SORTED_MATCHES", 0)
    get(world, "/api/images?page_size=1")  # (the cached counts stay valid: same data)
    assert [listing(), listing(world.cookies)] == sorted_plan
    count, rows = sorted_plan[0]
    assert count == len(rows) and all(r[4] == params["value"] or "*" in params["value"] for r in rows)
