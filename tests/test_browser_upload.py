"""The upload page in a real (headless) Chromium against a live server whose
worker thread imports what arrives: the Upload button, the pickers, drag and
drop, the progress bars (with the upload throttled so they can be seen), cancel,
the live import counts, and the batch page at the end. Screenshots of each step
go to docs/screenshots/upload*.png.
"""
import base64
from pathlib import Path

import deid_data
import pydicom.data
import pytest
from sqlalchemy import select

from sendit_core.models import Batch, BatchStatus
from sendit_core.synth import SeriesSpec, write_series
from sendit_core.testing import browser_login, save_screenshot, serve
from sendit_core.uploads import staging_root
from sendit_core.worker import start_thread_worker

pytestmark = pytest.mark.browser

COOKIES = sorted((Path(deid_data.__file__).parent / "data" / "dicom-cookies").glob("*.dcm"))
CT_SMALL = Path(pydicom.data.get_testdata_file("CT_small.dcm"))
MR_SMALL = Path(pydicom.data.get_testdata_file("MR_small.dcm"))
LIMIT_MB = 6


class Server:
    """A live server; its worker starts when the test says so."""

    def __init__(self, app):
        self.app = app
        self.live = serve(app)
        self.url = self.live.url
        self.worker = self.thread = None

    def start_worker(self):
        self.worker, self.thread = start_thread_worker(self.app.settings, self.app.pm)

    def stop(self):
        self.live.stop()
        if self.worker:
            self.worker.stop()
            self.thread.join(10)

    def batches(self):
        with self.app.session() as db:
            return db.scalars(select(Batch).order_by(Batch.id)).all()


@pytest.fixture
def server(make_app):
    server = Server(make_app(settings={"sendit.upload.max_file_mb": str(LIMIT_MB),
                                       "sendit.upload.max_request_mb": str(LIMIT_MB),
                                       "sendit.dashboard.refresh_seconds": "1"}))
    yield server
    server.stop()


