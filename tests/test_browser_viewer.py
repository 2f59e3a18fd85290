"""The orthogonal viewer in a real Chromium: geometry, crosshair, slices, window/level.

The pictures are checked where people look at them: the canvases' pixels. A
marker sphere at a known patient-space point must appear, white in the bone
window, at the fraction of each plane the patient coordinates give, in series
acquired axially (``sendit_core.synth``, shuffled files, non-square pixels) and
coronally (``sendit_viewer.phantom``), with the same orientation letters.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from sendit_core.synth import SeriesSpec, write_series
from sendit_core.testing import browser_login, save_screenshot, serve
from sendit_viewer.phantom import write_phantom_series

from test_viewer import HOT, build_app, import_batch, planted_dose, series_ids

pytestmark = pytest.mark.browser

TEST_FILES = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent
AXIAL = SeriesSpec(slices=30, rows=64, columns=48, pixel_spacing=(0.8, 1.2), slice_spacing=2.0,
                   origin=(-30.0, -25.0, 10.0), marker=(-4.0, 8.0, 50.0), marker_radius=4.0)
CORONAL = dict(rows=40, columns=44, slices=24, pixel_spacing=(1.5, 1.0), slice_spacing=2.5,
               orientation=(1, 0, 0, 0, 0, -1), centre=(0.0, 0.0, 0.0), marker=(-8.0, 10.0, 12.0),
               marker_radius=4.0, anatomy=False)
LETTERS = {"axial": ("A", "P", "R", "L"), "coronal": ("S", "I", "R", "L"), "sagittal": ("S", "I", "A", "P")}
# patient axis (0 x, 1 y, 2 z) and direction pointing right and down in each view
SCREEN = {"axial": ((0, 1), (1, 1)), "coronal": ((0, 1), (2, -1)), "sagittal": ((1, 1), (2, -1))}


@pytest.fixture(scope="module")
def server(tmp_path_factory, _sqlite_template):
    root = tmp_path_factory.mktemp("browser-viewer")
    app = build_app(root, _sqlite_template)
    write_series(root / "in" / "axial", AXIAL, shuffle=True, seed=7)
    write_phantom_series(root / "in" / "coronal", shuffle=True, seed=8, **CORONAL)
    write_phantom_series(root / "in" / "anatomy", rows=160, columns=160, slices=64, pixel_spacing=(2.2, 2.2),
                         slice_spacing=4.5, marker=(40.0, -30.0, 35.0), marker_radius=6.0, seed=9,
                         description="PHANTOM CHEST-ABDOMEN")
    planted_dose(root / "in" / "dose.dcm", HOT)
    data = {name: series_ids(app, import_batch(app, [root / "in" / name], name))
            for name in ("axial", "coronal", "anatomy", "dose.dcm")}
    for name in ("CT_small.dcm", "examples_rgb_color.dcm", "JPEG-lossy.dcm", "test-SR.dcm", "rtdose.dcm"):
        data[name] = series_ids(app, import_batch(app, [TEST_FILES / name], name))
    live = serve(app)
    live.data = data
    yield live
    live.stop()
    app.close()


def open_viewer(page, server, image_id: int, state: str = "volume", login: bool = True) -> None:
    """Open an image page and wait until the viewer reaches ``state``.

    "planes" is a passing state when the volume is downloaded whole: wait for
    it only where the viewer stays there (no prefetch, one plane, too large)."""
    if login:
        browser_login(page, server.url)
    page.goto(f"{server.url}/images/{image_id}")
    if state == "volume":
        page.wait_for_selector('#viewer[data-state="volume"][data-ready="true"]')
    else:
        page.wait_for_selector(f'#viewer[data-state="{state}"]')


def view(page, name: str) -> dict:
    """A view's drawn rectangle (CSS pixels in its canvas), slice and letters."""
    return page.evaluate("""name => {
        const v = window.senditViewers[0].views.find(v => v.name === name);
        const letters = {};
        for (const edge of ["top", "bottom", "left", "right"]) letters[edge] = v.orient[edge].textContent;
        return {rect: v.rect, axis: v.axis, slice: Number(v.figure.dataset.sliceIndex), letters,
                enabled: v.enabled, note: v.note.hidden ? "" : v.note.textContent};
    }""", name)


