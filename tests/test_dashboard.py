"""The dashboard plugin's pages through WebTest, on files really imported.

Batches come from pydicom's bundled files and deid-data's ``dicom-cookies``,
imported with the real pipeline (``submit`` + ``import_now``); a few tests add
plain rows where only counts and names matter (sorting and page edges).
"""
import base64
import io
import re
import shutil
import zipfile
from pathlib import Path

import deid_data
import pydicom.data
import pytest
from markupsafe import Markup
from sqlalchemy import func, select, update
from webob import Request

from sendit_core import Panel, hookimpl
from sendit_core.models import Batch, BatchStatus, HeaderValue, Image, IngestError, Job, JobFile
from sendit_core.pipeline import Ingestor, import_now, iter_files, submit
from sendit_core.settings import SettingsError
from sendit_core.testing import PASSWORD, csrf_token, login
from sendit_dashboard import zipstream
from sendit_dashboard.formatting import filesize

COOKIES = Path(deid_data.__file__).parent / "data" / "dicom-cookies"
CT = pydicom.data.get_testdata_file("CT_small.dcm")
MR = pydicom.data.get_testdata_file("MR_small.dcm")
TRUNCATED = pydicom.data.get_testdata_file("MR_truncated.dcm")


def queue(app, paths, name, **kw):
    """Record files for import (nothing processed yet); returns the batch id."""
    factory = app.registry["dbsession_factory"]
    return submit(factory, app.settings, iter_files(paths), batch_name=name, publish=False, **kw)


def import_batch(app, paths, name, **kw) -> int:
    """Import files as a new batch with the real pipeline; returns the batch id."""
    submission = queue(app, paths, name, **kw)
    factory = app.registry["dbsession_factory"]
    import_now(Ingestor(app.settings, app.pm, factory), submission)
    return submission.batch_id


@pytest.fixture
def mixed(app, tmp_path):
    """A batch of two good files and two bad ones (not DICOM, truncated)."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    for source in (CT, MR, TRUNCATED):
        shutil.copy(source, folder)
    (folder / "notes.txt").write_text("not an image")
    return import_batch(app, [folder], "mixed")


@pytest.fixture
def cookies(app):
    return import_batch(app, [COOKIES], "cookies", source="watcher")


def add_batches(app, count, **values):
    """Plain batch rows (for sorting and paging); returns their ids in order."""
    with app.session() as db:
        batches = [Batch(name=f"b{n:03d}", **values) for n in range(count)]
        db.add_all(batches)
        db.commit()
        return [b.id for b in batches]


def client(app):
    from webtest import TestApp

    web = TestApp(app.wsgi)
    assert login(web).status_int == 303
    return web


def cell_text(cell) -> str:
    """A cell's text as people read it (paths carry <wbr> break hints)."""
    return cell.get_text("" if "path" in cell.get("class", []) else " ", strip=True)


def rows(page, table_id):
    return [[cell_text(cell) for cell in tr.find_all("td")]
            for tr in page.html.find(id=table_id).find("tbody").find_all("tr")]


def stored(app, batch_id):
    with app.session() as db:
        return db.execute(select(Image.stored_path, Image.original_name)
                          .where(Image.batch_id == batch_id).order_by(Image.id)).all()


# -- dashboard -------------------------------------------------------------------


def test_dashboard_empty_state(testapp):
    page = testapp.get("/")
    assert "No batches yet" in page.html.find(id="live").text
    assert page.html.find(id="batches") is None
    for total in ("total-batches", "total-images", "total-errors"):
        assert page.html.find(id=total).text == "0"
    assert page.html.find(id="total-storage").text == "0 bytes"
    nav = [a.text for a in page.html.find("nav").find_all("a")]
    assert nav[:2] == ["Dashboard", "Errors"] and "Settings" in nav


