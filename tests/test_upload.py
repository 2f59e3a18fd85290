"""Uploads: sendit_core.uploads.receive_upload and the upload plugin's pages.

Real files (pydicom's test files, deid-data's dicom-cookies) go through WebTest
as the browser's plain form, as the page's script (JSON, X-CSRF-Token) and as
an API client (HTTP Basic, through a test plugin's /api/ route); raw WSGI calls
count how much of a body is read before a refusal; a live waitress server in
its own process takes a 1 GiB upload while its memory is watched.
"""
import base64
import http.client
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import timezone
from io import BytesIO
from pathlib import Path

import deid_data
import pydicom.data
import pytest
from sqlalchemy import select
from webob import Request
from webtest import TestApp

from sendit_core import hookimpl
from sendit_core.models import Batch, BatchStatus, FileOutcome, Image, IngestError, Job, JobFile
from sendit_core.pipeline import Ingestor
from sendit_core.settings import SettingsError
from sendit_core.testing import PASSWORD, SECRET, csrf_token, login, write_ini
from sendit_core.uploads import (
    CHUNK, FRESH_FOLDER_SECONDS, MAX_COMPONENT_BYTES, STALE_INCOMING_SECONDS, UploadError, receive_upload, safe_relpath, staging_root,
    sweep_staging,
)

COOKIES = sorted((Path(deid_data.__file__).parent / "data" / "dicom-cookies").glob("*.dcm"))
CT_SMALL = Path(pydicom.data.get_testdata_file("CT_small.dcm"))
MR_SMALL = Path(pydicom.data.get_testdata_file("MR_small.dcm"))
BOUNDARY = "----sendit-test-7d1f"
JSON = {"Accept": "application/json"}


# -- helpers ----------------------------------------------------------------------------


