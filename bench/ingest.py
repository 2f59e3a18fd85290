#!/usr/bin/env python
"""Ingest speed: sendit (`sendit import --now`) against Orthanc on the same files.

Generates (once, cached) two synthetic corpora with pydicom:

- ``ct``:    2,000 CT-like files, 512x512 int16, 10 series, ~90 header elements each;
- ``small``: 20,000 small files, 64x64, 10 series.

For each corpus it imports the files into a fresh sendit (SQLite, the embedded
default) and prints files/s, MB/s, peak RSS of the import process, the header
values stored and the CPU time a file (user + system, the import's processes
together, start-up included); then it starts Orthanc (Debian's ``orthanc``
package) on loopback with its own temporary configuration, uploads the same
files over its REST API with 4 concurrent clients, and prints the ratio
sendit/Orthanc and Orthanc's CPU time a file (the server's alone, not the
uploading clients'). On a shared machine the CPU times move less than the
files/s.

    .venv/bin/python bench/ingest.py                 # both corpora, with Orthanc
    .venv/bin/python bench/ingest.py --corpus small --files 2000 --no-orthanc
    .venv/bin/python bench/ingest.py --repeat 3      # the median of three alternating runs
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
#: sendit as deployed: without the test suite's example plugin, which `make test`
#: installs in the same virtualenv (it opens every imported file and takes an event
#: per image, 0.05-0.1 ms a file that an installation never pays)
AS_DEPLOYED = "sendit.plugins.disabled = example"
#: both programs ask for a password (sendit's lockdown, an Orthanc registered user):
#: any user name and this password for sendit, both for Orthanc
USER = PASSWORD = "bench"
AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
CORPORA = {"ct": dict(files=2000, series=10, rows=512, columns=512),
           "small": dict(files=20000, series=10, rows=64, columns=64)}


def corpus(root: Path, name: str, files: int) -> Path:
    """The corpus folder, generated on first use."""
    from sendit_core.synth import write_corpus

    spec = dict(CORPORA[name], files=files)
    folder = root / f"{name}-{files}-{spec['rows']}"
    done = root / f"{folder.name}.complete"  # outside the folder: it is imported whole
    if not done.exists():
        shutil.rmtree(folder, ignore_errors=True)
        started = time.monotonic()
        count = sum(1 for _ in write_corpus(folder, **spec))
        done.write_text(str(count))
        print(f"  generated {count} files in {time.monotonic() - started:.0f} s: {folder}", flush=True)
    return folder


def corpus_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.dcm"))


#: Runs a command and writes its wall time, peak RSS and CPU times (its child
#: processes included) to a file. A process's peak RSS as the kernel reports it
#: includes the RSS of the process that forked it, at the fork: measured from
#: this script (~130 MB after Orthanc's uploads), it was this script's. From a
#: small launcher, it is the command's own.
LAUNCHER = """
import json, os, sys, time
report, command = sys.argv[1], sys.argv[2:]
started = time.monotonic()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(command[0], command)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
elapsed = time.monotonic() - started
with open(report, "w") as out:
    json.dump([elapsed, usage.ru_maxrss, usage.ru_utime, usage.ru_stime], out)
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def run_measured(cmd: list[str], **kw) -> tuple[float, int, tuple[float, float], subprocess.CompletedProcess]:
    """Run a command; return (seconds, peak RSS in MB, (user, system) CPU seconds, result).

    The CPU time and the peak RSS count the command's child processes too
    (the peak RSS is the largest of one process, not a sum).
    """
    with tempfile.NamedTemporaryFile("r", suffix=".json") as report:
        result = subprocess.run([sys.executable, "-c", LAUNCHER, report.name, *cmd],
                                capture_output=True, text=True, **kw)
        elapsed, maxrss, user, system = json.load(report)
    return elapsed, maxrss // 1024, (user, system), result