def test_dashboard_lists_imported_batches_with_totals(app, testapp, cookies, mixed):
    page = testapp.get("/")
    table = {row[0]: row for row in rows(page, "batches")}
    assert set(table) == {"cookies", "mixed"}
    name, status, source, images, errors, added, modified = table["cookies"]
    assert (status, source, images, errors) == ("✓ DONE", "watcher", "7", "0")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", added) and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", modified)
    assert table["mixed"][3:5] == ["2", "2"]
    assert rows(page, "batches")[0][0] == "mixed"  # the newest change first
    # totals come from the batches' counters and match the stored files
    sizes = sum((Path(app.settings["sendit.storage_dir"]) / p).stat().st_size
                for b in (cookies, mixed) for p, _ in stored(app, b))
    assert page.html.find(id="total-images").text == "9"
    assert page.html.find(id="total-errors").text == "2"
    assert page.html.find(id="total-storage").text == filesize(sizes) == f"{sizes / 2**20:.1f} MB"
    # the error count links to that batch's errors; the name to the batch page
    link = page.html.find("a", class_="error-link")
    assert link["href"] == f"/errors?batch={mixed}" and link.text == "2"
    errors = testapp.get(link["href"])
    assert {r[2] for r in rows(errors, "errors-table")} == {"mixed/notes.txt", "mixed/MR_truncated.dcm"}
    assert page.click("cookies").request.path == f"/batches/{cookies}"


def test_dashboard_sorts_by_every_column_with_aria_sort(app, testapp, cookies, mixed):
    page = testapp.get("/")
    sorted_th = page.html.find("th", attrs={"aria-sort": True})
    assert sorted_th.text.strip().startswith("Modified") and sorted_th["aria-sort"] == "descending"
    by_name = testapp.get("/?sort=name&order=asc")
    assert [r[0] for r in rows(by_name, "batches")] == ["cookies", "mixed"]
    th = by_name.html.find("th", attrs={"aria-sort": True})
    assert th.text.strip().startswith("Name") and th["aria-sort"] == "ascending"
    assert th.find("a")["href"] == "/?sort=name&order=desc"  # a second click reverses
    assert [r[0] for r in rows(testapp.get(th.find("a")["href"]), "batches")] == ["mixed", "cookies"]
    assert [r[0] for r in rows(testapp.get("/?sort=images&order=desc"), "batches")] == ["cookies", "mixed"]
    assert [r[0] for r in rows(testapp.get("/?sort=errors&order=desc"), "batches")] == ["mixed", "cookies"]
    assert [r[0] for r in rows(testapp.get("/?sort=added&order=asc"), "batches")] == ["cookies", "mixed"]
    assert [r[0] for r in rows(testapp.get("/?sort=source"), "batches")] == ["mixed", "cookies"]  # cli < watcher
    for key in ("status", "modified"):
        assert len(rows(testapp.get(f"/?sort={key}&order=asc"), "batches")) == 2
    # a hand-made sort falls back to the default instead of failing
    assert len(rows(testapp.get("/?sort=drop+table&order=sideways"), "batches")) == 2


def test_dashboard_filters_by_status_and_name(app, testapp, cookies, mixed):
    queue(app, [CT], "waiting-room")
    add_batches(app, 1, status=BatchStatus.EMPTY)
    page = testapp.get("/")
    chips = {a.find(string=True).strip(): a.find(class_="count").text for a in page.html.find(class_="chips").find_all("a")}
    assert chips == {"All": "4", "Queued": "1", "Processing": "0", "Done": "2", "Empty": "1", "Error": "0"}
    assert [r[0] for r in rows(testapp.get("/?status=QUEUED"), "batches")] == ["waiting-room"]
    assert [r[0] for r in rows(testapp.get("/?status=done&q=COOK"), "batches")] == ["cookies"]
    filtered = testapp.get("/?q=i")  # name contains "i" (any case): cookies, mixed, waiting-room
    assert sorted(r[0] for r in rows(filtered, "batches")) == ["cookies", "mixed", "waiting-room"]
    chips = filtered.html.find(class_="chips")
    assert chips.find("a", attrs={"aria-current": "true"}).text.startswith("All")
    assert chips.find("a", class_="chip-DONE")["href"] == "/?q=i&status=DONE"  # the name filter stays
    assert filtered.html.find(id="q")["value"] == "i"
    nothing = testapp.get("/?q=100%25")  # LIKE wildcards are taken literally
    assert "No batches match these filters" in nothing and nothing.html.find(id="batches") is None
    assert nothing.html.find(id="total-batches").text == "4"  # totals stay global
    bad = testapp.get("/?status=LOST", status=400)
    assert "There is no batch status “LOST”" in bad and "QUEUED, PROCESSING, DONE, EMPTY, ERROR" in bad