def white_centre(page, name: str) -> tuple[float, float] | None:
    """Centre of the white pixels of a view's canvas (CSS pixels), or None."""
    return page.evaluate("""name => {
        const v = window.senditViewers[0].views.find(v => v.name === name);
        const c = v.canvas, ratio = c.width / c.clientWidth;
        const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let sx = 0, sy = 0, n = 0;
        for (let i = 0; i < data.length; i += 4) {
            if (data[i] > 245 && data[i + 1] > 245 && data[i + 2] > 245) {
                const p = i / 4; sx += p % c.width; sy += Math.floor(p / c.width); n++;
            }
        }
        return n ? [(sx / n + 0.5) / ratio, (sy / n + 0.5) / ratio] : null;
    }""", name)


def canvas_digest(page, name: str) -> int:
    return page.evaluate("""name => {
        const c = window.senditViewers[0].views.find(v => v.name === name).canvas;
        const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let h = 0; for (let i = 0; i < data.length; i += 7) h = (h * 31 + data[i]) | 0; return h;
    }""", name)


def choose_window(page, label: str) -> None:
    value = page.evaluate("""label => [...document.querySelectorAll('[data-window] option')]
        .find(o => o.textContent.startsWith(label)).value""", label)
    page.select_option("[data-window]", value)
    page.wait_for_timeout(50)  # one animation frame


def voxel_centres(origin, axes, spacing, shape) -> np.ndarray:
    """Patient points of the 8 corner voxel centres of a volume."""
    corners = []
    for k in (0, shape[0] - 1):
        for j in (0, shape[1] - 1):
            for i in (0, shape[2] - 1):
                corners.append(np.array(origin) + k * spacing[0] * np.array(axes[0])
                               + j * spacing[1] * np.array(axes[1]) + i * spacing[2] * np.array(axes[2]))
    return np.array(corners)


def expected_fraction(corners, steps, counts, marker, axis: int, sign: int) -> float:
    """Where along a screen axis (patient ``axis`` pointing ``sign``) the marker is, 0..1."""
    low, high = corners[:, axis].min() - steps[axis] / 2, corners[:, axis].max() + steps[axis] / 2
    fraction = (marker[axis] - low) / (high - low)
    return fraction if sign > 0 else 1 - fraction


def check_geometry(page, marker, corners, steps) -> None:
    choose_window(page, "BONE")
    for name in ("axial", "coronal", "sagittal"):
        shown = view(page, name)
        top, bottom, left, right = LETTERS[name]
        assert shown["letters"] == {"top": top, "bottom": bottom, "left": left, "right": right}, name
        rect = shown["rect"]
        (rx, rs), (dx, ds) = SCREEN[name]
        extent = corners.max(axis=0) - corners.min(axis=0) + steps
        assert rect["w"] / rect["h"] == pytest.approx(extent[rx] / extent[dx], rel=0.02), name  # the aspect
        centre = white_centre(page, name)
        assert centre is not None, f"no marker in the {name} plane"
        fx = (centre[0] - rect["x"]) / rect["w"]
        fy = (centre[1] - rect["y"]) / rect["h"]
        assert fx == pytest.approx(expected_fraction(corners, steps, None, marker, rx, rs), abs=0.03), name
        assert fy == pytest.approx(expected_fraction(corners, steps, None, marker, dx, ds), abs=0.03), name


def test_the_marker_appears_where_it_is_in_an_axial_series(server, page):
    ids = server.data["axial"]
    marker_slice = round((AXIAL.marker[2] - AXIAL.origin[2]) / AXIAL.slice_spacing)
    open_viewer(page, server, ids[marker_slice])
    assert view(page, "axial")["slice"] == marker_slice  # the image's own slice first
    corners = voxel_centres(AXIAL.origin, [[0, 0, 1], [0, 1, 0], [1, 0, 0]],
                            [AXIAL.slice_spacing, *AXIAL.pixel_spacing], [AXIAL.slices, AXIAL.rows, AXIAL.columns])
    # the crosshair starts at the slice's centre: move it onto the marker
    page.evaluate("m => { const v = window.senditViewers[0]; v.cursor = m; v.draw(); }",
                  [marker_slice, round((AXIAL.marker[1] - AXIAL.origin[1]) / 0.8),
                   round((AXIAL.marker[0] - AXIAL.origin[0]) / 1.2)])
    check_geometry(page, AXIAL.marker, corners, np.array([1.2, 0.8, 2.0]))