def multipart(parts, boundary=BOUNDARY) -> tuple[bytes, str]:
    """A multipart/form-data body: ``(name, text)`` fields and ``(name, filename, bytes)``
    files, the file name quoted as browsers do (only ``"``, CR and LF escaped)."""
    out = BytesIO()
    for part in parts:
        out.write(f"--{boundary}\r\n".encode())
        if len(part) == 2:
            name, value = part
            out.write(f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
            out.write(value.encode() + b"\r\n")
        else:
            name, filename, data = part
            quoted = filename.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
            out.write(f'Content-Disposition: form-data; name="{name}"; filename="{quoted}"\r\n'
                      f"Content-Type: application/octet-stream\r\n\r\n".encode("utf-8", "surrogatepass"))
            out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def files(*paths, folder=""):
    return [("files", f"{folder}{p.name}", p.read_bytes()) for p in paths]


def post(client, url, parts, *, headers=None):
    body, ctype = multipart(parts)
    return client.request(url, method="POST", body=body, headers={"Content-Type": ctype, **(headers or {})},
                          expect_errors=True)


def post_json(client, url, parts, token=None):
    return post(client, url, parts, headers={**JSON, "X-CSRF-Token": token or csrf_token(client)})


def run_import(app):
    """Process every queued job in this process, as a worker would."""
    factory = app.registry["dbsession_factory"]
    ingestor = Ingestor(app.settings, app.pm, factory)
    with factory() as db:
        job_ids = db.scalars(select(Job.id).where(Job.status == "QUEUED").order_by(Job.id)).all()
    for job_id in job_ids:
        ingestor.run_job(job_id)


def staged_files(app) -> list[Path]:
    root = staging_root(app.settings)
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def batches(app):
    with app.session() as db:
        return db.scalars(select(Batch).order_by(Batch.id)).all()


def stamp(batch) -> int:
    created = batch.created_at
    return int((created if created.tzinfo else created.replace(tzinfo=timezone.utc)).timestamp())


def basic(password=PASSWORD):
    return {"Authorization": "Basic " + base64.b64encode(f"api:{password}".encode()).decode()}


class ApiUpload:
    """A plugin with API routes on receive_upload, as the API plugin builds them."""

    @hookimpl
    def sendit_pyramid_configure(self, config):
        config.add_route("test_api_upload", "/api/test-upload")
        config.add_route("test_api_upload_into", "/api/test-upload/{id}")
        config.add_view(self.new, route_name="test_api_upload", request_method="POST",
                        require_csrf=False, renderer="json")
        config.add_view(self.into, route_name="test_api_upload_into", request_method="POST",
                        require_csrf=False, renderer="json")

    @staticmethod
    def answer(request, batch=None):
        try:
            result = receive_upload(request, batch)
        except UploadError as exc:
            request.response.status = exc.status
            return {"message": str(exc)}
        request.response.status = 201
        return {"batch": result.batch.id, "name": result.batch.name, "job_id": result.job_id,
                "files": result.files, "created": result.created}

    def new(self, request):
        return self.answer(request)

    def into(self, request):
        return self.answer(request, request.dbsession.get(Batch, int(request.matchdict["id"])))


@pytest.fixture
def api_app(make_app):
    return make_app(plugins=[ApiUpload()])


@pytest.fixture
def client(api_app):
    client = TestApp(api_app.wsgi)
    assert login(client).status_int == 303
    return client


# -- file names ---------------------------------------------------------------------------


@pytest.mark.parametrize("raw, expected", [
    ("CT_small.dcm", "CT_small.dcm"),
    ("study/series/1.dcm", "study/series/1.dcm"),
    ("../x.dcm", "x.dcm"),
    ("../../../../etc/passwd", "etc/passwd"),
    ("/etc/cron.d/evil", "etc/cron.d/evil"),
    ("a/../../b/./c.dcm", "b/c.dcm"), ("a/b/../c.dcm", "a/c.dcm"),
    ("..\\..\\windows\\x.dcm", "windows/x.dcm"),
    ("C:\\Users\\me\\scan.dcm", "Users/me/scan.dcm"),
    ("nul\x00byte.dcm", "nul_byte.dcm"),
    ("line\r\nbreak\t.dcm", "line__break_.dcm"),
    ("..", "unnamed"), ("", "unnamed"), ("///", "unnamed"), (None, "unnamed"),
    ("  spaced  /  name.dcm ", "spaced/name.dcm"),
    ("naïve/résumé.dcm", "naïve/résumé.dcm"),
])
def test_names_are_made_safe(raw, expected):
    assert safe_relpath(raw) == expected


def test_long_names_are_cut_but_stay_distinct_and_keep_their_extension():
    a, b = "x" * 999 + "a.dcm", "x" * 999 + "b.dcm"
    safe_a, safe_b = safe_relpath(a), safe_relpath(b)
    assert safe_a != safe_b
    assert safe_a.endswith(".dcm") and len(safe_a.encode()) <= MAX_COMPONENT_BYTES
    multibyte = safe_relpath("é" * 1000)
    assert len(multibyte.encode()) <= MAX_COMPONENT_BYTES and multibyte.startswith("é")
    deep = safe_relpath("/".join(["d"] * 100) + "/f.dcm")
    assert deep.count("/") == 31 and deep.endswith("d/f.dcm")
    long_folders = safe_relpath("/".join([f"{n}" + "x" * 300 for n in range(20)]) + "/f.dcm")
    assert len(long_folders.encode()) <= 1000 and long_folders.endswith("/f.dcm")
    assert long_folders.split("/")[0].startswith("16")  # the deepest folders are kept


# -- a new batch, then more files -------------------------------------------------------


def test_the_plain_form_uploads_real_files_into_a_new_batch(app, testapp):
    token = csrf_token(testapp)
    parts = [("csrf_token", token), ("name", "  MR study\x00 of today "),
             *files(CT_SMALL, MR_SMALL), *files(*COOKIES, folder="dicom-cookies/"),
             ("files", "notes/readme.txt", b"this is not DICOM")]
    response = post(testapp, "/upload", parts)
    assert response.status_int == 303, response.text
    (batch,) = batches(app)
    assert response.location.endswith(f"/batches/{batch.id}")
    assert (batch.name, batch.source, batch.status, batch.pending_count) == (
        "MR study of today", "upload", BatchStatus.QUEUED, 10)
    page = response.follow()
    assert "Uploaded 10 files" in page.text and "MR study of today" in page.text
    staged = staged_files(app)
    root = staging_root(app.settings)
    assert len(staged) == 10
    assert {p.relative_to(root).parts[0] for p in staged} == {f"{batch.id}-{stamp(batch)}"}

    run_import(app)
    (batch,) = batches(app)
    assert (batch.status, batch.image_count, batch.error_count, batch.pending_count) == (
        BatchStatus.DONE, 9, 1, 0)
    with app.session() as db:
        (error,) = db.scalars(select(IngestError)).all()
        names = set(db.scalars(select(Image.original_name)))
    assert error.path == "notes/readme.txt" and error.step == "parse"
    assert names >= {"CT_small.dcm", "MR_small.dcm", f"dicom-cookies/{COOKIES[0].name}"}
    # the imported copies are deleted; the file that failed stays until the batch goes
    (kept,) = staged_files(app)
    assert kept.name == "readme.txt" and kept.read_bytes() == b"this is not DICOM"
    page = testapp.get(f"/batches/{batch.id}")
    panel = page.html.find(id="panel-upload-kept")
    assert "1 uploaded file could not be imported" in panel.text and str(kept.parents[3]) in panel.text

    # deleting the batch lets the sweep remove what was kept
    testapp.post(f"/batches/{batch.id}/delete", {"csrf_token": csrf_token(testapp)}, status=303)
    factory = app.registry["dbsession_factory"]
    assert sweep_staging(app.settings, factory) == [], "a folder changed within the hour is left alone"
    removed = sweep_staging(app.settings, factory, now=time.time() + FRESH_FOLDER_SECONDS + 1)
    assert [p.name for p in removed] == [f"{batch.id}-{stamp(batch)}"]
    assert staged_files(app) == []


def test_the_script_adds_files_to_an_existing_batch_and_follows_the_import(app, testapp):
    first = post_json(testapp, "/upload", files(CT_SMALL))
    assert first.status_int == 201, first.text
    answer = first.json
    batch_id = answer["batch"]["id"]
    assert answer["created"] is True and answer["file_count"] == 1
    assert answer["batch"]["name"].startswith("upload-")
    assert answer["upload_url"].endswith(f"/batches/{batch_id}/upload")
    progress = testapp.get(answer["progress_url"]).json
    assert progress == {"id": batch_id, "name": answer["batch"]["name"], "status": "QUEUED", "images": 0,
                        "errors": 0, "pending": 1, "done": False,
                        "url": f"http://localhost/batches/{batch_id}"}
    run_import(app)
    assert testapp.get(answer["progress_url"]).json["done"] is True

    more = post_json(testapp, answer["upload_url"], files(*COOKIES) + files(CT_SMALL, folder="again/"))
    assert more.status_int == 201, more.text
    assert more.json["batch"]["id"] == batch_id and more.json["created"] is False
    assert testapp.get(answer["progress_url"]).json["done"] is False
    run_import(app)
    (batch,) = batches(app)
    assert (batch.status, batch.image_count, batch.error_count) == (BatchStatus.DONE, 8, 0)
    with app.session() as db:  # the same CT_small again is a duplicate, not an error
        outcomes = sorted(db.scalars(select(JobFile.outcome)))
    assert outcomes.count(FileOutcome.DUPLICATE) == 1
    assert staged_files(app) == []
    assert not any(staging_root(app.settings).glob(f"{batch_id}-*")), "empty folders pruned"


def test_api_clients_upload_with_http_basic_and_no_token(api_app):
    client = TestApp(api_app.wsgi)
    response = post(client, "/api/test-upload", [("name", "from a script"), *files(CT_SMALL, MR_SMALL)],
                    headers=basic())
    assert response.status_int == 201, response.text
    assert response.json["name"] == "from a script" and response.json["created"] is True
    assert response.json["files"] == [["CT_small.dcm", CT_SMALL.stat().st_size],
                                      ["MR_small.dcm", MR_SMALL.stat().st_size]]
    batch_id = response.json["batch"]
    more = post(client, f"/api/test-upload/{batch_id}", files(*COOKIES[:2]), headers=basic())
    assert more.status_int == 201 and more.json["batch"] == batch_id
    run_import(api_app)
    assert batches(api_app)[0].image_count == 4
    wrong = post(client, "/api/test-upload", files(CT_SMALL), headers=basic("wrong"))
    assert wrong.status_int == 401
    cross = post(client, "/api/test-upload", files(CT_SMALL), headers={**basic(), "Sec-Fetch-Site": "cross-site"})
    assert cross.status_int == 400 and "CSRF" in cross.json["message"]
    assert len(batches(api_app)) == 1


def test_the_batch_is_recorded_only_when_the_transaction_commits(make_app):
    """A view that fails after receive_upload leaves neither rows nor staged files."""

    class Failing(ApiUpload):
        def new(self, request):
            super().new(request)
            raise RuntimeError("the view broke after the upload")

    app = make_app(plugins=[Failing()])
    client = TestApp(app.wsgi)
    response = post(client, "/api/test-upload", files(CT_SMALL), headers=basic())
    assert response.status_int == 500 and "Something went wrong" in response.json["message"]
    assert batches(app) == [] and staged_files(app) == []


# -- names stay inside staging ---------------------------------------------------------


def test_path_tricks_never_leave_the_staging_folder(app, testapp, tmp_path):
    outside = tmp_path.parent / f"{tmp_path.name}-escaped.dcm"
    tricky = ["../escaped.dcm", f"../../../{outside.name}", str(outside), "/etc/cron.d/sendit",
              "..\\..\\win.dcm", "C:\\Windows\\x.dcm", "nul\x00name.dcm", "a/../../../b.dcm",
              "x" * 1000 + ".dcm", "dup.dcm", "dup.dcm", "./.", "dir/f.dcm", "dir", "dup.dcm/deeper.dcm",
              "/".join(["y" * 250] * 30) + "/deep.dcm"]
    before = {p for p in tmp_path.parent.iterdir()}
    data = CT_SMALL.read_bytes()  # one real image, the rest error rows under their (safe) names
    parts = [("files", name, data if n == 0 else f"not DICOM {n}".encode()) for n, name in enumerate(tricky)]
    response = post_json(testapp, "/upload", parts)
    assert response.status_int == 201, response.text
    assert {p for p in tmp_path.parent.iterdir()} == before
    assert not outside.exists() and not Path("/etc/cron.d/sendit").exists()
    staged = staged_files(app)
    root = staging_root(app.settings).resolve()
    assert len(staged) == len(tricky)
    for path in staged:
        assert path.resolve().is_relative_to(root) and "/files/" in str(path)
    names = sorted(p.relative_to(next(a for a in p.parents if a.name == "files")).as_posix() for p in staged)
    assert "escaped.dcm" in names and "dup.dcm" in names and "dup (2).dcm" in names
    assert "nul_name.dcm" in names and "dir (2)" in names and "unnamed" in names
    assert "dup.dcm_deeper.dcm" in names  # "dup.dcm" is a file, so its "folder" is flattened
    assert max(len(part.encode()) for n in names for part in n.split("/")) <= MAX_COMPONENT_BYTES
    assert max(len(n.encode()) for n in names) <= 1000
    run_import(app)
    with app.session() as db:
        shown = set(db.scalars(select(Image.original_name))) | set(db.scalars(select(IngestError.path)))
    assert {"escaped.dcm", "etc/cron.d/sendit", "x.dcm", "win.dcm", "nul_name.dcm", "b.dcm", "dir/f.dcm"} <= shown
    assert not any("\x00" in n or ".." in n.split("/") for n in shown)


# -- limits, refused early ------------------------------------------------------------------


class CountingInput:
    """A wsgi.input that counts the bytes the application reads."""

    def __init__(self, data: bytes):
        self.stream = BytesIO(data)
        self.read_bytes = 0

    def read(self, size=-1):
        chunk = self.stream.read(size)
        self.read_bytes += len(chunk)
        return chunk


def raw_post(app, testapp, path, body, ctype, *, length=None, token=None):
    """POST through the WSGI app with a counting input (the logged-in client's session)."""
    request = Request.blank(path, method="POST")
    source = CountingInput(body)
    request.environ["wsgi.input"] = source
    request.environ["CONTENT_LENGTH"] = str(len(body) if length is None else length)
    request.headers.update({"Content-Type": ctype, "Accept": "application/json",
                            "X-CSRF-Token": token or csrf_token(testapp),
                            "Cookie": "; ".join(f"{k}={v}" for k, v in testapp.cookies.items())})
    return request.get_response(app.wsgi), source


@pytest.fixture
def small_limits(make_app):
    app = make_app(settings={"sendit.upload.max_file_mb": "1", "sendit.upload.max_request_mb": "4",
                             "sendit.upload.max_files": "3"})
    client = TestApp(app.wsgi)
    login(client)
    return app, client


def test_a_file_over_the_limit_is_refused_as_soon_as_it_passes_it(small_limits):
    app, client = small_limits
    body, ctype = multipart([*files(CT_SMALL), ("files", "huge.dcm", b"\0" * int(3.8 * 1024 * 1024))])
    response, source = raw_post(app, client, "/upload", body, ctype)
    assert response.status_int == 413
    assert "“huge.dcm” is larger than the upload limit of 1 MB per file" in response.json["message"]
    assert source.read_bytes <= 1024 * 1024 + 2 * CHUNK < len(body)  # the limit, and a step or two
    assert batches(app) == [] and staged_files(app) == []


def test_a_request_over_the_limit_is_refused_before_its_body_is_read(small_limits):
    app, client = small_limits
    body, ctype = multipart([("files", f"{n}.dcm", b"\0" * (900 * 1024)) for n in range(5)])
    response, source = raw_post(app, client, "/upload", body, ctype)
    assert response.status_int == 413 and source.read_bytes == 0
    assert "limit of 4 MB per request (sendit.upload.max_request_mb)" in response.json["message"]
    page = post(client, "/upload", [("csrf_token", csrf_token(client)), *[p for p in
                                    [("files", f"{n}.dcm", b"\0" * (900 * 1024)) for n in range(5)]]])
    assert page.status_int == 413 and "per request" in page.html.find(id="upload-error-server").text
    assert batches(app) == [] and staged_files(app) == []


def test_too_many_files_in_one_request(small_limits):
    app, client = small_limits
    response = post_json(client, "/upload", [("files", f"{n}.dcm", b"x") for n in range(4)])
    assert response.status_int == 413 and "More than 3 files" in response.json["message"]
    assert batches(app) == [] and staged_files(app) == []


def test_limits_that_cannot_work_together_stop_start_up(make_app):
    with pytest.raises(SettingsError, match="sendit.upload.max_file_mb = 20 is larger than"):
        make_app(settings={"sendit.upload.max_file_mb": "20", "sendit.upload.max_request_mb": "10"})
    with pytest.raises(SettingsError, match="sendit.upload.max_files"):
        make_app(settings={"sendit.upload.max_files": "0"})


# -- bad requests --------------------------------------------------------------------------


def test_a_dropped_connection_leaves_no_partial_file(app, testapp):
    body, ctype = multipart(files(CT_SMALL, MR_SMALL, *COOKIES))
    for cut in (len(body) // 3, len(body) - 3):
        response, source = raw_post(app, testapp, "/upload", body[:cut], ctype, length=len(body))
        assert response.status_int == 400, response.text
        assert "interrupted" in response.json["message"] and "Nothing was kept" in response.json["message"]
        assert source.read_bytes == cut
    # a body that stops before its closing boundary (a client that gave up)
    response, _ = raw_post(app, testapp, "/upload", body[:len(body) // 2], ctype)
    assert response.status_int == 400 and "ended before it was complete" in response.json["message"]
    assert batches(app) == [] and staged_files(app) == []
    assert list((staging_root(app.settings) / ".incoming").iterdir()) == []


def test_a_connection_dropped_on_a_live_server_leaves_nothing(app, live_server):
    """waitress reads the whole body before the application runs: a client that
    goes away mid-body never reaches it, and the server carries on."""
    body, ctype = multipart(files(*COOKIES))
    port = int(live_server.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("POST", "/upload")
    for key, value in {"Content-Type": ctype, "Content-Length": str(len(body)), **basic()}.items():
        conn.putheader(key, value)
    conn.endheaders()
    conn.send(body[: len(body) // 2])
    conn.sock.shutdown(2)
    conn.close()
    after = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    after.request("GET", "/login")
    assert after.getresponse().status == 200
    assert batches(app) == [] and staged_files(app) == []


@pytest.mark.parametrize("ctype, body, status, message", [
    ("application/json", b'{"files": []}', 415, "must be sent as multipart/form-data"),
    ("application/x-www-form-urlencoded", b"files=x", 415, "this request is application/x-www-form-urlencoded"),
    ("multipart/form-data", b"--x\r\n", 400, "no valid boundary"),
    ("multipart/form-data; boundary=zz", b"garbage without boundaries", 400, "ended before it was complete"),
    (f"multipart/form-data; boundary={BOUNDARY}",
     f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.dcm\"\nbroken".encode(),
     400, "not valid multipart/form-data"),
])
def test_malformed_requests_get_a_clear_message(app, testapp, ctype, body, status, message):
    response = testapp.request("/upload", method="POST", body=body, expect_errors=True,
                               headers={**JSON, "Content-Type": ctype, "X-CSRF-Token": csrf_token(testapp)})
    assert response.status_int == status, response.text
    assert message in response.json["message"]
    assert batches(app) == [] and staged_files(app) == []


def test_an_empty_selection_gives_a_message(app, testapp):
    token = csrf_token(testapp)
    # what a browser sends when nothing was picked: an empty part without a name
    page = post(testapp, "/upload", [("csrf_token", token), ("name", "x"), ("files", "", b""), ("files", "", b"")])
    assert page.status_int == 400
    assert "No files were selected" in page.html.find(id="upload-error-server").text
    assert page.html.find("form", id="upload-form")  # the form again, to try once more
    assert post_json(testapp, "/upload", [("name", "x")]).json["message"].startswith("No files were selected")
    assert batches(app) == [] and staged_files(app) == []


def test_a_bad_batch_name_is_refused(app, testapp):
    response = post_json(testapp, "/upload", [("name", "n" * 300), *files(CT_SMALL)])
    assert response.status_int == 400 and "batch name is too long" in response.json["message"]
    assert batches(app) == [] and staged_files(app) == []


def test_a_missing_batch_gives_a_message(app, testapp):
    assert "There is no batch 999" in testapp.get("/batches/999/upload", status=404).text
    assert "There is no batch" in testapp.get("/batches/nope/upload", status=404).text
    response = post_json(testapp, "/batches/999/upload", files(CT_SMALL))
    assert response.status_int == 404 and "There is no batch 999" in response.json["message"]
    page = post(testapp, "/batches/999/upload", [("csrf_token", csrf_token(testapp)), *files(CT_SMALL)])
    assert page.status_int == 404 and "nothing was uploaded" in page.text
    assert testapp.get("/batches/999/upload/progress", expect_errors=True).status_int == 404
    assert batches(app) == [] and staged_files(app) == []


def test_a_batch_deleted_during_the_upload(app, testapp, monkeypatch):
    import sendit_core.uploads as uploads

    with app.session() as db:
        db.add(Batch(name="going", source="cli", status=BatchStatus.DONE))
        db.commit()
    real = uploads._stream

    def stream_then_delete(*args):
        real(*args)
        with app.session() as db:  # someone deletes the batch while the body streams in
            db.execute(Batch.__table__.delete())
            db.commit()

    monkeypatch.setattr(uploads, "_stream", stream_then_delete)
    response = post_json(testapp, "/batches/1/upload", files(CT_SMALL))
    assert response.status_int == 404 and "deleted while the files were uploading" in response.json["message"]
    assert staged_files(app) == []


# -- CSRF ------------------------------------------------------------------------------------


def test_browser_sessions_need_the_csrf_token(app, testapp):
    data = files(CT_SMALL)
    for headers, parts in [
        ({}, data),                                           # none at all
        ({"X-CSRF-Token": "forged"}, data),                   # a wrong header
        ({}, [("csrf_token", "forged"), *data]),              # a wrong field
        ({}, [*data, ("csrf_token", csrf_token(testapp))]),   # the right one, too late
    ]:
        response = post(testapp, "/upload", parts, headers={**JSON, **headers})
        assert response.status_int == 400, (headers, response.text)
        assert "security token (CSRF)" in response.json["message"]
    page = post(testapp, "/upload", data)
    assert page.status_int == 400 and "security token (CSRF)" in page.text
    anonymous = TestApp(app.wsgi)
    assert "/login" in post(anonymous, "/upload", data).location
    assert batches(app) == [] and staged_files(app) == []


def test_a_late_token_is_refused_before_any_file_is_written(app, testapp, monkeypatch):
    import sendit_core.uploads as uploads

    opened = []
    monkeypatch.setattr(uploads._Receiver, "_open", lambda self, part: opened.append(part))
    response = post(testapp, "/upload", [*files(CT_SMALL), ("csrf_token", csrf_token(testapp))], headers=JSON)
    assert response.status_int == 400 and opened == []


# -- the pages -------------------------------------------------------------------------------


def test_upload_buttons_and_the_page(app, testapp):
    dash = testapp.get("/").html
    button = dash.select_one(".toolbar .actions #panel-upload a")
    assert button["href"] == "/upload" and "Upload" in button.text
    page = testapp.get("/upload").html
    form = page.find("form", id="upload-form")
    assert form["enctype"] == "multipart/form-data" and form["action"] == "/upload"
    inputs = form.find_all("input")
    assert inputs[0]["name"] == "csrf_token", "the token comes before the files"
    assert form.find("input", id="batch-name")["name"] == "name"
    assert form.find("input", id="pick-files").has_attr("multiple")
    assert form.find("input", id="pick-folder").has_attr("webkitdirectory")
    assert page.find("label", attrs={"for": "pick-files"})
    assert form["data-max-file"] == str(1024 * 1024 * 1024)
    with app.session() as db:
        db.add(Batch(name="existing", source="watcher", status=BatchStatus.DONE))
        db.commit()
    batch_page = testapp.get("/batches/1").html
    assert batch_page.select_one("#panel-upload a")["href"] == "/batches/1/upload"
    into = testapp.get("/batches/1/upload").html
    assert into.find("form", id="upload-form")["action"] == "/batches/1/upload"
    assert into.find("input", id="batch-name") is None and "existing" in into.find("h1").text
    js = into.find("script", src=re.compile("upload.js"))["src"]
    assert testapp.get(js).content_type.endswith("javascript")
    assert TestApp(app.wsgi).get(js, expect_errors=True).status_int == 303, "assets sit behind the lockdown"


def test_the_upload_source_and_settings_are_listed(app, testapp):
    from sendit_core.ingest import ingest_sources

    assert "upload" in [s.name for s in ingest_sources(app.pm, app.settings)]
    text = testapp.get("/settings").text
    for key in ("sendit.upload.max_file_mb", "sendit.upload.max_request_mb", "sendit.upload.max_files",
                "sendit.upload.staging_dir"):
        assert key in text


def test_staging_inside_the_watched_folder_is_refused(make_app, tmp_path):
    with pytest.raises(SettingsError, match="sendit.upload.staging_dir .* inside the watched folder"):
        make_app(settings={"sendit.upload.staging_dir": str(tmp_path / "data" / "uploads")})


def test_stale_unfinished_uploads_are_swept(app, testapp):
    factory = app.registry["dbsession_factory"]
    root = staging_root(app.settings)
    dead = root / ".incoming" / "20200101T000000-dead"
    (dead / "files").mkdir(parents=True)
    (dead / "part-1").write_bytes(b"half a file")
    fresh = root / ".incoming" / "20200101T000000-busy"
    fresh.mkdir()
    old = time.time() - STALE_INCOMING_SECONDS - 60
    os.utime(dead / "part-1", (old, old))
    os.utime(dead, (old, old))
    os.utime(dead / "files", (old, old))
    stray = root / "77-123"  # a batch that no longer exists
    stray.mkdir()
    os.utime(stray, (old, old))
    just_moved_in = root / "78-456"  # its batch's transaction may not have committed yet
    just_moved_in.mkdir()
    removed = sweep_staging(app.settings, factory)
    assert set(removed) == {dead, stray} and fresh.exists() and just_moved_in.exists()


# -- memory: a 1 GiB upload to a live server ------------------------------------------------------

SERVER = """
import sys
from pyramid.paster import get_app
from waitress.server import create_server
app = get_app(sys.argv[1])
server = create_server(app, host="127.0.0.1", port=0, threads=2, max_request_body_size=2 ** 31)
print(server.effective_port, flush=True)
server.run()
"""


def rss(pid: int) -> tuple[int, int]:
    """(current, peak) resident memory of a process, in bytes."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def stream_upload(port: int, cookie: str, token: str, count: int, size: int) -> http.client.HTTPResponse:
    """Send ``count`` generated files of ``size`` bytes without holding them (or the body)."""
    block = os.urandom(1024 * 1024)
    heads = [(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="big/{n:04d}.dcm"\r\n'
              f"Content-Type: application/dicom\r\n\r\n").encode() for n in range(count)]
    tail = f"--{BOUNDARY}--\r\n".encode()
    length = sum(len(h) + size + 2 for h in heads) + len(tail)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.putrequest("POST", "/upload")
    for key, value in {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
                       "Content-Length": str(length), "Cookie": cookie, "X-CSRF-Token": token,
                       "Accept": "application/json"}.items():
        conn.putheader(key, value)
    conn.endheaders()
    for head in heads:
        conn.send(head)
        left = size
        while left:
            piece = block[:min(left, len(block))]
            conn.send(piece)
            left -= len(piece)
        conn.send(b"\r\n")
    conn.send(tail)
    return conn.getresponse()


def http_login(port: int) -> tuple[str, str]:
    """Log in through the form over HTTP: the session cookie and its CSRF token."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(method, path, body=None, cookie=None):
        headers = {"Content-Type": "application/x-www-form-urlencoded", **({"Cookie": cookie} if cookie else {})}
        conn.request(method, path, body, headers)
        response = conn.getresponse()
        text = response.read().decode()
        cookie = (response.getheader("Set-Cookie") or cookie or "").split(";", 1)[0]
        match = re.search(r'name="csrf_token" value="([^"]+)"', text)
        return cookie, match.group(1) if match else ""

    cookie, token = call("GET", "/login")
    cookie, _ = call("POST", "/login", f"csrf_token={token}&password={PASSWORD}", cookie)
    cookie, token = call("GET", "/logout", cookie=cookie)
    conn.close()
    return cookie, token


def test_a_1_gib_upload_does_not_grow_the_server_memory(_sqlite_template, tmp_path):
    """The body streams through (waitress buffers it on disk, the app parses it
    in 256 KB steps): the server's peak RSS stays where it was. SQLite only:
    the database takes no part in the streaming."""
    database = tmp_path / "sendit.sqlite"
    shutil.copyfile(_sqlite_template, database)
    raw = {"sqlalchemy.url": f"sqlite:///{database}", "sendit.var_dir": str(tmp_path / "var"),
           "sendit.data_dir": str(tmp_path / "data"), "sendit.storage_dir": str(tmp_path / "storage"),
           "sendit.lockdown.password": PASSWORD, "sendit.session.secret": SECRET,
           "sendit.db.auto_create": "false", "sendit.worker": "external",
           "sendit.upload.max_file_mb": "64", "sendit.upload.max_request_mb": "1100"}
    ini = write_ini(tmp_path / "server.ini", raw)
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(ini)], stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        cookie, token = http_login(port)
        warm = stream_upload(port, cookie, token, 2, 1024 * 1024)  # every code path loaded once
        assert warm.status == 201, warm.read()
        warm.read()
        resting, resting_peak = rss(server.pid)
        started = time.monotonic()
        response = stream_upload(port, cookie, token, 64, 16 * 1024 * 1024)
        answer = response.read()
        seconds = time.monotonic() - started
        assert response.status == 201, answer
        _, peak = rss(server.pid)
        staged = sum(p.stat().st_size for p in (tmp_path / "var" / "uploads").rglob("*.dcm"))
        assert staged == 2 * 1024 * 1024 + 64 * 16 * 1024 * 1024
        print(f"\n1 GiB upload in {seconds:.1f} s ({1024 / seconds:.0f} MB/s); server RSS at rest "
              f"{resting / 2**20:.0f} MB, peak before {resting_peak / 2**20:.0f} MB, "
              f"peak after {peak / 2**20:.0f} MB")
        assert peak - resting < 100 * 2**20, "the server's memory grew with the upload"
    finally:
        server.terminate()
        server.wait(10)