def test_dashboard_shows_batches_being_imported(app, testapp):
    queue(app, [COOKIES], "arriving")
    page = testapp.get("/")
    row = rows(page, "batches")[0]
    assert row[1].startswith("◷ QUEUED") and "7 to go" in row[1]
    assert "1 importing · 7 files to go" in page.html.find(class_="stats").text


@pytest.fixture
def paged(make_app):
    app = make_app(settings={"sendit.page_size": "2"})
    add_batches(app, 5)
    return app, client(app)


def test_dashboard_pagination_and_its_edges(paged):
    app, web = paged
    first = web.get("/?sort=name&order=asc")
    assert [r[0] for r in rows(first, "batches")] == ["b000", "b001"]
    pager = first.html.find(id="pager")
    assert "1–2 of 5 batches" in pager.text
    assert pager.find("a", attrs={"aria-current": "page"}).text == "1"
    next_link = pager.find("a", rel="next")["href"]
    assert next_link == "/?sort=name&order=asc&page=2"  # sort and filters stay
    last = web.get("/?sort=name&order=asc&page=3")
    assert [r[0] for r in rows(last, "batches")] == ["b004"]
    assert last.html.find(id="pager").find("a", rel="next") is None
    assert last.html.find(id="pager").find("a", rel="prev")["href"] == "/?sort=name&order=asc&page=2"
    assert "5–5 of 5" in last.html.find(id="pager").text
    for bad, message in (("4", "There is no page 4: there are 3 pages."),
                         ("0", "There is no page 0"), ("-1", "There is no page -1"),
                         ("abc", "“abc” is not a page number."), ("1e9", "is not a page number"),
                         ("99999999999999999999", "There is no page")):
        page = web.get(f"/?page={bad}", status=404)
        assert message in page.html.find("main").text
        assert page.html.find("nav") is not None  # the product's own 404 page
    # a filter that leaves one page: page 1 exists even when nothing matches
    assert "No batches match" in web.get("/?q=zzz&page=1")
    web.get("/?q=zzz&page=2", status=404)


def test_a_many_page_table_links_first_last_and_nearby_pages(make_app):
    app = make_app(settings={"sendit.page_size": "1"})
    add_batches(app, 30)
    page = client(app).get("/?page=15")
    items = [li.get_text(strip=True) for li in page.html.find(id="pager").find_all("li")]
    assert items == ["‹ Previous", "1", "…", "13", "14", "15", "16", "17", "…", "30", "Next ›"]


def test_partial_is_the_live_fragment_only(app, testapp, cookies):
    full = testapp.get("/?sort=name&order=asc")
    region = full.html.find(id="live")
    assert region["data-refresh"] == "10" and region.has_attr("data-live")
    partial = testapp.get("/?sort=name&order=asc&partial=1")
    assert "<html" not in partial.text and "<nav aria-label=\"Main\"" not in partial.text
    assert partial.headers["Cache-Control"] == "no-store"
    assert [r[0] for r in rows(partial, "batches")] == ["cookies"]
    assert "partial" not in partial.text.split("<tbody>")[0]  # links never carry ?partial=1
    assert partial.html.find(id="total-images").text == "7"
    assert full.html.find("script", src="/static-dashboard/live.js") is not None
    assert "data-live-form" in full.text


def test_refresh_interval_is_a_setting(make_app):
    page = client(make_app(settings={"sendit.dashboard.refresh_seconds": "3"})).get("/")
    assert page.html.find(id="live")["data-refresh"] == "3"
    assert "every 3 s" in page.html.find(attrs={"data-live-status": True}).text
    off = client(make_app(settings={"sendit.dashboard.refresh_seconds": "0"})).get("/")
    assert off.html.find(id="live")["data-refresh"] == "0" and off.html.find(attrs={"data-live-status": True}) is None
    with pytest.raises(SettingsError, match="sendit.dashboard.refresh_seconds"):
        make_app(settings={"sendit.dashboard.refresh_seconds": "-1"})


