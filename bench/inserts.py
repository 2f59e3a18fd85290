#!/usr/bin/env python
"""What SQLite's share of an import costs, piece by piece: the header values of
4,000 small files written again into fresh databases with sendit's schema, as
the pipeline writes them and with one thing changed (values inserted straight
under the lock, foreign key checks on, a search index left out).

1. Imports the first 4,000 files of ``bench/ingest.py``'s small corpus with
   ``sendit import --now`` (SQLite), and reads back their image and header
   value rows.
2. Writes those rows as the ingest pipeline does (``sendit_core/bulk.py``):
   chunks of 100 files; each chunk's values staged in a temporary table, then
   one transaction with the images one by one and an ``INSERT … SELECT`` of
   the values. Into a fresh database per variant, twice each; prints the CPU
   time a file of the best run, and the part of it spent holding SQLite's
   write lock (what other import processes wait for).

    .venv/bin/python bench/inserts.py
"""
from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import ingest  # noqa: E402  (bench/ingest.py: corpus cache, sendit ini)

VARIANTS = {
    "as the pipeline writes (values staged, no foreign key checks)": dict(),
    "values inserted straight, all under the lock (the pipeline before staging)": dict(staged=False),
    "with foreign key checks": dict(foreign_keys=True),
    "without the text search index": dict(drop=("ix_header_value_field_text",)),
    "without the numeric search index": dict(drop=("ix_header_value_field_num",)),
    "without both search indexes": dict(drop=("ix_header_value_field_text", "ix_header_value_field_num")),
}


def source_rows(work: Path, files: int):
    """Import ``files`` small files; return (schema statements, fields, rows by image)."""
    folder = ingest.corpus(Path(tempfile.gettempdir()) / "sendit-bench-corpus", "small",
                           ingest.CORPORA["small"]["files"])
    some = work / "files"
    some.mkdir()
    for n, path in enumerate(ingest.corpus_files(folder)[:files]):
        (some / f"{n:05d}.dcm").symlink_to(path)
    ini = work / "sendit.ini"
    ini.write_text("\n".join(["[app:main]", "use = egg:sendit", "sqlalchemy.url = sqlite:///sendit.sqlite",
                              "sendit.storage_dir = storage", "sendit.var_dir = var",
                              f"sendit.lockdown.password = {ingest.PASSWORD}", ingest.AS_DEPLOYED]) + "\n")
    subprocess.run([str(ingest.BIN / "sendit"), "initdb", str(ini)], check=True, capture_output=True)
    subprocess.run([str(ingest.BIN / "sendit"), "import", str(ini), str(some), "--now", "-q"],
                   check=True, capture_output=True)
    db = sqlite3.connect(work / "sendit.sqlite")
    schema = [sql for (sql,) in db.execute(
        "SELECT sql FROM sqlite_master WHERE tbl_name IN ('batch', 'image', 'header_field', 'header_value') "
        "AND sql IS NOT NULL ORDER BY type DESC")]  # tables first, then their indexes
    fields = db.execute("SELECT * FROM header_field").fetchall()
    by_image: dict[int, list[tuple]] = {}
    for row in db.execute("SELECT * FROM header_value ORDER BY image_id"):
        by_image.setdefault(row[0], []).append(row)
    db.close()
    return schema, fields, by_image


def write(path: Path, schema: list[str], fields: list[tuple], by_image: dict, *, drop=(),
          foreign_keys: bool = False, staged: bool = True) -> tuple[float, float]:
    """CPU seconds to write every image and its values, 100 images a
    transaction: in all, and holding the write lock."""
    db = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "cache_size=-65536",
                   f"foreign_keys={'ON' if foreign_keys else 'OFF'}"):
        db.execute(f"PRAGMA {pragma}")
    for sql in schema:
        if not any(name in sql for name in drop):
            db.execute(sql)
    db.execute("INSERT INTO batch (id, name, status, source, image_count, error_count, pending_count, "
               "total_bytes, created_at, updated_at) VALUES (1, 'b', 'DONE', 'bench', 0, 0, 0, 0, "
               "'2026-01-01', '2026-01-01')")
    db.executemany(f"INSERT INTO header_field VALUES ({', '.join('?' * len(fields[0]))})", fields)
    db.execute("CREATE TEMP TABLE staged (file_id INTEGER, field_id, item, position, value_text, value_num)")
    db.execute("CREATE TEMP TABLE staged_image (file_id INTEGER PRIMARY KEY, image_id INTEGER)")
    images = sorted(by_image)
    total = locked = 0.0
    for first in range(0, len(images), 100):
        chunk = images[first:first + 100]
        rows = [row for image in chunk for row in by_image[image]]  # keyed by image id = file id here
        started = time.process_time()
        if staged:
            db.execute("BEGIN")
            db.execute("DELETE FROM temp.staged")
            db.execute("DELETE FROM temp.staged_image")
            db.executemany("INSERT INTO temp.staged VALUES (?, ?, ?, ?, ?, ?)", rows)
        lock = time.process_time()
        if not staged:
            db.execute("BEGIN")
        for image in chunk:
            db.execute("INSERT INTO image (id, batch_id, sop_instance_uid, stored_path, size, created_at) "
                       "VALUES (?, 1, ?, ?, 1, '2026-01-01')", (image, f"1.2.{image}", f"1/{image}.dcm"))
        if staged:
            db.executemany("INSERT INTO temp.staged_image VALUES (?, ?)", [(image, image) for image in chunk])
            db.execute("INSERT INTO header_value SELECT i.image_id, v.field_id, v.item, v.position, "
                       "v.value_text, v.value_num FROM temp.staged AS v JOIN temp.staged_image AS i "
                       "USING (file_id)")
        else:
            db.executemany("INSERT INTO header_value VALUES (?, ?, ?, ?, ?, ?)", rows)
        db.execute("COMMIT")
        ended = time.process_time()
        total += ended - started
        locked += ended - lock
    db.close()
    return total, locked


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=4000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sendit-inserts-") as tmp:
        work = Path(tmp)
        schema, fields, by_image = source_rows(work, args.files)
        values = sum(len(rows) for rows in by_image.values())
        print(f"{len(by_image):,} images, {values:,} header values\n")
        print("| how | CPU a file (best of 2) | of which holding the write lock |")
        print("|---|---|---|")
        for n, (title, variant) in enumerate(VARIANTS.items()):
            total, locked = min(write(work / f"v{n}-{attempt}.sqlite", schema, fields, by_image, **variant)
                                for attempt in range(2))
            print(f"| {title} | {total / len(by_image) * 1000:.3f} ms | {locked / len(by_image) * 1000:.3f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