def bench_sendit(folder: Path, workdir: Path) -> dict:
    ini = workdir / "sendit.ini"
    ini.write_text("\n".join([
        "[app:main]", "use = egg:sendit",
        "sqlalchemy.url = sqlite:///sendit.sqlite",
        "sendit.storage_dir = storage", "sendit.var_dir = var",
        f"sendit.lockdown.password = {PASSWORD}", AS_DEPLOYED,
    ]) + "\n")
    subprocess.run([str(BIN / "sendit"), "initdb", str(ini)], check=True, capture_output=True)
    elapsed, rss, cpu, result = run_measured([str(BIN / "sendit"), "import", str(ini), str(folder),
                                              "--now", "-q"])
    if result.returncode != 0:
        raise SystemExit(f"sendit import failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    db = sqlite3.connect(workdir / "sendit.sqlite")
    images = db.execute("select count(*) from image").fetchone()[0]
    values = db.execute("select count(*) from header_value").fetchone()[0]
    db.close()
    return {"seconds": elapsed, "rss_mb": rss, "cpu": sum(cpu), "system": cpu[1], "images": images,
            "values": values, "summary": result.stdout.strip()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    """Debian's Orthanc on loopback, with a temporary configuration and storage."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        config = {
            "Name": "sendit-bench", "StorageDirectory": str(workdir / "storage"),
            "IndexDirectory": str(workdir / "index"), "HttpPort": self.port,
            "DicomServerEnabled": False, "RemoteAccessAllowed": False,
            # a password, as sendit's lockdown has: both check one on every request
            "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD},
            "Plugins": [], "StorageCompression": False,
            "HttpThreadsCount": 50, "ConcurrentJobs": 2, "LimitFindResults": 0,
            "LimitFindInstances": 0,
        }
        (workdir / "orthanc.json").write_text(json.dumps(config))
        self.log = open(workdir / "orthanc.log", "w")
        self.proc = subprocess.Popen(["Orthanc", str(workdir / "orthanc.json")],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self._wait()

    def _wait(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.get("/system")
                return
            except OSError:
                time.sleep(0.2)
        raise SystemExit("Orthanc did not start; see " + str(self.workdir / "orthanc.log"))

    def get(self, path: str):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request("GET", path, headers={"Authorization": AUTH})
        body = conn.getresponse().read()
        conn.close()
        return json.loads(body)

    def upload(self, files: list[Path], clients: int = 4) -> float:
        local = threading.local()

        def send(path: Path) -> None:
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            conn.request("POST", "/instances", body=path.read_bytes(),
                         headers={"Content-Type": "application/dicom", "Authorization": AUTH})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"Orthanc refused {path}: {response.status}")

        started = time.monotonic()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(send, files))
        return time.monotonic() - started

    def cpu_seconds(self) -> tuple[float, float]:
        """User and system CPU time Orthanc has used so far."""
        with open(f"/proc/{self.proc.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick

    def rss_mb(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) // 1024
        return 0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def bench_orthanc(files: list[Path], workdir: Path) -> dict:
    orthanc = Orthanc(workdir)
    try:
        before = orthanc.cpu_seconds()
        elapsed = orthanc.upload(files)
        user, system = (b - a for a, b in zip(before, orthanc.cpu_seconds()))
        stats = orthanc.get("/statistics")
        return {"seconds": elapsed, "rss_mb": orthanc.rss_mb(), "cpu": user + system, "system": system,
                "images": stats["CountInstances"]}
    finally:
        orthanc.stop()


def settled(files: list[Path]) -> None:
    """Before a timed run: write every dirty page to disk, so that neither
    program pays for the other's (or the corpus generator's) writeback, and
    read the whole corpus, so that both read it from the page cache.

    The second matters on this build machine, whose host takes page-cache
    pages back from an idle guest (about 10 MB/s, oldest first: ``fincore``
    on the corpus while nothing runs): the program that ran first after a
    pause read part of the corpus from the disk, and the other one found it
    cached. sendit always runs first.
    """
    os.sync()
    time.sleep(1)
    buffer = bytearray(1 << 20)
    for path in files:  # last, so that nothing is taken back meanwhile
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buffer):
                pass


def run_pair(name: str, folder: Path, files: list[Path], megabytes: float, has_orthanc: bool,
             keep: contextlib.ExitStack) -> dict:
    """One timed import by each program, sendit first.

    Each program's storage is kept until the benchmark ends (``keep``): on a
    journal-less ext4, such as this machine's, the kernel skips every inode
    deleted in the last minutes when it makes a new file, so a run that
    followed the deletion of the other's thousands of files would pay for it.
    """
    settled(files)
    s = bench_sendit(folder, Path(keep.enter_context(tempfile.TemporaryDirectory(prefix="sendit-bench-"))))
    print(f"  sendit : {len(files) / s['seconds']:8.1f} files/s {megabytes / s['seconds']:7.1f} MB/s "
          f"peak RSS {s['rss_mb']} MB, {s['images']} images, {s['values']} header values, "
          f"CPU {s['cpu'] * 1000 / len(files):.2f} ms a file ({s['system'] * 1000 / len(files):.2f} system)",
          flush=True)
    row = {"corpus": name, "files": len(files), "mb": megabytes, "sendit": s}
    if has_orthanc:
        settled(files)
        o = bench_orthanc(files, Path(keep.enter_context(tempfile.TemporaryDirectory(prefix="orthanc-bench-"))))
        print(f"  orthanc: {len(files) / o['seconds']:8.1f} files/s {megabytes / o['seconds']:7.1f} MB/s "
              f"peak RSS {o['rss_mb']} MB, {o['images']} instances, "
              f"CPU {o['cpu'] * 1000 / len(files):.2f} ms a file ({o['system'] * 1000 / len(files):.2f} "
              f"system; the server alone)", flush=True)
        print(f"  ratio sendit/orthanc (files/s): {o['seconds'] / s['seconds']:.2f}x", flush=True)
        row["orthanc"] = o
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", choices=[*CORPORA, "all"], default="all")
    parser.add_argument("--files", type=int, help="override the corpus size")
    parser.add_argument("--corpus-dir", type=Path, default=Path(tempfile.gettempdir()) / "sendit-bench-corpus")
    parser.add_argument("--no-orthanc", action="store_true", help="measure sendit only")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="time each corpus N times, the two programs alternating, and print the "
                             "median ratio (a shared machine's speed moves from minute to minute)")
    args = parser.parse_args(argv)
    names = list(CORPORA) if args.corpus == "all" else [args.corpus]
    has_orthanc = shutil.which("Orthanc") is not None and not args.no_orthanc
    if not has_orthanc and not args.no_orthanc:
        print("Orthanc not found (apt-get install orthanc): measuring sendit only")
    keep = contextlib.ExitStack()  # every run's storage, deleted when the benchmark ends
    with keep:
        rows = measure(args, names, has_orthanc, keep)
    print_table(rows, has_orthanc)
    if has_orthanc and args.repeat > 1:
        for name in names:
            ratios = sorted(r["orthanc"]["seconds"] / r["sendit"]["seconds"] for r in rows if r["corpus"] == name)
            print(f"{name}: median ratio {statistics.median(ratios):.2f}x over {len(ratios)} runs "
                  f"({ratios[0]:.2f}x to {ratios[-1]:.2f}x)")
    return 0


def measure(args, names: list[str], has_orthanc: bool, keep: contextlib.ExitStack) -> list[dict]:
    rows = []
    for name in names:
        files_wanted = args.files or CORPORA[name]["files"]
        print(f"[{name}] corpus of {files_wanted} files", flush=True)
        folder = corpus(args.corpus_dir, name, files_wanted)
        files = corpus_files(folder)
        megabytes = sum(p.stat().st_size for p in files) / 2**20
        for n in range(args.repeat):
            if args.repeat > 1:
                print(f" run {n + 1} of {args.repeat}", flush=True)
            rows.append(run_pair(name, folder, files, megabytes, has_orthanc, keep))
    return rows


def print_table(rows: list[dict], has_orthanc: bool) -> None:
    print("\n| corpus | files | MB | sendit files/s | sendit MB/s | sendit peak RSS | header values "
          "| sendit CPU a file |"
          + (" Orthanc files/s | Orthanc peak RSS | Orthanc CPU a file | ratio |" if has_orthanc else ""))
    print("|---|---|---|---|---|---|---|---|" + ("---|---|---|---|" if has_orthanc else ""))
    for row in rows:
        s = row["sendit"]
        line = (f"| {row['corpus']} | {row['files']} | {row['mb']:.0f} | {row['files'] / s['seconds']:.0f} | "
                f"{row['mb'] / s['seconds']:.0f} | {s['rss_mb']} MB | {s['values']} | "
                f"{s['cpu'] * 1000 / row['files']:.2f} ms |")
        if "orthanc" in row:
            o = row["orthanc"]
            line += (f" {row['files'] / o['seconds']:.0f} | {o['rss_mb']} MB | "
                     f"{o['cpu'] * 1000 / row['files']:.2f} ms | {o['seconds'] / s['seconds']:.2f}x |")
        print(line)


if __name__ == "__main__":
    sys.exit(main())
