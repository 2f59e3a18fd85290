#!/usr/bin/env python
"""Viewer speed: from a click on an image to its planes, for generated CT series.

For each series (512x512x300 by default, and smaller ones) it writes the files
once with ``sendit_core.synth`` (cached under ``$TMPDIR/sendit-bench-corpus``),
imports them into a fresh sendit (SQLite), serves it with waitress on loopback
and measures over HTTP, as the browser asks:

- the image's own slice (``slice.raw``, decoded from its file alone);
- the first three planes on a **cold** cache: own slice + ``volume.json`` (which
  assembles the volume) + the two other planes through the crosshair;
- the same on a **warm** cache (the volume already assembled);
- the whole volume (``volume.raw``), which the browser downloads after that;
- one slice step while scrolling without the whole volume: ``planes/{axis}/{i}``
  for consecutive planes of every axis (mean, p95);

then, in headless Chromium (when Playwright and Debian's chromium are there),
the page itself: time from navigation to the own slice drawn, to all three
planes drawn, to the whole volume loaded, cold and warm, and the time to redraw
the three planes for a new window/level (in the browser, no request).

Orthanc (Debian's ``orthanc``) gets the same files; its ``/instances/{id}/preview``
(a PNG of one slice, rendered on the server) is timed for the same slice, cold
and warm, and for scrolling through consecutive slices.

    .venv/bin/python bench/viewer.py                      # 512x512x300, 512x512x100, 256x256x60
    .venv/bin/python bench/viewer.py --sizes 512x512x300 --no-orthanc --no-browser
"""
from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
PASSWORD = "bench-password-1234"


def corpus(root: Path, rows: int, columns: int, slices: int) -> Path:
    from sendit_core.synth import SeriesSpec, write_series

    folder = root / f"viewer-ct-{rows}x{columns}x{slices}"
    done = root / f"{folder.name}.complete"
    if not done.exists():
        shutil.rmtree(folder, ignore_errors=True)
        started = time.monotonic()
        write_series(folder, SeriesSpec(slices=slices, rows=rows, columns=columns, pixel_spacing=(0.7, 0.7),
                                        slice_spacing=1.0, marker=(0.0, -40.0, 200.0)), shuffle=True)
        done.write_text(str(slices))
        print(f"  generated {slices} files in {time.monotonic() - started:.1f} s: {folder}", flush=True)
    return folder


def make_app(workdir: Path):
    from sendit_core.app import create_app, load_config
    from sendit_core.models import upgrade_schema
    from sendit_core.plugins import get_plugin_manager
    from sendit_core.testing import SenditApp

    url = f"sqlite:///{workdir / 'sendit.sqlite'}"
    upgrade_schema({"sqlalchemy.url": url})
    raw = {"sqlalchemy.url": url, "sendit.var_dir": str(workdir / "var"), "sendit.data_dir": str(workdir / "data"),
           "sendit.storage_dir": str(workdir / "storage"), "sendit.lockdown.password": PASSWORD,
           "sendit.session.secret": "bench-secret-" + "x" * 40, "sendit.db.auto_create": "false",
           "sendit.worker": "external", "here": str(workdir)}
    converted, pm = load_config(raw, here=str(workdir), pm=get_plugin_manager(load_entrypoints=False))
    wsgi = create_app(converted, pm)
    return SenditApp(wsgi, wsgi.registry.settings, pm)


def import_series(app, folder: Path) -> list[int]:
    from sqlalchemy import select

    from sendit_core.models import Image
    from sendit_core.pipeline import Ingestor, import_now, iter_files, submit

    factory = app.registry["dbsession_factory"]
    submission = submit(factory, app.settings, iter_files([folder]), batch_name=folder.name, publish=False)
    import_now(Ingestor(app.settings, app.pm, factory), submission)
    with factory() as db:
        return db.scalars(select(Image.id).where(Image.batch_id == submission.batch_id)
                          .order_by(Image.instance_number)).all()


class Client:
    """Keep-alive HTTP on loopback with HTTP Basic (what a script would use)."""

    def __init__(self, port: int, auth: str | None = None):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}

    def get(self, path: str) -> tuple[float, bytes, http.client.HTTPResponse]:
        started = time.perf_counter()
        self.conn.request("GET", path, headers=self.headers)
        response = self.conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
        return elapsed, body, response

    def close(self):
        self.conn.close()


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def p95(values: list[float]) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]