def test_the_same_marker_in_a_coronal_acquisition(server, page):
    ids = server.data["coronal"]
    c = CORONAL
    # slices run to the back (y), rows to the feet (-z), columns to the left (x)
    origin = (np.array(c["centre"]) - (c["columns"] - 1) / 2 * c["pixel_spacing"][1] * np.array([1, 0, 0])
              - (c["rows"] - 1) / 2 * c["pixel_spacing"][0] * np.array([0, 0, -1])
              - (c["slices"] - 1) / 2 * c["slice_spacing"] * np.array([0, 1, 0]))
    k = round((c["marker"][1] - origin[1]) / c["slice_spacing"])
    open_viewer(page, server, ids[k])
    assert view(page, "coronal")["slice"] == k and view(page, "axial")["axis"] == 1
    j = round((origin[2] - c["marker"][2]) / c["pixel_spacing"][0])
    i = round((c["marker"][0] - origin[0]) / c["pixel_spacing"][1])
    page.evaluate("m => { const v = window.senditViewers[0]; v.cursor = m; v.draw(); }", [k, j, i])
    corners = voxel_centres(origin, [[0, 1, 0], [0, 0, -1], [1, 0, 0]],
                            [c["slice_spacing"], *c["pixel_spacing"]], [c["slices"], c["rows"], c["columns"]])
    check_geometry(page, c["marker"], corners, np.array([1.0, 2.5, 1.5]))


def test_a_marker_in_a_multiframe_dose(server, page):
    """pydicom's rtdose.dcm with one hot voxel, its frames listed head first."""
    open_viewer(page, server, server.data["dose.dcm"][0])
    k = 14 - HOT[0]  # frames sorted from the feet up
    page.evaluate("m => { const v = window.senditViewers[0]; v.cursor = m; v.draw(); }", [k, HOT[1], HOT[2]])
    choose_window(page, "Full range")
    expected = {"axial": ((HOT[2] + 0.5) / 10, (HOT[1] + 0.5) / 10),
                "coronal": ((HOT[2] + 0.5) / 10, 1 - (k + 0.5) / 15),
                "sagittal": ((HOT[1] + 0.5) / 10, 1 - (k + 0.5) / 15)}
    for name, (ex, ey) in expected.items():
        shown = view(page, name)
        rect = shown["rect"]
        centre = white_centre(page, name)
        assert centre is not None, name
        assert (centre[0] - rect["x"]) / rect["w"] == pytest.approx(ex, abs=0.03), name
        assert (centre[1] - rect["y"]) / rect["h"] == pytest.approx(ey, abs=0.03), name
        assert shown["letters"] == dict(zip(("top", "bottom", "left", "right"), LETTERS[name])), name
    assert view(page, "coronal")["rect"]["w"] / view(page, "coronal")["rect"]["h"] == pytest.approx(100 / 75, rel=0.02)


def test_click_scroll_keys_and_drag(server, page):
    ids = server.data["axial"]
    open_viewer(page, server, ids[5])
    axial, sagittal = view(page, "axial"), view(page, "sagittal")
    assert axial["slice"] == 5
    before = canvas_digest(page, "axial")
    # click a quarter of the way down the sagittal plane: the axial plane follows
    canvas = page.locator('[data-view="sagittal"] canvas')
    rect = sagittal["rect"]
    canvas.click(position={"x": rect["x"] + rect["w"] / 2, "y": rect["y"] + rect["h"] * 0.25})
    expected = AXIAL.slices - 1 - int(0.25 * AXIAL.slices)  # the head is up: slice numbers grow upwards
    page.wait_for_function(f"() => document.querySelector('[data-view=axial]').dataset.sliceIndex == '{expected}'")
    assert canvas_digest(page, "axial") != before
    # the mouse wheel and the keys move through slices
    page.locator('[data-view="axial"] canvas').hover()
    page.mouse.wheel(0, 120)
    page.wait_for_function(f"() => document.querySelector('[data-view=axial]').dataset.sliceIndex == '{expected + 1}'")
    page.mouse.wheel(0, -120)
    page.mouse.wheel(0, -120)
    page.wait_for_function(f"() => document.querySelector('[data-view=axial]').dataset.sliceIndex == '{expected - 1}'")
    page.locator('[data-view="axial"] canvas').focus()
    page.keyboard.press("ArrowUp")
    page.keyboard.press("PageDown")
    page.wait_for_function(f"() => document.querySelector('[data-view=axial]').dataset.sliceIndex == '{expected - 10}'")
    assert re.fullmatch(r"Slice \d+ / 30", page.inner_text('[data-view="axial"] [data-slice]'))
    # dragging changes window/level, in the browser only
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    level_before = page.inner_text("[data-wl]")
    coronal_before = canvas_digest(page, "coronal")
    start = page.locator('[data-view="coronal"] canvas').bounding_box()
    page.mouse.move(start["x"] + 40, start["y"] + 40)
    page.mouse.down()
    page.mouse.move(start["x"] + 100, start["y"] + 70, steps=6)
    page.mouse.up()
    page.wait_for_timeout(50)
    assert page.inner_text("[data-wl]") != level_before
    assert page.input_value("[data-window]") == "custom"
    assert canvas_digest(page, "coronal") != coronal_before
    assert requests == []  # no round trip for window/level or slices
    page.click("[data-reset]")
    assert page.inner_text("[data-wl]") == level_before
    page.wait_for_function("() => document.querySelector('[data-view=axial]').dataset.sliceIndex == '5'")


