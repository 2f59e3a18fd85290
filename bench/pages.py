#!/usr/bin/env python
"""Page speed: the dashboard and batch pages rendered on the server at scale.

Fills a fresh SQLite database (the embedded default) with 10,000 batches and
200,000 images, bulk-inserted with SQLAlchemy Core — 9,999 batches of about 18
images and one batch of 20,000 — then times requests through WebTest (the
whole WSGI app: lockdown, session, pyramid_tm, the view, Jinja2) and prints
the mean and the 95th percentile of each. The target is < 100 ms.

    .venv/bin/python bench/pages.py
    .venv/bin/python bench/pages.py --batches 2000 --images 40000 --runs 20
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import insert, text
from webtest import TestApp

from sendit_core.app import create_app, load_config
from sendit_core.models import Batch, BatchStatus, Image, IngestError, get_engine, upgrade_schema
from sendit_core.plugins import get_plugin_manager

PASSWORD = "bench-password"
TARGET_MS = 100
BIG_BATCH = 20_000
STATUSES = [BatchStatus.DONE] * 90 + [BatchStatus.ERROR] * 4 + [BatchStatus.EMPTY] * 3 + \
    [BatchStatus.PROCESSING] * 2 + [BatchStatus.QUEUED]


def fill(engine, batches: int, images: int, seed: int = 1) -> None:
    """Bulk-insert batches, their images and a few errors."""
    rng = random.Random(seed)
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    small = (images - BIG_BATCH) // (batches - 1)
    batch_rows, image_rows, error_rows = [], [], []
    for n in range(1, batches + 1):
        count = BIG_BATCH if n == batches // 2 else small + (1 if n <= (images - BIG_BATCH) % (batches - 1) else 0)
        created = start + timedelta(minutes=17 * n + rng.randint(0, 10))
        status = rng.choice(STATUSES)
        errors = rng.choice([0] * 8 + [1, 3])
        batch_rows.append(dict(
            id=n, name=f"{rng.choice(['CT', 'MR', 'PET', 'US'])}_{rng.choice(['CHEST', 'HEAD', 'ABD'])}_{n:05d}",
            status=status.value, source=rng.choice(["watcher", "upload", "cli"]), image_count=count,
            error_count=errors, pending_count=5 if status in (BatchStatus.QUEUED, BatchStatus.PROCESSING) else 0,
            total_bytes=count * 530_000, created_at=created,
            updated_at=created + timedelta(minutes=rng.randint(1, 600)), finished_at=created))
        series = f"1.2.826.0.1.3680043.10.1234.{n}.1"
        for i in range(1, count + 1):
            image_rows.append(dict(
                batch_id=n, sop_instance_uid=f"{series}.{i}", study_instance_uid=f"1.2.826.0.1.3680043.10.1234.{n}",
                series_instance_uid=series, modality="CT", instance_number=i,
                transfer_syntax_uid="1.2.840.10008.1.2.1", stored_path=f"{n}/study/series/{i}.dcm",
                original_name=f"folder/IMG{i:05d}.dcm", size=530_000 + i, created_at=created))
        error_rows += [dict(batch_id=n, path=f"folder/junk{e}.txt", step="parse",
                            message="not a DICOM file (no parser accepted it)", created_at=created)
                       for e in range(errors)]
    with engine.begin() as conn:
        conn.execute(insert(Batch.__table__), [dict(r, status=r["status"]) for r in batch_rows])
        for chunk in range(0, len(image_rows), 50_000):
            conn.execute(insert(Image.__table__), image_rows[chunk:chunk + 50_000])
        conn.execute(insert(IngestError.__table__), error_rows)
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))


def build_app(folder: Path):
    raw = {
        "sqlalchemy.url": f"sqlite:///{folder / 'sendit.sqlite'}",
        "sendit.var_dir": str(folder / "var"), "sendit.data_dir": str(folder / "data"),
        "sendit.storage_dir": str(folder / "storage"), "sendit.lockdown.password": PASSWORD,
        "sendit.session.secret": "bench-secret-" + "x" * 40, "sendit.worker": "external",
        "sendit.db.auto_create": "false",
    }
    pm = get_plugin_manager(load_entrypoints=False)
    settings, pm = load_config(raw, here=str(folder), pm=pm)
    return create_app(settings, pm), raw


def login(client: TestApp) -> None:
    form = client.get("/login").forms[0]
    form["password"] = PASSWORD
    assert form.submit().status_int == 303


def timed(client: TestApp, url: str, runs: int) -> list[float]:
    client.get(url)  # warm: templates compiled, pages cached
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        client.get(url)
        times.append((time.perf_counter() - started) * 1000)
    return times


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=10_000)
    parser.add_argument("--images", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        settings = {"sqlalchemy.url": f"sqlite:///{folder / 'sendit.sqlite'}"}
        engine = get_engine(settings)
        upgrade_schema(settings, engine)
        started = time.monotonic()
        fill(engine, args.batches, args.images)
        engine.dispose()
        print(f"filled {args.batches:,} batches and {args.images:,} images in "
              f"{time.monotonic() - started:.1f} s (SQLite, {folder / 'sendit.sqlite'})")
        app, _ = build_app(folder)
        client = TestApp(app)
        login(client)
        big, small = args.batches // 2, 7
        pages = [
            ("dashboard", "/"),
            ("dashboard, live refresh (?partial=1)", "/?partial=1"),
            ("dashboard sorted by name", "/?sort=name&order=asc"),
            ("dashboard filtered: status ERROR", "/?status=ERROR"),
            ("dashboard filtered: name contains", "/?q=HEAD_01"),
            ("dashboard, page 150", "/?page=150"),
            (f"batch page ({args.images // args.batches} images)", f"/batches/{small}"),
            (f"batch page ({BIG_BATCH:,} images)", f"/batches/{big}"),
            (f"batch page ({BIG_BATCH:,} images), page 300 by size", f"/batches/{big}?sort=size&page=300"),
            ("errors page", "/errors"),
            ("settings page", "/settings"),
        ]
        print(f"\n{'page':<48} {'mean ms':>8} {'p95 ms':>8}  ({args.runs} requests each, WebTest)")
        worst = 0.0
        for title, url in pages:
            times = timed(client, url, args.runs)
            worst = max(worst, p95(times))
            print(f"{title:<48} {statistics.mean(times):8.1f} {p95(times):8.1f}")
        print(f"\nslowest p95: {worst:.1f} ms (target < {TARGET_MS} ms): "
              f"{'met' if worst < TARGET_MS else 'NOT met'}")
        app.registry.settings["sendit.engine"].dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