def throttle(page, bytes_per_second):
    """Slow the tab's uploads down (Chromium's network emulation)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                  "uploadThroughput": bytes_per_second})
    return cdp


def series(folder: Path, slices: int, size: int) -> list[Path]:
    return write_series(folder, SeriesSpec(slices=slices, rows=size, columns=size, patient_id="PHANTOM01",
                                           marker=(0.0, 0.0, 60.0)))


def progress_value(page, selector):
    return page.eval_on_selector(selector, "el => el.value / el.max")


def test_upload_from_the_dashboard_with_progress_then_the_batch(server, page, tmp_path):
    phantom = series(tmp_path / "CT_PHANTOM", 10, 192)  # 10 x 74 KB
    notes = tmp_path / "notes.txt"
    notes.write_text("not a DICOM file")
    browser_login(page, server.url)
    page.goto(server.url + "/")
    page.locator("#panel-upload a").focus()
    save_screenshot(page, "upload-dashboard", full_page=False)
    page.click("#panel-upload a")
    page.wait_for_url("**/upload")
    assert page.locator("#dropzone").is_visible() and not page.locator("#native-pickers").is_visible()
    save_screenshot(page, "upload")

    page.fill("#batch-name", "CT phantom, uploaded")
    page.set_input_files("#pick-files", [*phantom, COOKIES[0], notes])
    summary = page.locator("#selection-summary")
    assert summary.inner_text().startswith("12 files")
    assert page.locator("#selection-table tbody tr").count() == 12
    assert page.locator("#upload-start").inner_text() == "Upload 12 files"
    save_screenshot(page, "upload-selected")

    throttle(page, 400_000)
    page.click("#upload-start")
    page.wait_for_selector("#upload-progress:not([hidden])")
    page.wait_for_function("() => { const p = document.getElementById('overall-progress');"
                           " return p.value / p.max > 0.3 && p.value / p.max < 0.9; }")
    assert page.locator("#upload-start").is_disabled()
    assert " of " in page.inner_text("#overall-text") and "files sent" in page.inner_text("#files-text")
    assert page.inner_text("#file-name")
    assert page.locator("#selection-table tr.state-sending").count() == 1
    save_screenshot(page, "upload-progress")

    page.wait_for_selector("#upload-import:not([hidden])", timeout=30_000)
    page.wait_for_function("() => document.getElementById('count-pending').textContent.trim() === '12'")
    assert page.locator("#import-spinner").is_visible()
    (batch,) = server.batches()
    assert (batch.name, batch.source, batch.pending_count) == ("CT phantom, uploaded", "upload", 12)
    save_screenshot(page, "upload-importing")

    server.start_worker()  # now the import runs; the page follows it, then opens the batch
    page.wait_for_url(f"**/batches/{batch.id}", timeout=30_000)
    assert page.inner_text("#batch-images").strip() == "11"
    assert page.inner_text("#batch-errors").strip() == "1"
    assert "notes.txt" in page.inner_text("#errors-table")
    save_screenshot(page, "upload-batch")
    # the imported copies are gone from staging; the failed one is kept
    assert [p.name for p in staging_root(server.app.settings).rglob("*") if p.is_file()] == ["notes.txt"]


def test_more_files_from_the_batch_page_in_several_requests(server, page, tmp_path):
    server.start_worker()
    with server.app.session() as db:
        db.add(Batch(name="MR study", source="watcher", status=BatchStatus.DONE))
        db.commit()
    big = series(tmp_path / "big", 6, 1024)  # 2 MB each: more than one request's worth
    huge = tmp_path / "huge.dcm"
    huge.write_bytes(b"\0" * (LIMIT_MB + 1) * 1024 * 1024)
    browser_login(page, server.url)
    page.goto(server.url + "/batches/1")
    page.click("#panel-upload a")
    page.wait_for_url("**/batches/1/upload")
    assert page.locator("#batch-name").count() == 0
    page.set_input_files("#pick-files", [*big, CT_SMALL, huge])
    row = page.locator("#selection-table tr", has_text="huge.dcm")
    assert "Too large" in row.inner_text()
    assert "1 file too large to send" in page.inner_text("#selection-summary")
    save_screenshot(page, "upload-to-batch")
    requests = []
    page.on("request", lambda r: requests.append(r.url) if r.method == "POST" else None)
    page.click("#upload-start")
    page.wait_for_url("**/batches/1", timeout=30_000)
    assert len(requests) >= 2 and all(url.endswith("/batches/1/upload") for url in requests)
    assert page.inner_text("#batch-images").strip() == "7"
    (batch,) = server.batches()
    assert (batch.name, batch.image_count, batch.error_count) == ("MR study", 7, 0)


def test_drop_files_on_the_page(server, page):
    server.start_worker()
    browser_login(page, server.url)
    page.goto(server.url + "/upload")
    payload = [{"name": p.name, "data": base64.b64encode(p.read_bytes()).decode()} for p in (CT_SMALL, MR_SMALL)]
    page.evaluate("""(files) => {
        const transfer = new DataTransfer();
        for (const f of files) {
            const bytes = Uint8Array.from(atob(f.data), c => c.charCodeAt(0));
            transfer.items.add(new File([bytes], f.name, {type: "application/dicom"}));
        }
        const zone = document.getElementById("dropzone");
        for (const type of ["dragenter", "dragover"]) {
            zone.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, bubbles: true, cancelable: true}));
        }
        window.highlighted = zone.classList.contains("over");
        zone.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
    }""", payload)
    assert page.evaluate("window.highlighted") is True
    page.wait_for_selector("#selection:not([hidden])")
    assert "2 files" in page.inner_text("#selection-summary")
    assert not page.locator("#dropzone").evaluate("el => el.classList.contains('over')")
    page.click("#upload-start")
    page.wait_for_url("**/batches/*", timeout=30_000)
    assert page.inner_text("#batch-images").strip() == "2"


def test_cancel_stops_the_upload_and_keeps_nothing(server, page, tmp_path):
    files = series(tmp_path / "slow", 4, 512)  # 2 MB
    browser_login(page, server.url)
    page.goto(server.url + "/upload")
    page.set_input_files("#pick-files", files)
    throttle(page, 200_000)
    page.click("#upload-start")
    page.wait_for_function("() => document.getElementById('overall-progress').value > 0")
    page.click("#upload-cancel")
    error = page.locator("#upload-error")
    error.wait_for()
    assert error.inner_text() == "Upload cancelled: nothing was uploaded."
    assert page.locator("#upload-progress").is_hidden() and page.locator("#upload-start").is_enabled()
    assert page.locator("#selection-table tr.state-cancelled").count() == 4
    assert server.batches() == []
    assert not [p for p in staging_root(server.app.settings).rglob("*") if p.is_file()]


def test_the_plain_form_works_without_javascript(server, browser, tmp_path):
    server.start_worker()
    context = browser.new_context(java_script_enabled=False, viewport={"width": 420, "height": 900})
    page = context.new_page()
    try:
        browser_login(page, server.url)
        page.goto(server.url + "/upload")
        assert page.locator("#native-pickers").is_visible() and page.locator("#dropzone").is_hidden()
        page.fill("#batch-name", "no script")
        page.set_input_files("#pick-files", [CT_SMALL, MR_SMALL])
        save_screenshot(page, "upload-nojs-narrow")
        page.click("#upload-start")
        page.wait_for_url("**/batches/*")
        assert "Uploaded 2 files" in page.inner_text(".flash-success")
        (batch,) = server.batches()
        assert batch.name == "no script"
        page.goto(server.url + "/upload")
        page.click("#upload-start")  # nothing chosen
        assert "No files were selected" in page.inner_text("#upload-error-server")
    finally:
        context.close()
