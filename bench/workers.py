#!/usr/bin/env python
"""Ingest throughput with 1, 2 and 4 `sendit worker` processes on PostgreSQL and RabbitMQ.

The production path: a batch is queued with `sendit import` (no `--now`), then
N worker processes import it; the clock runs from the workers' start until the
batch has no pending file. Each run gets a fresh PostgreSQL database. Uses the
ingest benchmark's cached small corpus (64x64 files, ~110 header elements).

    .venv/bin/python bench/workers.py                       # 4,000 files; 1, 2, 4 workers
    .venv/bin/python bench/workers.py --files 8000 --workers 1 2 3 4
    SENDIT_BENCH_DATABASE_URL=postgresql+psycopg://... SENDIT_BENCH_BROKER_URL=amqp://... bench/workers.py
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, make_url, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import AS_DEPLOYED, BIN, corpus  # noqa: E402  (the same corpus as bench/ingest.py)

DATABASE = os.environ.get("SENDIT_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BROKER = os.environ.get("SENDIT_BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")


def run_once(folder: Path, workers: int, workdir: Path, job_size: int) -> tuple[float, int]:
    admin = create_engine(make_url(DATABASE), isolation_level="AUTOCOMMIT")
    name = f"sendit_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(DATABASE).set(database=name).render_as_string(hide_password=False)
    ini = workdir / "bench.ini"
    ini.write_text("\n".join([
        "[app:main]", "use = egg:sendit", f"sqlalchemy.url = {url.replace('%', '%%')}",
        f"sendit.broker_url = {BROKER}", f"sendit.broker.queue = sendit.bench.{name}",
        "sendit.worker = external", f"sendit.import.job_size = {job_size}",
        f"sendit.storage_dir = {workdir / 'storage'}", f"sendit.var_dir = {workdir / 'var'}",
        "sendit.lockdown.password = bench", AS_DEPLOYED,
    ]) + "\n")
    sendit = str(BIN / "sendit")
    try:
        subprocess.run([sendit, "initdb", str(ini)], check=True, capture_output=True)
        subprocess.run([sendit, "import", str(ini), str(folder), "-q"], check=True, capture_output=True)
        engine = create_engine(url)
        started = time.monotonic()
        procs = [subprocess.Popen([sendit, "worker", str(ini)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for _ in range(workers)]
        try:
            while True:
                with engine.connect() as conn:
                    pending, images = conn.execute(text(
                        "select coalesce(sum(pending_count), 0), coalesce(sum(image_count), 0) from batch"
                    )).one()
                if pending == 0:
                    break
                time.sleep(0.1)
            elapsed = time.monotonic() - started
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(60)
            engine.dispose()
        return elapsed, images
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=4000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--job-size", type=int, default=200, help="files per job (sendit.import.job_size)")
    parser.add_argument("--corpus-dir", type=Path, default=Path(tempfile.gettempdir()) / "sendit-bench-corpus")
    args = parser.parse_args(argv)
    folder = corpus(args.corpus_dir, "small", args.files)
    print(f"{args.files} files of 64x64, PostgreSQL + RabbitMQ, {os.cpu_count()} cores, "
          f"jobs of {args.job_size} files")
    base = None
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as tmp:
            elapsed, images = run_once(folder, workers, Path(tmp), args.job_size)
        rate = images / elapsed
        base = base or rate
        print(f"  {workers} worker(s): {rate:7.1f} files/s  ({images} images in {elapsed:.1f} s, "
              f"x{rate / base:.2f} of one worker)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