class Panels:
    """A plugin with a panel in every slot of the dashboard."""

    @staticmethod
    @hookimpl
    def sendit_dashboard_panels(request):
        return [Panel("go", Markup('<a class="button primary" href="#">Go</a>'), slot="actions"),
                Panel("beside", Markup("<p>beside the table</p>"), title="Side", slot="side"),
                Panel("above", Markup("<p>above the table</p>"), title="Main")]


def test_dashboard_places_panels_by_slot(make_app):
    web = client(make_app(plugins=[Panels()]))
    for url in ("/", "/?partial=1"):
        page = web.get(url)
        assert page.html.find(class_="dash-side").find(id="panel-beside") is not None
        assert page.html.find(id="panel-above").find("h2").text == "Main"
    page = web.get("/")
    assert page.html.find(class_="toolbar").find(id="panel-go").find("a").text == "Go"
    assert page.html.find(id="live").find(id="panel-go") is None  # buttons are not refreshed


def test_the_pages_assets_are_served_behind_the_lockdown(testapp, anon_app):
    assert "data-live" in testapp.get("/static-dashboard/live.js").text
    assert ".stats" in testapp.get("/static-dashboard/dashboard.css").text
    assert anon_app.get("/static-dashboard/live.js", status=303).location.startswith("http://localhost/login")


# -- batch page ------------------------------------------------------------------


def test_batch_page_lists_images_and_errors(app, testapp, mixed):
    page = testapp.get(f"/batches/{mixed}")
    assert page.html.find("h1").get_text(" ", strip=True) == "Batch mixed"
    assert page.html.find(id="batch-status").text.strip() == "✓ DONE"
    images = rows(page, "images")
    by_modality = {r[2]: r for r in images}
    assert set(by_modality) == {"CT", "MR"}
    ct = pydicom.dcmread(CT)
    assert by_modality["CT"][0] == str(ct.InstanceNumber)
    assert by_modality["CT"][1] == ct.SeriesInstanceUID and by_modality["CT"][3] == ct.SOPInstanceUID
    assert by_modality["CT"][4] == filesize(Path(CT).stat().st_size) == "38 KB"
    errors = {r[0]: r for r in rows(page, "errors-table")}
    assert set(errors) == {"mixed/notes.txt", "mixed/MR_truncated.dcm"}
    assert errors["mixed/notes.txt"][1:3] == ["parse", "not a DICOM file (no parser accepted it)"]
    assert errors["mixed/MR_truncated.dcm"][2].startswith("file is truncated")
    assert page.html.find("a", string=re.compile("All errors of this batch"))["href"] == f"/errors?batch={mixed}"
    assert page.html.find(id="live")["data-refresh"] == "0"  # finished: nothing to refresh
    assert page.html.find(attrs={"data-live-stop": True}) is not None
    with app.session() as db:
        ct_id = db.scalar(select(Image.id).where(Image.modality == "CT"))
    detail = page.click("View", href=f"/images/{ct_id}")
    assert ct.SOPInstanceUID in detail.html.find("h1").text
    assert detail.html.find(class_="breadcrumb").find("a", href=f"/batches/{mixed}") is not None


def test_batch_page_without_errors_has_no_errors_table(testapp, cookies):
    page = testapp.get(f"/batches/{cookies}")
    assert len(rows(page, "images")) == 7
    assert page.html.find(id="errors-table") is None and page.html.find(id="errors") is None


