"""The Swagger page at /api in a real (headless) Chromium: it loads offline (every
request goes to the app itself), lists the resources, and "Try it out" runs a
call through the logged-in session."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import deid_data
import pydicom.data
import pytest

from sendit_core.pipeline import Ingestor, import_now, iter_files, submit
from sendit_core.testing import browser_login, save_screenshot

pytestmark = pytest.mark.browser

COOKIES = Path(deid_data.__file__).parent / "data" / "dicom-cookies"


def import_batch(app, paths, name):
    factory = app.registry["dbsession_factory"]
    submission = submit(factory, app.settings, iter_files(paths), batch_name=name, publish=False)
    import_now(Ingestor(app.settings, app.pm, factory), submission)


def test_swagger_ui_lists_the_resources_and_tries_a_call(app, live_server, page):
    import_batch(app, [COOKIES], "dicom-cookies")
    import_batch(app, [pydicom.data.get_testdata_file("CT_small.dcm")], "ct-small")
    hosts: set[str] = set()
    page.on("request", lambda request: hosts.add(urlsplit(request.url).netloc))
    browser_login(page, live_server.url)
    page.goto(live_server.url + "/api")
    page.wait_for_selector(".opblock-tag-section")
    save_screenshot(page, "api", full_page=False)
    tags = page.locator(".opblock-tag").all_inner_texts()
    assert [t.split("\n")[0].strip() for t in tags] == ["batches", "images", "headers"]
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    for path in ("/api/batches", "/api/batches/{id}", "/api/images/{id}/headers", "/api/headers"):
        assert any(p.replace("\u200b", "") == path for p in paths), paths

    operation = page.locator("#operations-batches-list_batches")
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    operation.locator("tr[data-param-name='page_size'] input").fill("1")
    operation.get_by_role("button", name="Execute").click()
    status = operation.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for()
    assert status.inner_text().strip() == "200"
    body = operation.locator(".live-responses-table .microlight").first.inner_text()
    assert '"count": 2' in body and '"name": "dicom-cookies"' in body
    page.set_viewport_size({"width": 1280, "height": 900})
    operation.locator(".responses-wrapper").first.evaluate("e => e.scrollIntoView({block: 'start'})")
    save_screenshot(page, "api-try-it-out", full_page=False)
    assert hosts == {urlsplit(live_server.url).netloc}, hosts  # nothing from a CDN or a validator


def test_try_it_out_on_a_call_that_changes_data_sends_the_csrf_token(app, live_server, page):
    import_batch(app, [pydicom.data.get_testdata_file("MR_small.dcm")], "to-delete")
    browser_login(page, live_server.url)
    # no deep link: Swagger UI would open the operation when it gets to it, and
    # a click meant to open it could land just after and close it again
    page.goto(live_server.url + "/api")
    operation = page.locator("#operations-batches-delete_batch")
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    operation.locator("tr[data-param-name='id'] input").fill("1")
    operation.get_by_role("button", name="Execute").click()
    status = operation.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for()
    assert status.inner_text().strip() == "204"
    with app.session() as db:
        from sendit_core.models import Batch

        assert db.get(Batch, 1) is None