def test_plane_by_plane_when_the_volume_is_not_downloaded(server, page):
    """Big volumes (over sendit.viewer.prefetch_mb) stay on the server: each slice
    step asks for one plane; a volume that left the cache is assembled again."""
    settings = server.app.settings
    limit = settings["sendit.viewer.prefetch_mb"]
    settings["sendit.viewer.prefetch_mb"] = 0
    try:
        ids = server.data["coronal"]
        open_viewer(page, server, ids[4], state="planes")
        page.wait_for_selector('#viewer[data-ready="true"]')
        planes = []
        page.on("request", lambda r: planes.append(r.url) if "/planes/" in r.url else None)
        page.locator('[data-view="axial"] canvas').hover()
        page.mouse.wheel(0, 120)
        axial = view(page, "axial")
        page.wait_for_function(f"() => document.querySelector('[data-view=axial]').dataset.sliceIndex == "
                               f"'{axial['slice']}' && !document.querySelector('[data-view=axial] [data-slice]')"
                               ".textContent.includes('loading')")
        assert planes and planes[-1].endswith(f"/planes/{axial['axis']}/{axial['slice']}.raw")
        assert page.get_attribute("#viewer", "data-state") == "planes"  # never downloaded whole
        server.app.registry["sendit_viewer.cache"].clear()  # e.g. the series gained an image
        page.mouse.wheel(0, 120)
        page.wait_for_function(f"() => document.querySelector('[data-view=axial]').dataset.sliceIndex == "
                               f"'{axial['slice'] + 1}' && !document.querySelector('[data-view=axial] [data-slice]')"
                               ".textContent.includes('loading')")
        assert page.get_attribute("#viewer", "data-state") == "planes"
        assert page.inner_text("[data-status]").startswith("Volume ready")
    finally:
        settings["sendit.viewer.prefetch_mb"] = limit


def test_pixel_value_under_the_cursor_after_rescale(server, page):
    ids = server.data["CT_small.dcm"]
    ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    values = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    open_viewer(page, server, ids[0], state="planes")
    page.wait_for_selector('#viewer[data-ready="true"]')
    axial = view(page, "axial")
    canvas = page.locator('[data-view="axial"] canvas')
    for fx, fy in ((0.5, 0.5), (0.3, 0.7), (0.05, 0.05)):
        canvas.hover(position={"x": axial["rect"]["x"] + axial["rect"]["w"] * fx,
                               "y": axial["rect"]["y"] + axial["rect"]["h"] * fy})
        text = page.inner_text("[data-readout]")
        column, row = map(int, re.search(r"column (\d+), row (\d+)", text).groups())
        shown = float(re.search(r"value (-?[\d.]+) HU", text).group(1))
        assert shown == pytest.approx(values[row - 1, column - 1]), text
    # a single slice: one plane, the others say why
    for name in ("coronal", "sagittal"):
        other = view(page, name)
        assert not other["enabled"] and other["note"].startswith("A single slice")
    save_screenshot(page, "viewer-single-slice", full_page=False)