def test_batch_images_sort_and_page(make_app):
    app = make_app(settings={"sendit.page_size": "3"})
    batch = import_batch(app, [COOKIES], "cookies")
    web = client(app)
    with app.session() as db:
        uids = db.scalars(select(Image.sop_instance_uid).where(Image.batch_id == batch)).all()
        sizes = sorted(db.scalars(select(Image.size).where(Image.batch_id == batch)).all(), reverse=True)
    by_uid = [r[3] for p in (1, 2, 3) for r in rows(web.get(f"/batches/{batch}?sort=uid&page={p}"), "images")]
    assert by_uid == sorted(uids)
    page = web.get(f"/batches/{batch}?sort=size")
    th = page.html.find("th", attrs={"aria-sort": True})
    assert th.text.strip().startswith("Size") and th["aria-sort"] == "descending"
    first = page.html.find(id="images").find("tbody").find("td", class_="num nowrap").text
    assert first == filesize(sizes[0])
    assert "1–3 of 7 images" in page.html.find(id="pager").text
    assert page.html.find(id="pager").find("a", rel="next")["href"] == f"/batches/{batch}?sort=size&page=2"
    assert len(rows(web.get(f"/batches/{batch}?page=3"), "images")) == 1
    web.get(f"/batches/{batch}?page=4", status=404)
    web.get(f"/batches/{batch}?page=x", status=404)


def test_batch_page_while_importing_refreshes_with_live_counts(app, testapp):
    submission = queue(app, [COOKIES], "arriving")
    page = testapp.get(f"/batches/{submission.batch_id}")
    assert page.html.find(id="live")["data-refresh"] == "10"
    assert page.html.find(attrs={"data-live-stop": True}) is None
    assert page.html.find(id="batch-status").text.strip() == "◷ QUEUED"
    assert "0 of 7 files processed" in page.html.find(class_="progress-row").text
    assert "No images in this batch yet" in page
    factory = app.registry["dbsession_factory"]
    import_now(Ingestor(app.settings, app.pm, factory), submission)
    partial = testapp.get(f"/batches/{submission.batch_id}?partial=1")
    assert partial.html.find(attrs={"data-live-stop": True}) is not None  # the script stops here
    assert partial.html.find(id="batch-status").text.strip() == "✓ DONE"
    assert partial.html.find(id="batch-images").text == "7" and len(rows(partial, "images")) == 7


def test_unknown_or_malformed_batch_is_the_404_page(testapp):
    for url, message in (("/batches/424242", "There is no batch 424242."),
                         ("/batches/-3", "There is no batch -3."),
                         ("/batches/9999999999999999999999", "There is no batch"),
                         ("/batches/abc", "'abc' is not a batch number."),
                         ("/batches/424242/download", "There is no batch 424242."),
                         ("/batches/424242/delete", "There is no batch 424242."),
                         ("/images/0", "There is no image 0.")):
        page = testapp.get(url, status=404)
        assert message in page.html.find("main").text and page.html.find("nav") is not None


def test_batch_panels_slots(make_app):
    class BatchPanels:
        @staticmethod
        @hookimpl
        def sendit_batch_panels(request, batch):
            return [Panel("upload", Markup('<a class="button" href="#">Upload into {}</a>').format(batch.name),
                          slot="actions")]

    app = make_app(plugins=[BatchPanels()])
    batch = import_batch(app, [CT], "one")
    page = client(app).get(f"/batches/{batch}")
    toolbar = page.html.find(class_="toolbar")
    assert "Upload into one" in [a.text for a in toolbar.find_all("a")]


# -- zip download -------------------------------------------------------------------


def test_download_is_the_stored_files_byte_for_byte(app, testapp, cookies, mixed):
    response = testapp.get(f"/batches/{cookies}/download")
    assert response.content_type == "application/zip"
    assert response.headers["Content-Disposition"] == \
        "attachment; filename=\"cookies.zip\"; filename*=UTF-8''cookies.zip"
    storage = Path(app.settings["sendit.storage_dir"])
    with zipfile.ZipFile(io.BytesIO(response.body)) as archive:
        assert archive.testzip() is None
        infos = archive.infolist()
        assert all(info.compress_type == zipfile.ZIP_STORED for info in infos)
        files = stored(app, cookies)
        assert [i.filename for i in infos] == [f"cookies/{name}" for _, name in files]
        for info, (relpath, _) in zip(infos, files):
            assert archive.read(info) == (storage / relpath).read_bytes()
    assert len(infos) == 7


