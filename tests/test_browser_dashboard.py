"""The dashboard plugin's pages in a real (headless) Chromium.

Data comes from real imports (deid-data's dicom-cookies, pydicom's files, a
synthetic CT series); background imports run in a thread against the live
server's database while the page is open.
"""
import shutil
import threading
from pathlib import Path

import deid_data
import pydicom.data
import pytest

from sendit_core.models import Batch, BatchStatus
from sendit_core.pipeline import Ingestor, import_now, iter_files, submit
from sendit_core.synth import SeriesSpec, write_series
from sendit_core.testing import browser_login, save_screenshot, serve

pytestmark = pytest.mark.browser

COOKIES = Path(deid_data.__file__).parent / "data" / "dicom-cookies"


def queue(app, paths, name, **kw):
    factory = app.registry["dbsession_factory"]
    return submit(factory, app.settings, iter_files(paths), batch_name=name, publish=False, **kw)


def run_import(app, submission):
    factory = app.registry["dbsession_factory"]
    import_now(Ingestor(app.settings, app.pm, factory), submission)
    return submission.batch_id


def import_batch(app, paths, name, **kw):
    return run_import(app, queue(app, paths, name, **kw))


def in_background(target):
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def fast_server(make_app):
    """A live server whose pages refresh every second."""
    server = serve(make_app(settings={"sendit.dashboard.refresh_seconds": "1"}))
    yield server
    server.stop()


@pytest.fixture
def showcase(make_app, tmp_path):
    """A server with the kind of batches a data manager sees on a normal day."""
    app = make_app(settings={"sendit.dashboard.refresh_seconds": "1"})
    files = Path(pydicom.data.__file__).parent / "test_files"
    series = tmp_path / "CT_CHEST_2024-05-02"
    write_series(series, SeriesSpec(slices=24, rows=64, columns=64, patient_id="PHANTOM01",
                                    marker=(0.0, 0.0, 70.0)))
    import_batch(app, [series], "CT_CHEST_2024-05-02", source="watcher")
    import_batch(app, [COOKIES], "dicom-cookies", source="upload")
    mixed = tmp_path / "pacs-export-0412"
    mixed.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "MR_truncated.dcm", "README.txt", "rtdose.dcm"):
        shutil.copy(files / name, mixed / name)
    (mixed / "Thumbs.db").write_bytes(b"\0" * 64)
    import_batch(app, [mixed], "pacs-export-0412", source="watcher")
    junk = tmp_path / "scanner-logs"
    junk.mkdir()
    (junk / "session.log").write_text("not an image")
    (junk / "empty.dcm").write_bytes(b"")
    import_batch(app, [junk], "scanner-logs", source="cli")
    queue(app, [COOKIES], "incoming-MR-study", source="watcher")
    server = serve(app)
    yield server
    server.stop()


def scroll_to(page, y):
    page.evaluate(f"window.scrollTo(0, {y})")
    page.wait_for_function(f"() => Math.abs(window.scrollY - {y}) < 2")


# -- the dashboard refreshes in place ---------------------------------------------------


def test_dashboard_refreshes_in_place_keeping_scroll_and_sort(fast_server, page):
    app = fast_server.app
    with app.session() as db:
        db.add_all(Batch(name=f"batch-{n:02d}", status=BatchStatus.DONE, image_count=n) for n in range(40))
        db.commit()
    browser_login(page, fast_server.url)
    page.goto(fast_server.url + "/")
    assert page.locator("[data-live-status]").is_visible()
    page.click("#batches th >> text=Name")  # sorted without a reload
    page.wait_for_url("**/?sort=name&order=asc")
    assert page.get_attribute("#batches th[aria-sort]", "aria-sort") == "ascending"
    page.evaluate("window.notReloaded = true")
    scroll_to(page, 400)
    worker = in_background(lambda: import_batch(app, [COOKIES], "aaa-new"))
    page.wait_for_selector("#batches tbody tr:first-child >> text=aaa-new", timeout=20_000)
    worker.join()
    page.wait_for_function("() => document.getElementById('total-images').textContent.trim() === '787'")
    assert page.evaluate("window.notReloaded") is True
    assert abs(page.evaluate("window.scrollY") - 400) < 2
    assert page.url.endswith("/?sort=name&order=asc")
    th = page.locator("#batches th[aria-sort]")
    assert th.text_content().strip().startswith("Name") and th.get_attribute("aria-sort") == "ascending"
    assert page.locator("[data-live-text]").inner_text().startswith("Updated")


def test_refreshing_pauses_while_the_tab_is_hidden(fast_server, page):
    browser_login(page, fast_server.url)
    page.goto(fast_server.url + "/")
    page.evaluate("""() => {
        window.fetches = 0;
        const real = window.fetch;
        window.fetch = (...args) => { window.fetches++; return real(...args); };
        Object.defineProperty(document, 'hidden', {configurable: true, get: () => window.fakeHidden});
        window.fakeHidden = true;
        document.dispatchEvent(new Event('visibilitychange'));
    }""")
    page.wait_for_timeout(150)
    before = page.evaluate("window.fetches")
    page.wait_for_timeout(2500)
    assert page.evaluate("window.fetches") == before  # nothing while hidden
    page.evaluate("window.fakeHidden = false; document.dispatchEvent(new Event('visibilitychange'))")
    page.wait_for_function("() => window.fetches > %d" % before)  # at once when visible again


