#!/usr/bin/env python
"""API speed: sendit's /api/ against Orthanc's REST API on the same 200,000 images.

1. Generates (once, cached beside bench/ingest.py's corpora) 200,000 small
   synthetic DICOM files (32x32, 200 series of 1,000 slices, ~110 header
   elements each) with ``sendit_core.synth``.
2. Imports them into a fresh sendit (``sendit import --now``, SQLite, or the
   database given with ``--database-url``) and serves it with ``pserve`` the
   way production.ini does: gunicorn, ``--processes`` server processes (2, one
   per core here) of 4 threads; ``--server waitress`` serves it as
   development.ini does (one process, 4 threads).
3. Uploads the same files into a fresh Orthanc (Debian's package, on loopback).
4. Runs ``wrk`` (Debian's package) for ``--seconds`` each, with 8 connections
   (throughput) and with 1 (one client's latency), on:
   - a random page of 100 images: ``/api/images?page=N&page_size=100`` against
     Orthanc's ``/instances?expand&since=K&limit=100``;
   - a random image's header: ``/api/images/{id}/headers`` against Orthanc's
     ``/instances/{id}/simplified-tags``;
   and prints requests/s, p50 and p99 of each side by side.
5. Times the counts: each filter's first request (counted) and the next one
   (the cached count), and the estimated count of every header value.

    sudo apt-get install wrk orthanc
    .venv/bin/python bench/api.py                           # 200,000 images, both servers
    .venv/bin/python bench/api.py --images 20000 --no-orthanc --seconds 5
"""
from __future__ import annotations

import argparse
import http.client
import json
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import ingest  # noqa: E402  (bench/ingest.py: corpus cache, Orthanc runner, sendit import)

BIN = Path(sys.executable).parent
PASSWORD, AUTH = ingest.PASSWORD, ingest.AUTH  # the same password for both programs
PAGE = 100


def api_corpus(root: Path, files: int) -> Path:
    ingest.CORPORA["api"] = dict(files=files, series=max(1, files // 1000), rows=32, columns=32)
    return ingest.corpus(root, "api", files)


#: how sendit is served: as production.ini does (gunicorn, a process per core), or
#: as development.ini does (waitress, one process); ``--server`` picks
SERVERS = {
    "gunicorn": lambda port, processes, threads=4: [
        "use = egg:gunicorn#main", f"bind = 127.0.0.1:{port}", f"workers = {processes}",
        "worker_class = gthread", f"threads = {threads}", "keepalive = 5"],
    "waitress": lambda port, processes, threads=4: [
        "use = egg:waitress#main", f"listen = 127.0.0.1:{port}", f"threads = {threads}"],
}


def sendit_ini(workdir: Path, port: int, database_url: str | None, server: str = "gunicorn",
               processes: int = 2) -> Path:
    ini = workdir / "sendit.ini"
    ini.write_text("\n".join([
        "[app:main]", "use = egg:sendit",
        f"sqlalchemy.url = {database_url or 'sqlite:///sendit.sqlite'}",
        "sendit.storage_dir = storage", "sendit.var_dir = var", "sendit.data_dir = var/data",
        f"sendit.lockdown.password = {PASSWORD}", "sendit.session.secret = " + "b" * 40,
        "sendit.worker = external", "sendit.db.auto_create = false", ingest.AS_DEPLOYED,
        "", "[server:main]", *SERVERS[server](port, processes),
        "", "[loggers]", "keys = root", "[handlers]", "keys = console", "[formatters]", "keys = plain",
        "[logger_root]", "level = ERROR", "handlers = console",  # not waitress's queue-depth warnings
        "[handler_console]", "class = StreamHandler", "args = (sys.stderr,)", "formatter = plain",
        "[formatter_plain]", "format = %(levelname)s %(name)s %(message)s",
    ]) + "\n")
    return ini


def import_sendit(folder: Path, workdir: Path, database_url: str | None) -> float:
    ini = sendit_ini(workdir, 0, database_url)
    subprocess.run([str(BIN / "sendit"), "initdb", str(ini)], check=True, capture_output=True)
    started = time.monotonic()
    result = subprocess.run([str(BIN / "sendit"), "import", str(ini), str(folder), "--now", "-q"],
                            capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"sendit import failed:\n{result.stdout}\n{result.stderr}")
    if not database_url:
        import sqlite3

        with sqlite3.connect(workdir / "sendit.sqlite") as db:
            db.execute("ANALYZE")
    return time.monotonic() - started


class Sendit:
    """``pserve`` on the bench ini, in its own process (or processes)."""

    def __init__(self, workdir: Path, database_url: str | None, server: str, processes: int):
        self.port = ingest.free_port()
        ini = sendit_ini(workdir, self.port, database_url, server, processes)
        self.log = open(workdir / "pserve.log", "w")
        self.proc = subprocess.Popen([str(BIN / "pserve"), str(ini)], cwd=workdir,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.get("/api/batches?page_size=1")
                return
            except OSError:
                time.sleep(0.3)
        raise SystemExit(f"sendit did not start; see {workdir / 'pserve.log'}")

    def get(self, path: str) -> tuple[float, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        started = time.perf_counter()
        conn.request("GET", path, headers={"Authorization": AUTH})
        response = conn.getresponse()
        body = response.read()
        elapsed = (time.perf_counter() - started) * 1000
        conn.close()
        if response.status != 200:
            raise RuntimeError(f"{path}: {response.status} {body[:200]!r}")
        return elapsed, json.loads(body)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def wrk(port: int, paths: list[str], seconds: int, headers: dict[str, str], workdir: Path,
        connections: int = 8) -> dict:
    """Requests/s, p50 and p99 (ms) of wrk, each request a random path of ``paths``."""
    script = workdir / f"wrk-{port}-{len(paths)}-{random.random():.6f}.lua"
    quoted = ",\n".join(json.dumps(p) for p in paths)
    header_lines = "".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n" for k, v in headers.items())
    script.write_text(f"{header_lines}paths = {{\n{quoted}\n}}\n"
                      "request = function()\n"
                      "  return wrk.format(\"GET\", paths[math.random(#paths)])\nend\n"
                      "done = function(summary, latency, requests)\n"
                      "  io.write(string.format(\"ERRORS %d %d\\n\", summary.errors.status,"
                      " summary.errors.connect + summary.errors.read + summary.errors.timeout))\nend\n")
    result = subprocess.run(["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s",
                             "-s", str(script), f"http://127.0.0.1:{port}"],
                            capture_output=True, text=True, check=True)
    out = result.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1))
    p99 = _ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1))
    bad_status, socket_errors = map(int, re.search(r"ERRORS (\d+) (\d+)", out).groups())
    return {"rps": rps, "p50": p50, "p99": p99, "errors": bad_status + socket_errors}


