#!/usr/bin/env python
"""Load on loopback: uploaders and API readers against a live server and workers.

Starts the production path (PostgreSQL, RabbitMQ, `pserve` serving as
production.ini does: gunicorn, 2 server processes of 8 threads; N `sendit
worker` processes; a fresh database), then for `--seconds`:

- `--uploaders` threads each POST batches of `--files-per-upload` DICOM files
  to `/api/batches` (multipart, HTTP Basic), one new batch per upload;
- `--readers` threads GET the API: batch and image lists (random pages), an
  image, its header, a batch.

Then it waits until the workers have imported every uploaded file and prints
requests/s, p50/p99 latency per kind, failed requests, and import files/s.
It exits non-zero if any request failed or any uploaded file is missing.

    .venv/bin/python bench/load.py                      # 8 uploaders, 16 readers, 60 s, 2 workers
    .venv/bin/python bench/load.py --seconds 10 --uploaders 2 --readers 4
"""
from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, make_url, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api import SERVERS  # noqa: E402
from ingest import AS_DEPLOYED, BIN, corpus, corpus_files  # noqa: E402

DATABASE = os.environ.get("SENDIT_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BROKER = os.environ.get("SENDIT_BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
PASSWORD = "load-test-password"
AUTH = "Basic " + base64.b64encode(f"load:{PASSWORD}".encode()).decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = {}
        self.failures: list[str] = []

    def add(self, kind: str, seconds: float, ok: bool, detail: str = "") -> None:
        with self.lock:
            self.latencies.setdefault(kind, []).append(seconds)
            if not ok:
                self.failures.append(f"{kind}: {detail}")


def multipart(files: list[Path], name: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\n{name}\r\n'.encode()]
    for path in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
                     f'filename="{path.name}"\r\nContent-Type: application/dicom\r\n\r\n'.encode())
        parts.append(path.read_bytes() + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def request(port: int, method: str, path: str, body: bytes | None = None,
            content_type: str | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Authorization": AUTH}
    if content_type:
        headers["Content-Type"] = content_type
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--uploaders", type=int, default=8)
    parser.add_argument("--readers", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--server", choices=sorted(SERVERS), default="gunicorn",
                        help="gunicorn with 2 processes of 8 threads, as production.ini (default), "
                             "or one waitress process of 16 threads")
    parser.add_argument("--files-per-upload", type=int, default=10)
    parser.add_argument("--corpus-files", type=int, default=2000, help="files to pick uploads from")
    parser.add_argument("--corpus-dir", type=Path, default=Path(tempfile.gettempdir()) / "sendit-bench-corpus")
    args = parser.parse_args(argv)
    files = corpus_files(corpus(args.corpus_dir, "small", args.corpus_files))

    admin = create_engine(make_url(DATABASE), isolation_level="AUTOCOMMIT")
    name = f"sendit_load_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(DATABASE).set(database=name).render_as_string(hide_password=False)
    port = free_port()
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ini = work / "load.ini"
        ini.write_text("\n".join([
            "[app:main]", "use = egg:sendit", f"sqlalchemy.url = {url.replace('%', '%%')}",
            f"sendit.broker_url = {BROKER}", f"sendit.broker.queue = sendit.load.{name}",
            "sendit.worker = external", "sendit.db.auto_create = false",
            f"sendit.var_dir = {work / 'var'}", f"sendit.storage_dir = {work / 'storage'}",
            f"sendit.data_dir = {work / 'data'}", f"sendit.lockdown.password = {PASSWORD}",
            "sendit.lockdown.max_failures = 1000", AS_DEPLOYED,
            "", "[server:main]",
            *(SERVERS["gunicorn"](port, 2, 8) if args.server == "gunicorn"
              else SERVERS["waitress"](port, 1, 16) + ["connection_limit = 200"]),
        ]) + "\n")
        sendit = str(BIN / "sendit")
        try:
            subprocess.run([sendit, "initdb", str(ini)], check=True, capture_output=True)
            log = open(work / "server.log", "w")
            procs.append(subprocess.Popen([str(BIN / "pserve"), str(ini)], stdout=log, stderr=log))
            procs += [subprocess.Popen([sendit, "worker", str(ini)], stdout=log, stderr=log)
                      for _ in range(args.workers)]
            deadline = time.monotonic() + 30
            while True:
                try:
                    if request(port, "GET", "/api/batches")[0] == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("the server did not start; see " + str(work / "server.log"))
                time.sleep(0.2)
            return run_load(args, port, files, url)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(60)
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


def run_load(args, port: int, files: list[Path], url: str) -> int:
    stats = Stats()
    stop = time.monotonic() + args.seconds
    uploaded = []  # (batch id, files sent)
    lock = threading.Lock()
    ids = {"batches": [], "images": []}
    counts = {"batches": 0, "images": 0}  # from the latest list answers: pages that exist

    def uploader(number: int) -> None:
        rng = random.Random(number)
        round_ = 0
        while time.monotonic() < stop:
            chosen = rng.sample(files, args.files_per_upload)
            body, content_type = multipart(chosen, f"load-{number}-{round_}")
            started = time.monotonic()
            try:
                status, answer = request(port, "POST", "/api/batches", body, content_type)
                ok = status == 201
                detail = f"{status} {answer[:200]!r}"
            except OSError as exc:
                ok, detail = False, repr(exc)
            stats.add("upload", time.monotonic() - started, ok, detail)
            if ok:
                batch_id = json.loads(answer)["batch"]["id"]
                with lock:
                    uploaded.append((batch_id, len(chosen)))
                    ids["batches"].append(batch_id)
            round_ += 1

    def reader(number: int) -> None:
        rng = random.Random(1000 + number)
        while time.monotonic() < stop:
            kind = rng.choice(["batches", "images", "image", "headers", "batch"])
            if kind == "batches":
                path = f"/api/batches?page_size=20&page={rng.randint(1, max(1, -(-counts['batches'] // 20)))}"
            elif kind == "images":
                path = f"/api/images?page_size=50&page={rng.randint(1, max(1, -(-counts['images'] // 50)))}"
            elif kind in ("image", "headers"):
                if not ids["images"]:
                    kind, path = "images", "/api/images?page_size=50"
                else:
                    image_id = rng.choice(ids["images"])
                    path = f"/api/images/{image_id}" + ("/headers" if kind == "headers" else "")
            else:
                if not ids["batches"]:
                    kind, path = "batches", "/api/batches"
                else:
                    path = f"/api/batches/{rng.choice(ids['batches'])}"
            started = time.monotonic()
            try:
                status, answer = request(port, "GET", path)
                ok, detail = status == 200, f"{status} {path} {answer[:200]!r}"
            except OSError as exc:
                ok, detail = False, f"{path} {exc!r}"
            stats.add(kind, time.monotonic() - started, ok, detail)
            if ok and kind in ("batches", "images"):
                listing = json.loads(answer)
                with lock:
                    counts[kind] = max(counts[kind], listing["count"])
                    if kind == "images":
                        ids["images"] = (ids["images"] + [item["id"] for item in listing["results"]])[-500:]

    threads = [threading.Thread(target=uploader, args=(i,)) for i in range(args.uploaders)]
    threads += [threading.Thread(target=reader, args=(i,)) for i in range(args.readers)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started

    sent = sum(n for _, n in uploaded)
    engine = create_engine(url)
    while True:  # the workers finish what was uploaded
        with engine.connect() as conn:
            pending, images = conn.execute(text(
                "select coalesce(sum(pending_count), 0), coalesce(sum(image_count), 0) from batch")).one()
        if pending == 0:
            break
        time.sleep(0.2)
    import_seconds = time.monotonic() - started
    engine.dispose()

    print(f"{args.uploaders} uploaders, {args.readers} API readers, {args.workers} workers, "
          f"{elapsed:.0f} s, {os.cpu_count()} cores")
    total = 0
    for kind in sorted(stats.latencies):
        lat = sorted(stats.latencies[kind])
        total += len(lat)
        p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000  # noqa: E731
        print(f"  {kind:8s} {len(lat):6d} requests {len(lat) / elapsed:7.1f}/s  p50 {p(0.5):7.1f} ms  "
              f"p99 {p(0.99):7.1f} ms")
    print(f"  all      {total:6d} requests {total / elapsed:7.1f}/s; failed: {len(stats.failures)}")
    print(f"  uploaded {sent} files in {len(uploaded)} batches; imported {images} "
          f"({images / import_seconds:.1f} files/s, all imported {import_seconds:.0f} s after the start)")
    for failure in stats.failures[:10]:
        print("  FAILED", failure)
    return 0 if not stats.failures and images == sent else 1


if __name__ == "__main__":
    sys.exit(main())