def test_download_names_are_safe_and_unique_and_missing_files_are_listed(app, testapp, cookies):
    with app.session() as db:
        ids = db.scalars(select(Image.id).where(Image.batch_id == cookies).order_by(Image.id)).all()
        evil = ["../../etc/passwd", "/abs/x.dcm", "C:\\Windows\\x.dcm", "a/./b/../c.dcm",
                "same.dcm", "SAME.dcm", None]
        for image_id, name in zip(ids, evil):
            db.execute(update(Image).where(Image.id == image_id).values(original_name=name))
        db.execute(update(Batch).where(Batch.id == cookies).values(name="../Tricky: “batch”"))
        missing = db.get(Image, ids[1]).stored_path
        uid = db.get(Image, ids[6]).sop_instance_uid
        db.commit()
    (Path(app.settings["sendit.storage_dir"]) / missing).unlink()
    response = testapp.get(f"/batches/{cookies}/download")
    disposition = response.headers["Content-Disposition"]
    assert disposition == ('attachment; filename="Tricky_ batch.zip"; '
                           "filename*=UTF-8''Tricky_%20%E2%80%9Cbatch%E2%80%9D.zip")
    with zipfile.ZipFile(io.BytesIO(response.body)) as archive:
        names = archive.namelist()
    folder = "Tricky_ “batch”"
    assert names == [f"{folder}/etc/passwd", f"{folder}/C_/Windows/x.dcm", f"{folder}/a/b/c.dcm",
                     f"{folder}/same.dcm", f"{folder}/SAME-2.dcm", f"{folder}/{uid}.dcm",
                     f"{folder}/MISSING.txt"]
    assert all(not n.startswith("/") and ".." not in n.split("/") for n in names)


def test_sizes_for_people():
    assert [filesize(n) for n in (0, 1, 1023, 1536, 38 * 1024 + 300, 5 * 2**30)] == \
        ["0 bytes", "1 byte", "1023 bytes", "1.5 KB", "38 KB", "5.0 GB"]


def test_unique_names_avoid_files_and_folders_clashing():
    names = zipstream.UniqueNames()
    assert [names.take(n) for n in ("b/x.dcm", "b/x.dcm", "B/X.dcm", "b", "b/x.dcm/y", "c.tar.gz", "c.tar.gz")] == \
        ["b/x.dcm", "b/x-2.dcm", "B/X-3.dcm", "b-2", "b/x.dcm-2/y", "c.tar.gz", "c.tar-2.gz"]
    assert zipstream.safe_path("..\\..//./", "fallback") == "fallback"
    assert zipstream.safe_component("a\x00b<>|", "f") == "a_b___"


def test_download_streams_in_small_chunks(app, cookies, monkeypatch):
    """The zip is written while it is sent: no chunk holds more than one read's worth."""
    monkeypatch.setattr(zipstream, "CHUNK", 4096)
    basic = base64.b64encode(f"any:{PASSWORD}".encode()).decode()
    request = Request.blank(f"/batches/{cookies}/download", headers={"Authorization": f"Basic {basic}"})
    response = request.get_response(app.wsgi)
    assert response.status_int == 200
    assert not isinstance(response.app_iter, (list, tuple, bytes))  # a generator, not a built body
    chunks = list(response.app_iter)
    assert len(chunks) > 100 and max(len(c) for c in chunks) <= 4096 + 512
    with zipfile.ZipFile(io.BytesIO(b"".join(chunks))) as archive:
        assert len(archive.namelist()) == 7


def test_download_of_a_batch_without_images_is_an_empty_zip(app, testapp, tmp_path):
    (tmp_path / "junk.txt").write_text("nope")
    batch = import_batch(app, [tmp_path / "junk.txt"], "junk")
    page = testapp.get(f"/batches/{batch}")
    assert page.html.find("a", string=re.compile("Download zip")) is None  # no button for nothing
    with zipfile.ZipFile(io.BytesIO(testapp.get(f"/batches/{batch}/download").body)) as archive:
        assert archive.namelist() == []


# -- delete ----------------------------------------------------------------------


def counts(app, batch_id):
    with app.session() as db:
        images = select(Image.id).where(Image.batch_id == batch_id)
        return {
            "batch": db.scalar(select(func.count()).select_from(Batch).where(Batch.id == batch_id)),
            "images": db.scalar(select(func.count()).select_from(Image).where(Image.batch_id == batch_id)),
            "values": db.scalar(select(func.count()).select_from(HeaderValue).where(HeaderValue.image_id.in_(images))),
            "errors": db.scalar(select(func.count()).select_from(IngestError).where(IngestError.batch_id == batch_id)),
            "jobs": db.scalar(select(func.count()).select_from(Job).where(Job.batch_id == batch_id)),
        }