def runs(name: str, port: int, pages: list[str], headers: list[str], first: str, images: list[str],
         seconds: int, auth: dict[str, str], work: Path) -> dict[str, dict]:
    """The wrk runs of one server: 8 connections, and 1 (a single client's latency).

    ``images`` are one image's summary each, the smallest answer of either
    program: what the web framework and the server cost around any request.
    """
    result = {}
    for connections in (8, 1):
        suffix = "" if connections == 8 else " c1"
        result[f"{name} pages{suffix}"] = wrk(port, pages, seconds, auth, work, connections)
        result[f"{name} headers{suffix}"] = wrk(port, headers, seconds, auth, work, connections)
    result[f"{name} page 1"] = wrk(port, [first], seconds, auth, work)
    result[f"{name} image"] = wrk(port, images, seconds, auth, work)
    return result


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60_000}[unit]


def count_timings(server: Sendit, images: int) -> list[tuple[str, float, float, int, bool]]:
    """(filter, first request ms, second request ms, count, exact) for the counts."""
    _, page = server.get(f"/api/images?page={images // PAGE // 2}&page_size={PAGE}")
    sample = page["results"][0]
    urls = [
        ("all images", "/api/images?page_size=1"),
        ("modality=CT (every image)", "/api/images?modality=CT&page_size=1"),
        ("one series", f"/api/images?series_instance_uid={sample['series_instance_uid']}&page_size=1"),
        ("q=PatientID=SYN0001", "/api/images?q=PatientID%3DSYN0001&page_size=1"),
        ("q=SliceLocation>0 (range)", "/api/images?q=SliceLocation%3E0&page_size=1"),
        ("header values of PatientID", "/api/headers?field=PatientID&page_size=1"),
        ("every header value (estimate)", "/api/headers?page_size=1"),
        ("batches", "/api/batches?page_size=1"),
    ]
    rows = []
    for title, url in urls:
        first, body = server.get(url)
        second, _ = server.get(url)
        rows.append((title, first, second, body["count"], body["count_exact"]))
    return rows