def test_sorting_paging_and_filtering_without_reloads_and_with_the_back_button(make_app, page):
    server = serve(make_app(settings={"sendit.page_size": "5", "sendit.dashboard.refresh_seconds": "0"}))
    try:
        with server.app.session() as db:
            db.add_all(Batch(name=f"study-{n:02d}", status=BatchStatus.DONE) for n in range(12))
            db.add(Batch(name="other", status=BatchStatus.EMPTY))
            db.commit()
        browser_login(page, server.url)
        page.goto(server.url + "/")
        page.evaluate("window.notReloaded = true")
        page.click("#batches th >> text=Name")
        page.wait_for_url("**/?sort=name&order=asc")
        assert page.inner_text("#batches tbody tr:first-child td:first-child") == "other"
        page.click("#pager >> text=Next ›")
        page.wait_for_url("**/?sort=name&order=asc&page=2")
        assert page.inner_text("#batches tbody tr:first-child td:first-child") == "study-04"
        page.fill("#q", "study-1")  # filters as one types
        page.wait_for_url("**/?q=study-1&sort=name&order=asc")
        assert page.locator("#batches tbody tr").count() == 2
        page.click(".chips >> text=Empty")
        page.wait_for_selector("text=No batches match these filters")
        page.go_back()
        page.wait_for_url("**/?q=study-1&sort=name&order=asc")
        page.wait_for_function("() => document.querySelectorAll('#batches tbody tr').length === 2")
        assert page.input_value("#q") == "study-1"
        assert page.evaluate("window.notReloaded") is True
        assert page.get_attribute("#batches th[aria-sort]", "aria-sort") == "ascending"
    finally:
        server.stop()


def test_the_sort_links_work_with_the_keyboard(fast_server, page):
    with fast_server.app.session() as db:
        db.add_all([Batch(name="zeta"), Batch(name="alpha")])
        db.commit()
    browser_login(page, fast_server.url)
    page.goto(fast_server.url + "/")
    page.focus("#batches th a[data-focus-key=sort-name]")
    page.keyboard.press("Enter")
    page.wait_for_url("**/?sort=name&order=asc")
    assert page.evaluate("document.activeElement.dataset.focusKey") == "sort-name"  # focus kept
    page.keyboard.press("Enter")
    page.wait_for_url("**/?sort=name&order=desc")
    assert page.inner_text("#batches tbody tr:first-child td:first-child") == "zeta"


# -- the batch page ----------------------------------------------------------------------


def test_batch_page_follows_its_import_then_links_to_images(fast_server, page):
    app = fast_server.app
    submission = queue(app, [COOKIES], "arriving")
    browser_login(page, fast_server.url)
    page.goto(f"{fast_server.url}/batches/{submission.batch_id}")
    assert page.inner_text("#batch-status").strip() == "◷ QUEUED"
    assert page.locator("progress").is_visible()
    page.evaluate("window.notReloaded = true")
    in_background(lambda: run_import(app, submission)).join()
    page.wait_for_function("() => document.getElementById('batch-status').textContent.includes('DONE')")
    page.wait_for_selector("[data-live-text] >> text=Up to date")
    assert page.locator("#images tbody tr").count() == 7
    assert page.evaluate("window.notReloaded") is True
    page.click("#images tbody tr:first-child >> text=View")
    page.wait_for_url("**/images/*")
    assert page.locator("h1").inner_text().startswith("Image ")
    assert page.locator("#header tbody tr").count() > 20


def test_delete_from_the_batch_page(fast_server, page, tmp_path):
    batch_id = import_batch(fast_server.app, [COOKIES], "to-delete")
    browser_login(page, fast_server.url)
    page.goto(f"{fast_server.url}/batches/{batch_id}")
    page.click("text=Delete batch…")
    page.click("button:has-text('Delete this batch')")
    page.wait_for_url(fast_server.url + "/")
    assert "Deleted batch “to-delete”" in page.inner_text(".flash-success")
    assert "No batches yet" in page.inner_text("#live")


# -- how it looks ----------------------------------------------------------------------


def test_screenshots_of_the_pages(showcase, page):
    browser_login(page, showcase.url)
    page.goto(showcase.url + "/")
    page.wait_for_selector("#batches")
    assert page.locator("#batches tbody tr").count() == 5
    save_screenshot(page, "dashboard")
    page.click("#batches >> text=pacs-export-0412")
    page.wait_for_selector("#errors-table")
    save_screenshot(page, "batch")
    page.click("nav[aria-label=Main] >> text=Errors")
    page.wait_for_selector("#errors-table")
    save_screenshot(page, "errors")
    page.click("nav[aria-label=Main] >> text=Settings")
    page.wait_for_selector("#plugins")
    save_screenshot(page, "settings")


def test_pages_fit_a_narrow_screen(showcase, browser):
    context = browser.new_context(viewport={"width": 390, "height": 800})
    tab = context.new_page()
    browser_login(tab, showcase.url)
    for path in ("/", "/batches/3", "/errors", "/settings"):
        tab.goto(showcase.url + path)
        assert tab.evaluate("document.documentElement.scrollWidth") <= 390, path
    tab.goto(showcase.url + "/")
    save_screenshot(tab, "dashboard-narrow")
    context.close()