def test_the_marker_value_and_patient_position_in_the_readout(server, page):
    ids = server.data["anatomy"]
    open_viewer(page, server, ids[len(ids) // 2])
    # put the crosshair on the marker through the patient point, then hover it
    marker_k = page.evaluate("""() => {
        const v = window.senditViewers[0], info = v.info;
        const m = [40, -30, 35];
        const voxel = [0, 1, 2].map(a => Math.round(
            [0, 1, 2].reduce((s, c) => s + (m[c] - info.origin[c]) * info.axes[a][c], 0) / info.spacing[a]));
        v.cursor = voxel; v.draw(); return voxel;
    }""")
    page.wait_for_timeout(50)
    axial = view(page, "axial")
    point = page.evaluate("k => { const v = window.senditViewers[0]; return v.screenOf(v.views[0], k); }", marker_k)
    page.locator('[data-view="axial"] canvas').hover(position={"x": point["x"], "y": point["y"]})
    text = page.inner_text("[data-readout]")
    assert "value 2000 HU" in text
    x, y, z = map(float, re.search(r"· (-?[\d.]+), (-?[\d.]+), (-?[\d.]+) mm", text).groups())
    assert abs(x - 40) < 2.2 and abs(y + 30) < 2.2 and abs(z - 35) < 4.5
    assert axial["letters"]["left"] == "R"
    page.evaluate("() => window.scrollTo(0, 0)")
    save_screenshot(page, "viewer", full_page=False)


def test_the_header_table_filters_as_one_types(server, page):
    open_viewer(page, server, server.data["axial"][3])  # a small volume: "planes" may pass unseen
    page.fill("#header-filter", "code")
    page.wait_for_function("() => /^\\d+ of \\d+ fields match/.test(document.getElementById('header-count').textContent)")
    shown = page.locator("#header tbody tr:visible")
    texts = [shown.nth(i).inner_text() for i in range(shown.count())]
    assert any(t.strip().lower() == "item 1" for t in texts)  # the items the matches sit in
    assert any("CodeMeaning" in t and "Chest" in t for t in texts)
    assert all("PatientName" not in t for t in texts)
    page.evaluate("() => document.getElementById('header-title').scrollIntoView()")
    save_screenshot(page, "viewer-header", full_page=False)
    page.fill("#header-filter", "")
    assert page.locator("#header tbody tr:visible").count() > 80


def test_colour_images_show_one_plane(server, page):
    open_viewer(page, server, server.data["examples_rgb_color.dcm"][0], state="planes")
    page.wait_for_selector('#viewer[data-ready="true"]')
    assert page.is_hidden("[data-controls]")  # no window/level for colour
    for name in ("coronal", "sagittal"):
        assert view(page, name)["note"] == "Colour images are shown in their own plane only."
    axial = view(page, "axial")
    page.locator('[data-view="axial"] canvas').hover(position={"x": axial["rect"]["x"] + axial["rect"]["w"] / 2,
                                                                "y": axial["rect"]["y"] + axial["rect"]["h"] / 2})
    assert re.search(r"value R \d+ G \d+ B \d+", page.inner_text("[data-readout]"))
    rgb = pydicom.dcmread(TEST_FILES / "examples_rgb_color.dcm").pixel_array
    assert axial["rect"]["w"] / axial["rect"]["h"] == pytest.approx(rgb.shape[1] / rgb.shape[0], rel=0.01)
    save_screenshot(page, "viewer-rgb", full_page=False)


def test_multiframe_dose_and_messages_for_what_cannot_be_shown(server, page):
    open_viewer(page, server, server.data["rtdose.dcm"][0])
    assert all(view(page, name)["enabled"] for name in ("axial", "coronal", "sagittal"))
    assert view(page, "axial")["slice"] == 7
    page.goto(f"{server.url}/images/{server.data['JPEG-lossy.dcm'][0]}")
    page.wait_for_selector('#viewer[data-state="error"]')
    assert "could not be decoded" in page.inner_text("[data-status]")
    assert page.is_hidden("[data-grid]") and page.locator("#header tbody tr").count() > 20
    page.goto(f"{server.url}/images/{server.data['test-SR.dcm'][0]}")
    assert "There is nothing to display" in page.inner_text("#panel-viewer")
    # a volume over the size limit: the image's own slice, and a note saying why
    settings = server.app.settings
    shutil.rmtree(server.app.registry["sendit_viewer.cache"].folder, ignore_errors=True)
    limit = settings["sendit.viewer.max_volume_mb"]
    settings["sendit.viewer.max_volume_mb"] = 0
    try:
        open_viewer(page, server, server.data["coronal"][3], state="planes", login=False)
        page.wait_for_selector('#viewer[data-ready="true"]')
    finally:
        settings["sendit.viewer.max_volume_mb"] = limit
    assert "too large to assemble" in page.inner_text("[data-notes]")
    assert view(page, "coronal")["enabled"] and view(page, "coronal")["slice"] == 0
    assert view(page, "axial")["note"] == "Only this image's own slice is available."


def test_the_header_filter_and_a_narrow_screen(server, browser):
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    try:
        open_viewer(page, server, server.data["anatomy"][20])
        page.fill("#header-filter", "window")
        page.wait_for_function("() => document.getElementById('header-count').textContent.startsWith('3 of')")
        visible = page.locator("#header tbody tr:visible")
        assert visible.count() == 3 and "filter=window" in page.url
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing sticks out
        page.evaluate("() => window.scrollTo(0, 0)")
        save_screenshot(page, "viewer-narrow", full_page=True)
        page.fill("#header-filter", "")
        assert page.locator("#header tbody tr:visible").count() > 40
    finally:
        context.close()