def measure(args, work: Path, folder: Path, files: list[Path], rng: random.Random, pages: int,
            has_orthanc: bool, results: dict) -> list:
    """Import (unless ``work`` holds a finished import), serve, and run wrk on both servers."""
    (work / "sendit").mkdir(parents=True, exist_ok=True)
    if (work / "sendit" / "imported").exists():
        print("sendit: reusing the import in", work / "sendit", flush=True)
    else:
        seconds = import_sendit(folder, work / "sendit", args.database_url)
        (work / "sendit" / "imported").write_text(str(len(files)))
        print(f"sendit: imported {len(files):,} files in {seconds:.0f} s", flush=True)
    server = Sendit(work / "sendit", args.database_url, args.server, args.processes)
    try:
        ids = list(range(1, len(files) + 1))
        page_paths = [f"/api/images?page={rng.randint(1, pages)}&page_size={PAGE}" for _ in range(2000)]
        header_paths = [f"/api/images/{rng.choice(ids)}/headers" for _ in range(2000)]
        auth = {"Authorization": AUTH}
        server.get(page_paths[0])
        image_paths = [f"/api/images/{rng.choice(ids)}" for _ in range(2000)]
        results.update(runs("sendit", server.port, page_paths, header_paths,
                            f"/api/images?page_size={PAGE}", image_paths, args.seconds, auth, work))
        counts = count_timings(server, len(files))
    finally:
        server.stop()
    if has_orthanc:
        (work / "orthanc").mkdir(exist_ok=True)
        orthanc = ingest.Orthanc(work / "orthanc")
        try:
            if (work / "orthanc" / "uploaded").exists():
                print("orthanc: reusing the upload in", work / "orthanc", flush=True)
            else:
                started = time.monotonic()
                orthanc.upload(files)
                (work / "orthanc" / "uploaded").write_text(str(len(files)))
                print(f"orthanc: uploaded {len(files):,} files in {time.monotonic() - started:.0f} s",
                      flush=True)
            instances = orthanc.get("/instances")
            page_paths = [f"/instances?expand&since={(rng.randint(1, pages) - 1) * PAGE}&limit={PAGE}"
                          for _ in range(2000)]
            header_paths = [f"/instances/{rng.choice(instances)}/simplified-tags" for _ in range(2000)]
            image_paths = [f"/instances/{rng.choice(instances)}" for _ in range(2000)]
            results.update(runs("orthanc", orthanc.port, page_paths, header_paths,
                                f"/instances?expand&since=0&limit={PAGE}", image_paths, args.seconds,
                                {"Authorization": AUTH}, work))
        finally:
            orthanc.stop()
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200_000)
    parser.add_argument("--seconds", type=int, default=15, help="duration of each wrk run")
    parser.add_argument("--corpus-dir", type=Path, default=Path(tempfile.gettempdir()) / "sendit-bench-corpus")
    parser.add_argument("--database-url", help="sendit's database (default: a fresh SQLite file); "
                                               "a PostgreSQL database must be empty")
    parser.add_argument("--no-orthanc", action="store_true", help="measure sendit only")
    parser.add_argument("--server", choices=sorted(SERVERS), default="gunicorn",
                        help="serve sendit as production.ini does (gunicorn, default) or as "
                             "development.ini does (waitress, one process)")
    parser.add_argument("--processes", type=int, default=2,
                        help="gunicorn's server processes (default 2: one per core here)")
    parser.add_argument("--workdir", type=Path, help="keep the imported sendit and Orthanc here and reuse "
                                                     "them on the next run (default: a temporary folder)")
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install wrk")
    has_orthanc = shutil.which("Orthanc") is not None and not args.no_orthanc
    print(f"corpus of {args.images:,} files", flush=True)
    folder = api_corpus(args.corpus_dir, args.images)
    files = ingest.corpus_files(folder)
    rng = random.Random(1)
    pages = max(1, len(files) // PAGE)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="sendit-api-bench-") as tmp:
        work = args.workdir or Path(tmp)
        counts = measure(args, work, folder, files, rng, pages, has_orthanc, results)
    database = "PostgreSQL" if args.database_url else "SQLite"
    served = (f"gunicorn, {args.processes} processes" if args.server == "gunicorn"
              else "waitress, 1 process")
    print(f"\nwrk, {args.seconds} s per run, {len(files):,} images ({database}, {served}); "
          "random pages / random images:\n")
    print("| request | connections | sendit req/s | sendit p50 | sendit p99 | Orthanc req/s | Orthanc p50 | Orthanc p99 | req/s sendit/Orthanc |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key, title, connections in (
            ("pages", f"a page of {PAGE} images (random page)", 8),
            ("page 1", f"the first page of {PAGE}", 8),
            ("headers", "one image's header (random image)", 8),
            ("image", "one image's summary (random image)", 8),
            ("pages c1", f"a page of {PAGE} images (random page)", 1),
            ("headers c1", "one image's header (random image)", 1)):
        s, o = results[f"sendit {key}"], results.get(f"orthanc {key}")
        line = f"| {title} | {connections} | {s['rps']:.0f} | {s['p50']:.2f} ms | {s['p99']:.2f} ms |"
        line += (f" {o['rps']:.0f} | {o['p50']:.2f} ms | {o['p99']:.2f} ms | {s['rps'] / o['rps']:.2f}x |"
                 if o else " — | — | — | — |")
        print(line)
    errors = {k: v["errors"] for k, v in results.items() if v["errors"]}
    if errors:
        print(f"\nwrk saw errors (non-2xx or socket): {errors}")
    print("\n| count | first request | next request (cached) | count | exact |")
    print("|---|---|---|---|---|")
    for title, first, second, count, exact in counts:
        print(f"| {title} | {first:.1f} ms | {second:.1f} ms | {count:,} | {'yes' if exact else 'estimate'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