def first_planes(client: Client, image_id: int) -> dict:
    """What the page does before its three planes are on screen."""
    started = time.perf_counter()
    own, _, _ = client.get(f"/viewer/images/{image_id}/slice.raw")
    _, body, _ = client.get(f"/viewer/images/{image_id}/volume.json")
    info = json.loads(body)
    for axis in (1, 2):
        index = info["shape"][axis] // 2
        client.get(info["urls"]["plane"].replace("AXIS", str(axis)).replace("INDEX", str(index)))
    return {"own": own, "planes": time.perf_counter() - started, "info": info}


def scrolling(client: Client, info: dict, steps: int = 60) -> dict:
    times = {}
    for axis in (0, 1, 2):
        count = info["shape"][axis]
        start = max(0, count // 2 - steps // 2)
        times[axis] = [client.get(info["urls"]["plane"].replace("AXIS", str(axis))
                                  .replace("INDEX", str(i)))[0] for i in range(start, min(count, start + steps))]
    every = [t for values in times.values() for t in values]
    return {"mean": statistics.mean(every), "p95": p95(every),
            "by_axis": {axis: (statistics.mean(v), p95(v)) for axis, v in times.items()}}


def bench_sendit(folder: Path, workdir: Path) -> dict:
    from sendit_core.testing import serve

    app = make_app(workdir)
    started = time.monotonic()
    ids = import_series(app, folder)
    imported = time.monotonic() - started
    middle = ids[len(ids) // 2]
    server = serve(app)
    port = int(server.url.rsplit(":", 1)[1])
    client = Client(port, f"bench:{PASSWORD}")
    try:
        cold = first_planes(client, middle)
        warm = first_planes(client, ids[len(ids) // 3])
        volume_time, body, _ = client.get(cold["info"]["urls"]["volume"])
        scroll = scrolling(client, cold["info"])
        result = {"images": len(ids), "import": imported, "own": cold["own"], "cold": cold["planes"],
                  "build": cold["info"]["build_seconds"], "warm": warm["planes"], "warm_own": warm["own"],
                  "volume": volume_time, "volume_mb": len(body) / 2**20, "scroll": scroll,
                  "middle": middle, "ids": ids, "cache": app.registry["sendit_viewer.cache"]}
        result["browser"] = None
        return result, server, app
    finally:
        client.close()


def bench_browser(server, middle: int, cache) -> dict | None:
    """The real page in headless Chromium: cold and warm."""
    chromium = os.environ.get("SENDIT_TEST_CHROMIUM", "/usr/bin/chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not Path(chromium).exists():
        return None
    from sendit_core.testing import CHROMIUM_ARGS

    results = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(120_000)
        page.goto(server.url + "/login")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_load_state()
        for run in ("cold", "warm"):
            if run == "cold":
                cache.clear()
            page.goto(f"{server.url}/images/{middle}")
            page.wait_for_selector('#viewer[data-ready="true"]')
            page.wait_for_selector('#viewer[data-state="volume"]')
            marks = page.evaluate("""() => { const d = document.getElementById('viewer').dataset;
                return [Number(d.startMs), Number(d.firstMs), Number(d.readyMs), Number(d.volumeMs)]; }""")
            results[run] = dict(zip(("start", "first", "planes", "volume"), (m / 1000 for m in marks)))
        results["window"] = page.evaluate("""() => {
            const v = window.senditViewers[0], times = [];
            for (let n = 0; n < 20; n++) {
                const t = performance.now();
                v.window = {center: 40 + n * 10, width: 400 + n * 20};
                v.views.forEach(view => { if (view.enabled) v.drawView(view); });
                times.push(performance.now() - t);
            }
            times.sort((a, b) => a - b);
            return times[Math.floor(times.length / 2)] / 1000;
        }""")
        browser.close()
    return results


def bench_orthanc(folder: Path, workdir: Path, uids: list[str]) -> dict | None:
    import ingest

    orthanc = ingest.Orthanc(workdir)
    try:
        files = sorted(folder.glob("*.dcm"))
        orthanc.upload(files)
        ids = []
        for uid in uids:
            conn = http.client.HTTPConnection("127.0.0.1", orthanc.port, timeout=60)
            conn.request("POST", "/tools/lookup", body=uid, headers={"Authorization": ingest.AUTH})
            ids.append(json.loads(conn.getresponse().read())[0]["ID"])
            conn.close()
        client = Client(orthanc.port, f"{ingest.USER}:{ingest.PASSWORD}")
        middle = ids[len(ids) // 2]
        cold = client.get(f"/instances/{middle}/preview")[0]
        warm = min(client.get(f"/instances/{middle}/preview")[0] for _ in range(3))
        start = max(0, len(ids) // 2 - 30)
        steps = [client.get(f"/instances/{i}/preview")[0] for i in ids[start:start + 60]]
        client.close()
        return {"cold": cold, "warm": warm, "mean": statistics.mean(steps), "p95": p95(steps)}
    finally:
        orthanc.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["512x512x300", "512x512x100", "256x256x60"],
                        help="series as ROWSxCOLUMNSxSLICES")
    parser.add_argument("--no-orthanc", action="store_true")
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args(argv)
    root = Path(tempfile.gettempdir()) / "sendit-bench-corpus"
    root.mkdir(exist_ok=True)
    has_orthanc = shutil.which("Orthanc") is not None and not args.no_orthanc
    rows = []
    for size in args.sizes:
        r, c, s = (int(v) for v in size.lower().split("x"))
        folder = corpus(root, r, c, s)
        with tempfile.TemporaryDirectory(prefix="sendit-bench-viewer-") as tmp:
            work = Path(tmp)
            print(f"{size}: sendit …", flush=True)
            result, server, app = bench_sendit(folder, work / "sendit")
            try:
                if not args.no_browser:
                    print(f"{size}: Chromium …", flush=True)
                    result["browser"] = bench_browser(server, result["middle"], result["cache"])
            finally:
                server.stop()
                app.close()
            orthanc = None
            if has_orthanc:
                print(f"{size}: Orthanc …", flush=True)
                import pydicom

                uids = [pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID
                        for p in sorted(folder.glob("*.dcm"), key=lambda p: int(
                            pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber))]
                (work / "orthanc").mkdir()
                orthanc = bench_orthanc(folder, work / "orthanc", uids)
        rows.append((size, result, orthanc))
        report(size, result, orthanc)
    print()
    print("| series | own slice | first 3 planes, cold (assembly) | first 3 planes, warm | whole volume | "
          "slice step mean / p95 | Orthanc preview cold / warm | Orthanc step mean / p95 |")
    print("|---|---|---|---|---|---|---|---|")
    for size, result, orthanc in rows:
        scroll = result["scroll"]
        peer = (f"{ms(orthanc['cold'])} / {ms(orthanc['warm'])} | {ms(orthanc['mean'])} / {ms(orthanc['p95'])}"
                if orthanc else "— | —")
        print(f"| {size} | {ms(result['own'])} | {ms(result['cold'])} ({ms(result['build'])}) | "
              f"{ms(result['warm'])} | {ms(result['volume'])} ({result['volume_mb']:.0f} MB) | "
              f"{ms(scroll['mean'])} / {ms(scroll['p95'])} | {peer} |")
    if any(r["browser"] for _, r, _ in rows):
        print()
        print("| series (Chromium) | cache | page ready (script starts) | own slice drawn | 3 planes drawn | "
              "3 planes after the script started | whole volume loaded |")
        print("|---|---|---|---|---|---|---|")
        for size, result, _ in rows:
            b = result["browser"]
            for run in ("cold", "warm") if b else ():
                t = b[run]
                print(f"| {size} | {run} | {ms(t['start'])} | {ms(t['first'])} | {ms(t['planes'])} | "
                      f"{ms(t['planes'] - t['start'])} | {ms(t['volume'])} |")
        print()
        print("Window/level redraw of the three planes in the browser (no request): " +
              ", ".join(f"{size} {ms(r['browser']['window'])}" for size, r, _ in rows if r["browser"]))
    return 0


def report(size: str, result: dict, orthanc: dict | None) -> None:
    scroll = result["scroll"]
    print(f"  imported {result['images']} images in {result['import']:.1f} s")
    print(f"  own slice {ms(result['own'])}; first planes cold {ms(result['cold'])} "
          f"(assembly {ms(result['build'])}), warm {ms(result['warm'])}")
    print(f"  whole volume {ms(result['volume'])} ({result['volume_mb']:.0f} MB)")
    for axis, (mean, high) in scroll["by_axis"].items():
        print(f"  slice step, axis {axis}: mean {ms(mean)}, p95 {ms(high)}")
    if result["browser"]:
        b = result["browser"]
        for run in ("cold", "warm"):
            t = b[run]
            print(f"  Chromium {run}: script starts {ms(t['start'])}, own slice {ms(t['first'])}, "
                  f"planes {ms(t['planes'])}, volume {ms(t['volume'])}")
        print(f"  window/level redraw {ms(b['window'])}")
    if orthanc:
        print(f"  Orthanc preview: cold {ms(orthanc['cold'])}, warm {ms(orthanc['warm'])}, "
              f"step mean {ms(orthanc['mean'])}, p95 {ms(orthanc['p95'])}")


if __name__ == "__main__":
    raise SystemExit(main())
