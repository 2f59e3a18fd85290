"""The API calls that change data: uploads (through sendit_core.uploads) and batch
deletion, with HTTP Basic and with a browser session (CSRF); and counts that
follow the data as it changes."""
from __future__ import annotations

import base64
from io import BytesIO
from pathlib import Path

import deid_data
import pydicom.data
import pytest
from sqlalchemy import func, select
from webtest import TestApp

from sendit_core.models import Batch, HeaderValue, Image
from sendit_core.pipeline import Ingestor, import_now, iter_files, submit
from sendit_core.testing import PASSWORD, csrf_token, login

COOKIES = sorted((Path(deid_data.__file__).parent / "data" / "dicom-cookies").glob("*.dcm"))
CT = Path(pydicom.data.get_testdata_file("CT_small.dcm"))
MR = Path(pydicom.data.get_testdata_file("MR_small.dcm"))
AUTH = {"Authorization": "Basic " + base64.b64encode(f"client:{PASSWORD}".encode()).decode()}
BOUNDARY = "----sendit-api-test"


def multipart(parts) -> tuple[bytes, str]:
    """``(name, text)`` fields and ``(name, filename, bytes)`` files as multipart/form-data."""
    out = BytesIO()
    for part in parts:
        out.write(f"--{BOUNDARY}\r\n".encode())
        if len(part) == 2:
            out.write(f'Content-Disposition: form-data; name="{part[0]}"\r\n\r\n{part[1]}\r\n'.encode())
        else:
            name, filename, data = part
            out.write(f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                      f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    out.write(f"--{BOUNDARY}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={BOUNDARY}"


def upload(web, url, parts, headers=AUTH):
    body, ctype = multipart(parts)
    return web.request(url, method="POST", body=body, headers={"Content-Type": ctype, **headers},
                       expect_errors=True)


def files(*paths):
    return [("files", p.name, p.read_bytes()) for p in paths]


def run_jobs(app, job_ids):
    ingestor = Ingestor(app.settings, app.pm, app.registry["dbsession_factory"])
    for job_id in job_ids:
        ingestor.run_job(job_id)


def import_batch(app, paths, name) -> int:
    factory = app.registry["dbsession_factory"]
    submission = submit(factory, app.settings, iter_files(paths), batch_name=name, publish=False)
    import_now(Ingestor(app.settings, app.pm, factory), submission)
    return submission.batch_id


@pytest.fixture
def api(app):
    return TestApp(app.wsgi)


def test_upload_a_new_batch_then_more_files_into_it(app, api):
    response = upload(api, "/api/batches", [("name", "from a script"), *files(CT, MR)])
    assert response.status_int == 201, response.text
    body = response.json
    batch_id = body["batch"]["id"]
    assert response.location == f"http://localhost/api/batches/{batch_id}"
    assert body["created"] is True and body["jobs"]
    assert body["batch"]["name"] == "from a script" and body["batch"]["source"] == "upload"
    assert body["batch"]["status"] == "QUEUED" and body["batch"]["pending_count"] == 2
    assert body["files"] == [{"name": "CT_small.dcm", "size": CT.stat().st_size},
                             {"name": "MR_small.dcm", "size": MR.stat().st_size}]
    run_jobs(app, body["jobs"])
    batch = api.get(f"/api/batches/{batch_id}", headers=AUTH).json
    assert (batch["status"], batch["image_count"], batch["pending_count"]) == ("DONE", 2, 0)

    more = upload(api, f"/api/batches/{batch_id}/images", files(*COOKIES[:3]))
    assert more.status_int == 202, more.text
    assert more.json["created"] is False and more.json["batch"]["id"] == batch_id
    assert more.json["batch"]["pending_count"] == 3
    run_jobs(app, more.json["jobs"])
    images = api.get(f"/api/batches/{batch_id}/images", headers=AUTH).json
    assert images["count"] == 5
    uploaded = api.get(images["results"][0]["links"]["file"], headers=AUTH).body
    assert uploaded == CT.read_bytes()


def test_an_upload_without_a_name_gets_a_default_one(app, api):
    response = upload(api, "/api/batches", files(MR))
    assert response.status_int == 201
    assert response.json["batch"]["name"].startswith("upload-")


@pytest.mark.parametrize("headers, body, status, message", [
    ({"Content-Type": "application/json"}, b"{}", 415, "multipart/form-data"),
    ({"Content-Type": "multipart/form-data"}, b"x", 400, "boundary"),
    ({"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}, multipart([("name", "x")])[0], 400,
     "No files were selected"),
    ({"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}, b"--" + BOUNDARY.encode() + b"\r\nbroken",
     400, "upload"),
])
def test_bad_uploads_are_clear_json_errors(app, api, headers, body, status, message):
    response = api.request("/api/batches", method="POST", body=body, headers={**AUTH, **headers},
                           expect_errors=True)
    assert response.status_int == status and response.content_type == "application/json"
    assert message in response.json["message"], response.json
    with app.session() as db:
        assert db.scalar(select(func.count()).select_from(Batch)) == 0  # nothing was recorded


def test_an_oversize_upload_is_a_413(make_app):
    app = make_app(settings={"sendit.upload.max_file_mb": "1", "sendit.upload.max_request_mb": "2"})
    api = TestApp(app.wsgi)
    big = [("files", "big.dcm", b"\0" * (1024 * 1024 + 10))]
    response = upload(api, "/api/batches", big)
    assert response.status_int == 413 and "upload limit of 1 MB per file" in response.json["message"]
    huge = upload(api, "/api/batches", [("files", f"f{n}.dcm", b"\0" * 700_000) for n in range(4)])
    assert huge.status_int == 413 and "sendit.upload.max_request_mb" in huge.json["message"]
    with app.session() as db:
        assert db.scalar(select(func.count()).select_from(Batch)) == 0


def test_uploading_into_a_missing_or_malformed_batch(api):
    response = upload(api, "/api/batches/4242/images", files(CT))
    assert response.status_int == 404 and response.json["message"] == "There is no batch 4242."
    response = upload(api, "/api/batches/x/images", files(CT))
    assert response.status_int == 400 and response.json["errors"][0]["name"] == "id"


def test_a_browser_session_needs_the_csrf_token(app):
    web = TestApp(app.wsgi)
    login(web)
    refused = upload(web, "/api/batches", files(CT), headers={})
    assert refused.status_int == 400 and "CSRF" in refused.json["message"]
    accepted = upload(web, "/api/batches", files(CT), headers={"X-CSRF-Token": csrf_token(web)})
    assert accepted.status_int == 201, accepted.text
    batch_id = accepted.json["batch"]["id"]
    run_jobs(app, accepted.json["jobs"])
    web.delete(f"/api/batches/{batch_id}", status=400)  # no token: nothing happens
    assert web.get(f"/api/batches/{batch_id}").json["image_count"] == 1
    web.delete(f"/api/batches/{batch_id}", headers={"X-CSRF-Token": csrf_token(web)}, status=204)
    web.get(f"/api/batches/{batch_id}", status=404)


def test_delete_a_batch_with_everything_it_holds(app, api):
    kept = import_batch(app, [MR], "kept")
    gone = import_batch(app, [CT, *COOKIES[:2]], "gone")
    storage = Path(app.settings["sendit.storage_dir"])
    assert (storage / str(gone)).is_dir()
    response = api.delete(f"/api/batches/{gone}", headers=AUTH, status=204)
    assert response.body == b""
    assert api.get(f"/api/batches/{gone}", headers=AUTH, status=404).json["status"] == 404
    assert not (storage / str(gone)).exists()
    with app.session() as db:
        assert db.scalar(select(func.count()).select_from(Image).where(Image.batch_id == gone)) == 0
        assert db.scalar(select(func.count()).select_from(HeaderValue)) == db.scalar(
            select(func.count()).select_from(HeaderValue).join(Image).where(Image.batch_id == kept))
    assert api.get("/api/batches", headers=AUTH).json["count"] == 1
    assert api.get("/api/images", headers=AUTH).json["count"] == 1
    api.delete(f"/api/batches/{gone}", headers=AUTH, status=404)
    assert api.delete("/api/batches/nope", headers=AUTH, status=400).json["errors"][0]["name"] == "id"


def test_a_batch_being_imported_cannot_be_deleted(app, api):
    factory = app.registry["dbsession_factory"]
    submission = submit(factory, app.settings, iter_files([CT]), batch_name="busy", publish=False)
    body = api.delete(f"/api/batches/{submission.batch_id}", headers=AUTH, status=409).json
    assert body["error"] == "Conflict" and "still being imported" in body["message"]
    run_jobs(app, submission.job_ids)
    api.delete(f"/api/batches/{submission.batch_id}", headers=AUTH, status=204)


def test_counts_follow_the_data(app, api):
    """Cached counts are recounted when an import or a deletion changes the data."""
    first = import_batch(app, [CT], "one")
    assert api.get("/api/images?modality=CT", headers=AUTH).json["count"] == 1
    assert api.get("/api/headers?field=PatientID", headers=AUTH).json["count"] == 1
    before = api.get("/api/images?modality=CT", headers=AUTH)
    second = import_batch(app, [CT, MR], "two")
    after = api.get("/api/images?modality=CT", headers={**AUTH, "If-None-Match": before.headers["ETag"]})
    assert after.status_int == 200 and after.json["count"] == 2
    assert api.get("/api/headers?field=PatientID", headers=AUTH).json["count"] == 3
    assert api.get("/api/images", headers=AUTH).json["count"] == 3
    api.delete(f"/api/batches/{second}", headers=AUTH, status=204)
    assert api.get("/api/images?modality=CT", headers=AUTH).json["count"] == 1
    assert api.get("/api/images", headers=AUTH).json["count"] == 1
    assert api.get(f"/api/images?batch={first}&modality=CT", headers=AUTH).json["count"] == 1
    cache = app.registry["sendit_api.counts"]
    assert cache.hits + cache.misses > 0


def test_the_api_stands_alone_without_the_upload_and_dashboard_plugins(make_app):
    app = make_app(settings={"sendit.plugins.disabled": "sendit_upload sendit_dashboard",
                             "sendit.upload.max_file_mb": "1"})
    assert app.settings["sendit.upload.max_file_mb"] == 1  # still declared, converted and used
    api = TestApp(app.wsgi)
    response = upload(api, "/api/batches", files(CT))
    assert response.status_int == 201, response.text
    assert response.json["batch"]["links"]["html"] is None  # no batch page to link to
    run_jobs(app, response.json["jobs"])
    image = api.get("/api/images", headers=AUTH).json["results"][0]
    assert image["links"]["html"] is None and image["links"]["file"].endswith("/file")
    assert upload(api, "/api/batches", [("files", "big.dcm", b"\0" * (1024 * 1024 + 1))]).status_int == 413


def walk(api, url):
    ids, page = [], api.get(url, headers=AUTH).json
    while True:
        ids += [r["id"] for r in page["results"]]
        if not page["next"]:
            return ids, page["count"]
        page = api.get(page["next"], headers=AUTH).json


def test_pages_of_all_images_seek_by_id_while_ids_have_no_gap(app, api, monkeypatch):
    from sendit_api import resources

    seeks = []
    real = resources._dense_seek
    monkeypatch.setattr(resources, "_dense_seek", lambda *a: seeks.append(real(*a)) or seeks[-1])
    import_batch(app, [CT, MR], "a")
    middle = import_batch(app, COOKIES[:3], "b")
    import_batch(app, COOKIES[3:5], "c")
    with app.session() as db:
        every = list(db.scalars(select(Image.id).order_by(Image.id)))
    assert walk(api, "/api/images?page_size=2") == (every, 7)
    assert seeks and all(s is not None for s in seeks)  # dense ids: seeks through the key
    api.delete(f"/api/batches/{middle}", headers=AUTH, status=204)
    seeks.clear()
    with app.session() as db:
        left = list(db.scalars(select(Image.id).order_by(Image.id)))
    assert walk(api, "/api/images?page_size=2") == (left, 4)
    assert seeks and all(s is None for s in seeks)  # a gap: back to the offset
    api.get("/api/images?page_size=2&page=3", headers=AUTH, status=404)
