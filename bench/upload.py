#!/usr/bin/env python
"""Uploads: throughput and server memory of streamed multipart uploads.

Starts sendit in its own process (waitress, a fresh SQLite database, the
in-process worker thread) on loopback, logs in through the form, and sends:

1. one large request (default 1 GiB: 64 generated files of 16 MiB, sent from a
   1 MiB block so the client holds nothing either): seconds, MB/s, and the
   server's resident memory at rest and at its peak (VmHWM);
2. many small real DICOM files in one request (default 2,000 synthetic 64x64
   CT slices): upload files/s, then the time until the worker has imported
   them all (the page's progress endpoint), end to end files/s.

    .venv/bin/python bench/upload.py
    .venv/bin/python bench/upload.py --large-mb 256 --small 500
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from sendit_core.synth import SeriesSpec, write_series

PASSWORD = "bench-password-1234"
BOUNDARY = "----sendit-bench-boundary"
SERVER = """
import sys
from pyramid.paster import get_app
from waitress.server import create_server
app = get_app(sys.argv[1])
server = create_server(app, host="127.0.0.1", port=0, threads=4, max_request_body_size=2 ** 40)
print(server.effective_port, flush=True)
server.run()
"""


def write_ini(folder: Path, large_mb: int) -> Path:
    ini = folder / "bench.ini"
    ini.write_text(f"""[app:main]
use = egg:sendit
sqlalchemy.url = sqlite:///{folder}/sendit.sqlite
sendit.var_dir = {folder}/var
sendit.data_dir = {folder}/data
sendit.storage_dir = {folder}/storage
sendit.lockdown.password = {PASSWORD}
sendit.session.secret = {"s" * 48}
sendit.upload.max_file_mb = 64
sendit.upload.max_request_mb = {large_mb + 64}
sendit.upload.max_files = 100000
""")
    return ini


def rss(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


class Client:
    def __init__(self, port: int):
        self.port = port
        self.cookie = ""

    def call(self, method: str, path: str, body: str | None = None) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        if self.cookie:
            headers["Cookie"] = self.cookie
        conn.request(method, path, body, headers)
        response = conn.getresponse()
        text = response.read().decode()
        if response.getheader("Set-Cookie"):
            self.cookie = response.getheader("Set-Cookie").split(";", 1)[0]
        return response.status, text

    def login(self) -> str:
        _, page = self.call("GET", "/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        self.call("POST", "/login", f"csrf_token={token}&password={PASSWORD}")
        _, page = self.call("GET", "/logout")
        return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)

    def upload(self, token: str, parts) -> dict:
        """``parts``: (name, size, iterator of byte chunks) per file, streamed."""
        parts = list(parts)
        heads = [(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
                  f"Content-Type: application/dicom\r\n\r\n").encode() for name, _, _ in parts]
        tail = f"--{BOUNDARY}--\r\n".encode()
        length = sum(len(h) + size + 2 for h, (_, size, _) in zip(heads, parts)) + len(tail)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        conn.putrequest("POST", "/upload")
        for key, value in {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
                           "Content-Length": str(length), "Cookie": self.cookie, "X-CSRF-Token": token,
                           "Accept": "application/json"}.items():
            conn.putheader(key, value)
        conn.endheaders()
        for head, (_, _, chunks) in zip(heads, parts):
            conn.send(head)
            for chunk in chunks:
                conn.send(chunk)
            conn.send(b"\r\n")
        conn.send(tail)
        response = conn.getresponse()
        body = response.read()
        if response.status != 201:
            raise SystemExit(f"upload refused: {response.status} {body[:300]!r}")
        return json.loads(body)


def generated(size: int, block: bytes):
    left = size
    while left:
        piece = block[:min(left, len(block))]
        yield piece
        left -= len(piece)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large-mb", type=int, default=1024, help="size of the large request (MiB)")
    parser.add_argument("--small", type=int, default=2000, help="small DICOM files in the second request")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sendit-bench-upload-") as tmp:
        folder = Path(tmp)
        ini = write_ini(folder, args.large_mb)
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(ini)], stdout=subprocess.PIPE, text=True)
        try:
            client = Client(int(server.stdout.readline()))
            token = client.login()
            block = os.urandom(1024 * 1024)
            client.upload(token, [("warm/1.dcm", 1024 * 1024, generated(1024 * 1024, block))])
            resting, resting_peak = rss(server.pid)
            count = max(1, args.large_mb // 16)
            started = time.perf_counter()
            client.upload(token, [(f"large/{n:04d}.dcm", 16 * 2**20, generated(16 * 2**20, block))
                                  for n in range(count)])
            seconds = time.perf_counter() - started
            _, peak = rss(server.pid)
            mb = count * 16
            print(f"large request: {mb:,} MiB in {count} files, {seconds:.1f} s, {mb / seconds:.0f} MiB/s; "
                  f"server RSS at rest {resting:.0f} MB (peak so far {resting_peak:.0f} MB), "
                  f"peak after {peak:.0f} MB (+{peak - resting_peak:.0f} MB)")

            files = write_series(folder / "corpus", SeriesSpec(slices=args.small, rows=64, columns=64))
            total = sum(p.stat().st_size for p in files)
            started = time.perf_counter()
            answer = client.upload(token, [(f"small/{p.name}", p.stat().st_size, [p.read_bytes()])
                                           for p in files])
            sent = time.perf_counter() - started
            while True:
                _, text = client.call("GET", urlsplit(answer["progress_url"]).path)
                state = json.loads(text)
                if state["done"]:
                    break
                time.sleep(0.2)
            done = time.perf_counter() - started
            _, peak = rss(server.pid)
            print(f"small files: {len(files):,} files ({total / 2**20:.0f} MiB) uploaded in {sent:.1f} s "
                  f"({len(files) / sent:,.0f} files/s); imported {state['images']:,} "
                  f"({state['errors']} errors) {done:.1f} s after the start "
                  f"({len(files) / done:,.0f} files/s end to end); server peak RSS {peak:.0f} MB")
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