def test_delete_needs_the_csrf_token(app, testapp, mixed):
    before = counts(app, mixed)
    files = [Path(app.settings["sendit.storage_dir"]) / p for p, _ in stored(app, mixed)]
    page = testapp.post(f"/batches/{mixed}/delete", status=400)
    assert "security token (CSRF)" in page and "nothing was changed" in page
    testapp.post(f"/batches/{mixed}/delete", {"csrf_token": "forged"}, status=400)
    assert counts(app, mixed) == before and all(f.exists() for f in files)
    assert before["images"] == 2 and before["values"] > 100 and before["errors"] == 2


def test_delete_asks_then_removes_rows_and_files(app, testapp, mixed, cookies):
    storage = Path(app.settings["sendit.storage_dir"])
    files = [storage / p for p, _ in stored(app, mixed)]
    kept = [storage / p for p, _ in stored(app, cookies)]
    batch_page = testapp.get(f"/batches/{mixed}")
    confirm = batch_page.click("Delete batch")
    assert confirm.html.find("h1").text == "Delete batch “mixed”?"
    assert "2 images" in confirm and "2 error records" in confirm
    done = confirm.forms[1].submit(status=303)  # forms[0] is the log-out button
    assert done.location == "http://localhost/"
    dashboard = done.follow()
    assert "Deleted batch “mixed”: 2 images, 2 errors and the stored files." in \
        dashboard.html.find(class_="flash-success").text
    assert [r[0] for r in rows(dashboard, "batches")] == ["cookies"]
    assert counts(app, mixed) == {"batch": 0, "images": 0, "values": 0, "errors": 0, "jobs": 0}
    with app.session() as db:
        assert db.scalar(select(func.count()).select_from(JobFile)) == 7  # only cookies' files remain
    assert not any(f.exists() for f in files) and not (storage / str(mixed)).exists()
    assert all(f.exists() for f in kept) and counts(app, cookies)["images"] == 7
    testapp.get(f"/batches/{mixed}", status=404)


def test_a_batch_still_importing_is_not_deleted(app, testapp):
    submission = queue(app, [COOKIES], "arriving")
    confirm = testapp.get(f"/batches/{submission.batch_id}/delete")
    assert "still being imported (7 files to go)" in confirm and len(confirm.forms) == 1
    response = testapp.post(f"/batches/{submission.batch_id}/delete", {"csrf_token": csrf_token(testapp)},
                            status=303)
    assert "still being imported" in response.follow().html.find(class_="flash-error").text
    assert counts(app, submission.batch_id)["batch"] == 1


# -- errors page -----------------------------------------------------------------


def test_errors_page_lists_filters_and_pages(make_app, tmp_path):
    app = make_app(settings={"sendit.page_size": "2"})
    (tmp_path / "a").mkdir()
    for n in range(3):
        (tmp_path / "a" / f"junk{n}.txt").write_text("x")
    first = import_batch(app, [tmp_path / "a"], "first")
    second = import_batch(app, [TRUNCATED, CT], "second")
    web = client(app)
    page = web.get("/errors")
    assert page.html.find("nav").find("a", attrs={"aria-current": "page"}).text == "Errors"
    newest = rows(page, "errors-table")
    assert [r[1] for r in newest] == ["second", "first"] and newest[0][2] == "MR_truncated.dcm"
    assert "1–2 of 4 errors" in page.html.find(id="pager").text
    page2 = web.get("/errors?page=2")
    assert [r[2] for r in rows(page2, "errors-table")] == ["a/junk1.txt", "a/junk0.txt"]
    web.get("/errors?page=3", status=404)
    web.get("/errors?page=nope", status=404)
    only = web.get(f"/errors?batch={first}&sort=file&order=asc")
    assert [r[2] for r in rows(only, "errors-table")] == ["a/junk0.txt", "a/junk1.txt"]
    assert "Errors of batch first" in only.html.find(class_="filter-note").get_text(" ", strip=True)
    assert only.html.find(id="filter-batch").find("option", selected=True)["value"] == str(first)
    assert "1–2 of 3 errors" in only.html.find(id="pager").text
    options = [o["value"] for o in only.html.find(id="filter-batch").find_all("option")]
    assert options == ["", str(second), str(first)]  # batches with errors, latest first
    parse = web.get(f"/errors?step=parse&batch={second}")
    assert [r[3] for r in rows(parse, "errors-table")] == ["parse"]
    assert "No errors match these filters" in web.get(f"/errors?step=store&batch={second}")
    web.get("/errors?batch=x", status=400)
    assert "There is no batch 77" in web.get("/errors?batch=77", status=404)
    assert "<html" not in web.get("/errors?partial=1").text


