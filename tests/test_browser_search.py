"""The search page and the console in a real (headless) Chromium: typing a query
with the autocompletion, the results, following one to its image page, the form
mode, the groups, an invalid query, a narrow screen; the console reading and
refusing. Screenshots go to docs/screenshots/search*.png and console*.png.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import deid_data
import pytest
from pydicom.data import get_testdata_file
from sqlalchemy import func, select

from sendit_core.models import Image
from sendit_core.pipeline import Ingestor, import_now, iter_files, submit
from sendit_core.synth import SeriesSpec, write_series
from sendit_core.testing import browser_login, save_screenshot, serve
from test_query import write_charset_files

pytestmark = [pytest.mark.browser, pytest.mark.filterwarnings("ignore:Invalid value for VR UI")]
DEID = Path(deid_data.__file__).parent / "data"


def import_batch(app, folder: Path, name: str) -> int:
    factory = app.registry["dbsession_factory"]
    submission = submit(factory, app.settings, iter_files([folder]), batch_name=name, publish=False)
    import_now(Ingestor(app.settings, app.pm, factory), submission)
    return submission.batch_id


@pytest.fixture
def server(make_app, tmp_path, request):
    """A live server with a day's worth of batches: pydicom's files, deid-data's
    humans and cookies, a synthetic CT series and files in other character sets."""
    settings = getattr(request, "param", {})
    app = make_app(settings={"sendit.page_size": "12", **settings})
    pacs = tmp_path / "pacs-export-0412"
    pacs.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "rtplan.dcm", "rtdose.dcm",
                 "examples_overlay.dcm", "SC_rgb_rle.dcm", "waveform_ecg.dcm"):
        shutil.copy(get_testdata_file(name), pacs / name)
    import_batch(app, pacs, "pacs-export-0412")
    chest = tmp_path / "CT_CHEST_2024-05-02"
    write_series(chest, SeriesSpec(slices=16, rows=32, columns=32, patient_id="PHANTOM01",
                                   patient_name="PHANTOM^CHEST", study_date="20240502"))
    import_batch(app, chest, "CT_CHEST_2024-05-02")
    others = tmp_path / "research-misc"
    shutil.copytree(DEID / "humans", others / "humans")
    shutil.copytree(DEID / "dicom-cookies", others / "cookies")
    write_charset_files(others / "charsets")
    import_batch(app, others, "research-misc")
    live = serve(app)
    yield live
    live.stop()


def shot(server, page, name: str, **kw) -> None:
    """Screenshots for docs/: from the embedded default (SQLite) only."""
    if server.app.settings["sqlalchemy.url"].startswith("sqlite"):
        save_screenshot(page, name, **kw)


def suggestions(page) -> list[str]:
    page.wait_for_selector("#q-suggestions:not([hidden]) li")
    return page.locator("#q-suggestions li .text").all_inner_texts()


def test_type_a_query_with_autocompletion_then_open_an_image(server, page):
    browser_login(page, server.url)
    page.goto(server.url + "/search")
    box = page.locator("#q")
    box.click()
    box.type("Patie")
    fields = suggestions(page)
    assert "PatientName" in fields and "PatientID" in fields
    assert box.get_attribute("aria-expanded") == "true"
    while page.locator("#q-suggestions li[aria-selected=true] .text").count() == 0 or \
            page.locator("#q-suggestions li[aria-selected=true] .text").inner_text() != "PatientName":
        page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")  # takes the suggestion, does not submit
    assert box.input_value() == "PatientName="
    box.type("Comp")
    page.locator("#q-suggestions li", has_text="CompressedSamples^CT1").wait_for()
    assert suggestions(page) == ["CompressedSamples^CT1", "CompressedSamples^MR1",
                                 "CompressedSamples^NM1"]
    shot(server, page, "search-autocomplete", full_page=False)
    page.locator("#q-suggestions li", has_text="CompressedSamples^CT1").click()
    assert box.input_value() == "PatientName=CompressedSamples^CT1 "
    box.type("OR PatientName~=phantom^* StudyDate>=2004")
    page.keyboard.press("Escape")
    page.keyboard.press("Enter")
    page.wait_for_selector("#results")
    assert "q=PatientName%3DCompressedSamples%5ECT1" in page.url  # a bookmark
    heading = page.locator("#results-title").inner_text()
    assert heading == "17 images match", heading
    shot(server, page, "search")
    page.locator("#results .view-link").last.click()
    page.wait_for_load_state()
    assert "/images/" in page.url
    assert page.locator("h1").inner_text().startswith("Image ")


def test_fields_list_groups_and_the_form(server, page):
    browser_login(page, server.url)
    page.goto(server.url + "/search")
    page.locator("details.fields summary").click()
    page.locator("a[data-insert='Modality']").click()
    assert page.locator("#q").input_value() == "Modality="
    page.locator("#q").type("CT")
    page.locator("#search-form button[type=submit]").click()
    page.wait_for_selector("#results")
    page.locator(".group-tabs a", has_text="Series").click()
    page.wait_for_selector("#groups")
    assert "q=Modality%3DCT&group=series" in page.url
    assert page.locator("#groups tbody tr").count() == 3  # CT_small, the phantom, ctbrain1
    shot(server, page, "search-series")
    page.locator("#groups tbody tr", has_text="PHANTOM").locator("a", has_text="Images").click()
    page.wait_for_selector("#results")
    assert page.locator("#results-title").inner_text() == "16 images match"

    page.goto(server.url + "/search?mode=form")
    page.fill("#f0", "Modality")
    page.select_option("#op0", "=")
    page.fill("#v0", "MR")
    page.click("button[name=add]")
    page.wait_for_selector("#f1")
    page.fill("#f1", "PatientSex")
    page.select_option("#op1", "!=")
    page.fill("#v1", "M")
    page.click("#search-form button.primary")
    page.wait_for_selector("#results")
    assert "mode=form" in page.url
    assert page.locator(".form-actions code").inner_text() == "Modality=MR PatientSex!=M"
    shot(server, page, "search-form")


def test_an_invalid_query_and_a_narrow_screen(server, page):
    browser_login(page, server.url)
    page.goto(server.url + "/search?q=" + "Modality%3DCT%20StudyDate%3E%3D2024%20PatientNme%3DDOE")
    alert = page.locator("#q-error")
    assert "did you mean PatientName" in alert.inner_text()
    assert page.locator("#q-error mark").inner_text() == "PatientNme"
    assert page.locator("#q").get_attribute("aria-invalid") == "true"
    shot(server, page, "search-error", full_page=False)
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(server.url + "/search?q=has%3APatientName")
    page.wait_for_selector("#results")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, overflow
    shot(server, page, "search-narrow", full_page=False)


@pytest.mark.parametrize("server", [{"sendit.console.enabled": "true"}], indirect=True)
def test_the_console_reads_and_refuses(server, page):
    browser_login(page, server.url)
    page.goto(server.url + "/console")
    assert page.locator("aside.schema").inner_text().count("header_value") >= 1
    page.locator("a[data-sql]", has_text="Images per modality").click()
    assert "GROUP BY modality" in page.locator("#sql").input_value()
    page.locator("#sql").press("Control+Enter")
    page.wait_for_selector("#console-rows")
    cells = page.locator("#console-rows tbody tr").first.locator("td").all_inner_texts()
    with server.app.session() as db:
        ct = db.scalar(select(func.count()).select_from(Image).where(Image.modality == "CT"))
    assert cells == ["CT", str(ct)], cells
    shot(server, page, "console")
    page.fill("#sql", "DELETE FROM batch")
    page.click("#console-form button[type=submit]")
    assert "DELETE statements are refused" in page.locator("#console-error").inner_text()
    shot(server, page, "console-refused", full_page=False)