def test_errors_page_empty_state(testapp, cookies):
    page = testapp.get("/errors")
    assert "No errors" in page.html.find(id="live").text and page.html.find(id="errors-table") is None


# -- settings page ----------------------------------------------------------------


def test_settings_page_shows_configuration_plugins_services_and_versions(make_app):
    app = make_app(settings={"sendit.broker_url": "amqp://guest:brokerpw@mq.example:5672//",
                             "sendit.worker": "external"})
    page = client(app).get("/settings")
    assert "brokerpw" not in page.text and "test-password" not in page.text and "test-secret" not in page.text
    config = {r[0]: r[1] for r in rows(page, "config")}
    assert config["sendit.lockdown.password"] == "********"
    assert config["sendit.broker_url"] == "amqp://guest:***@mq.example:5672//"
    assert config["sendit.dashboard.refresh_seconds"] == "10"
    assert set(config) >= {"sqlalchemy.url", "sendit.page_size", "sendit.storage_dir", "sendit.worker"}
    assert "Rows per page in tables." in page.html.find(id="config").text
    plugins = {r[0]: r for r in rows(page, "plugins")}
    assert plugins["sendit_dashboard"][1] == "0.1.0" and plugins["sendit_dashboard"][2] == "built-in"
    assert "sendit_pyramid_configure" in plugins["sendit_dashboard"][3]
    assert "sendit_parse_file" in plugins["sendit_pydicom"][3]
    database = page.html.find(id="service-database").text
    engine = app.settings["sendit.engine"]
    assert f"{engine.dialect.name} ({engine.driver})" in database and "Server version" in database
    from alembic.script import ScriptDirectory

    from sendit_core.models import alembic_config

    head = ScriptDirectory.from_config(alembic_config(app.settings, engine)).get_current_head()
    assert f"Schema revision{head}" in database
    queue_info = page.html.find(id="service-ingest-queue").text
    assert "amqp://guest:***@mq.example:5672//" in queue_info and "separate “sendit worker” processes" in queue_info
    assert "Space used" in page.html.find(id="service-storage").text
    versions = {r.find("th").text: r.find("td").text for r in page.html.find(id="versions").find_all("tr")}
    assert versions["pydicom"] == pydicom.__version__ and versions["sendit"] == "0.1.0"
    assert page.html.find(id="live")["data-refresh"] == "10"
    assert "<html" not in client(app).get("/settings?partial=1").text


def test_settings_page_shows_sources_and_survives_a_broken_one(make_app):
    from sendit_core import IngestSource, SourceStatus

    class Good(IngestSource):
        name, description, daemon = "good", "A daemon that runs", True

        def status(self, settings):
            return SourceStatus(True, "watching /data", details={"pid": 42})

    class Broken(IngestSource):
        name, description, daemon = "broken", "A daemon whose status fails", True

        def status(self, settings):
            raise OSError("pid file unreadable")

    class Sources:
        @staticmethod
        @hookimpl
        def sendit_ingest_sources():
            return [Good(), Broken()]

    page = client(make_app(plugins=[Sources()])).get("/settings")
    sources = {r[0]: r for r in rows(page, "sources")}
    assert sources["good"][2].startswith("active watching /data") and "pid 42" in sources["good"][2]
    assert "status unavailable: pid file unreadable" in sources["broken"][2]
