"""Faults on the production path: many workers, a worker killed, the broker and
the database going away, the disk full or read-only. Nothing is lost, nothing
is imported twice, and files that were fine get no error row.

The database and broker outages are played by a TCP proxy the test cuts
(:class:`sendit_core.testing.TcpProxy`): every open connection is reset and new
ones are refused, which is what a restarting server looks like to its clients.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sendit_example
from pydicom.data import get_testdata_file
from sqlalchemy import func, select
from kombu.utils.url import url_to_parts
from sqlalchemy.engine import make_url

from sendit_core.models import (
    Batch, BatchStatus, FileOutcome, Image, IngestError, Job, JobFile,
)
from sendit_core.pipeline import Ingestor, import_now, iter_files, submit, wait_for_batch
from sendit_core.testing import TcpProxy, broker_settings, skip_or_fail, write_ini

SENDIT = str(Path(sys.executable).parent / "sendit")


def example_files(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"{i:04d}.ex").write_bytes(sendit_example.MAGIC + f"uid=1.9.{i}\n".encode())
    return folder


def wait_until(predicate, timeout=60, what="it"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Workers:
    """``sendit worker`` processes on one ini, with their logs."""

    def __init__(self, ini: Path, tmp: Path):
        self.ini, self.tmp, self.processes = ini, tmp, []

    def start(self, count=1, ini=None):
        for _ in range(count):
            log = open(self.tmp / f"worker-{len(self.processes)}.log", "w")
            self.processes.append(subprocess.Popen([SENDIT, "worker", str(ini or self.ini)],
                                                   stdout=log, stderr=subprocess.STDOUT))

    def logs(self) -> str:
        return "\n".join(path.read_text() for path in sorted(self.tmp.glob("worker-*.log")))

    def stop(self):
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def fast_recovery(broker_url, **more):
    return {"sendit.worker": "external", "sendit.import.job_size": "40",
            "sendit.worker.commit_every": "10", "sendit.worker.sweep_seconds": "1",
            "sendit.worker.stale_seconds": "3", **broker_settings(broker_url), **more}


def assert_exactly_once(factory, batch_id, n):
    batch = wait_for_batch(factory, batch_id, timeout=0)
    assert (batch.status, batch.image_count, batch.error_count, batch.pending_count) == \
        (BatchStatus.DONE, n, 0, 0)
    with factory() as db:
        assert db.scalar(select(func.count()).select_from(Image)) == n
        assert db.scalar(select(func.count(func.distinct(Image.sop_instance_uid)))) == n
        assert db.scalar(select(func.count()).select_from(IngestError)) == 0
        assert db.scalar(select(func.count()).where(JobFile.outcome != FileOutcome.IMPORTED)) == 0


def test_three_workers_share_a_batch_and_one_killed_mid_batch_loses_nothing(
        make_app, make_settings, broker_url, tmp_path):
    overrides = fast_recovery(broker_url, **{"sendit.example.delay_ms": "3"})
    app = make_app(builtins=(), plugins=[sendit_example], settings=overrides)
    factory = app.registry["dbsession_factory"]
    workers = Workers(write_ini(tmp_path / "worker.ini", make_settings(overrides)), tmp_path)
    n = 600
    submission = submit(factory, app.settings, iter_files([example_files(tmp_path / "in", n)]))
    workers.start(3)
    try:
        def imported():
            with factory() as db:
                return db.get(Batch, submission.batch_id).image_count

        wait_until(lambda: imported() >= 120, what="a fifth of the batch")
        victim = workers.processes[0]
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        assert imported() < n, "the batch finished before the kill: make it bigger"
        wait_for_batch(factory, submission.batch_id, timeout=120)
    finally:
        workers.stop()
    assert_exactly_once(factory, submission.batch_id, n)
    with factory() as db:
        claimants = db.scalars(select(func.count(func.distinct(Job.claimed_by)))).one()
    assert claimants >= 2, workers.logs()
    stored = [p for p in Path(app.settings["sendit.storage_dir"]).rglob("*") if p.is_file()]
    assert len(stored) == n, "a killed worker leaves no stray file"


@pytest.fixture
def services():
    db, broker = os.environ.get("SENDIT_TEST_DATABASE_URL"), os.environ.get("SENDIT_TEST_BROKER_URL")
    if not db or not broker:
        skip_or_fail("the outage tests need SENDIT_TEST_DATABASE_URL and SENDIT_TEST_BROKER_URL")
    return db, broker


def proxy_for(outage: str, database_url: str, broker_url: str) -> TcpProxy:
    if outage == "database":
        url = make_url(database_url)
        return TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    parts = url_to_parts(broker_url)
    return TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672)


@pytest.mark.parametrize("outage", ["database", "broker"])
def test_an_outage_mid_batch_then_workers_reconnect_and_finish(
        outage, services, make_app, make_settings, database_url, broker_url, tmp_path):
    if not database_url.startswith("postgresql") or broker_url.startswith("filesystem"):
        pytest.skip("outages are played on the production path (PostgreSQL + broker)")
    overrides = fast_recovery(broker_url, **{"sendit.example.delay_ms": "5",
                                              "sendit.worker.stale_seconds": "30"})
    app = make_app(builtins=(), plugins=[sendit_example], settings=overrides)
    factory = app.registry["dbsession_factory"]
    proxy = proxy_for(outage, database_url, broker_url)
    through_proxy = make_settings(overrides)
    key = "sqlalchemy.url" if outage == "database" else "sendit.broker_url"
    through_proxy[key] = proxy.url_for(through_proxy[key])
    workers = Workers(write_ini(tmp_path / "worker.ini", through_proxy), tmp_path)
    n = 300
    submission = submit(factory, app.settings, iter_files([example_files(tmp_path / "in", n)]))
    workers.start(2)
    try:
        def imported():
            with factory() as db:
                return db.get(Batch, submission.batch_id).image_count

        wait_until(lambda: imported() >= 40, what="the import to get going")
        proxy.cut()
        time.sleep(4)
        assert imported() < n, "the batch finished before the outage: make it bigger"
        proxy.restore()
        wait_for_batch(factory, submission.batch_id, timeout=120)
    finally:
        workers.stop()
        proxy.close()
    assert_exactly_once(factory, submission.batch_id, n)
    logs = workers.logs()
    if outage == "database":
        assert "the database is unreachable" in logs and "retrying in" in logs, logs
    else:
        assert "broker connection lost" in logs, logs
    assert all(p.returncode == 0 for p in workers.processes), logs


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB tmpfs as the storage folder (needs root and mount rights)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                            capture_output=True, text=True)
    if result.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def dicom_copies(folder: Path, n: int) -> Path:
    """``n`` distinct copies of pydicom's CT_small.dcm (about 39 KB each)."""
    import pydicom

    folder.mkdir()
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for i in range(n):
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.{i + 1}"
        ds.save_as(folder / f"{i:03d}.dcm")
    return folder


@pytest.mark.parametrize("trouble", ["full", "read-only"])
def test_a_full_or_read_only_disk_gives_clear_errors_and_nothing_half_written(
        trouble, small_disk, make_app, tmp_path):
    app = make_app(settings={"sendit.storage_dir": str(small_disk / "storage")})
    factory = app.registry["dbsession_factory"]
    folder = dicom_copies(tmp_path / "in", 40)  # 1.5 MB: more than the disk holds
    if trouble == "read-only":
        (small_disk / "storage").mkdir(exist_ok=True)
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    submission = submit(factory, app.settings, iter_files([folder]), publish=False)
    import_now(Ingestor(app.settings, app.pm, factory), submission)
    batch = wait_for_batch(factory, submission.batch_id, timeout=0)
    expected = "No space left on device" if trouble == "full" else "Read-only file system"
    with factory() as db:
        messages = db.scalars(select(IngestError.message)).all()
        stored = db.scalars(select(Image.stored_path)).all()
    assert batch.error_count == len(messages) > 0 and batch.pending_count == 0
    assert all(m.startswith("cannot store the file: ") and expected in m for m in messages), messages
    assert batch.image_count + batch.error_count == 40
    if trouble == "read-only":
        assert batch.image_count == 0 and batch.status is BatchStatus.ERROR
    files = [p for p in (small_disk / "storage").rglob("*") if p.is_file()]
    assert len(files) == batch.image_count == len(stored), "every stored file is an image, no temp file"
    sources = {p.name: p.read_bytes() for p in folder.iterdir()}
    import pydicom

    for path in files:  # whole files only
        uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        assert path.read_bytes() in sources.values() and path.name == f"{uid}.dcm"
    assert all(p.exists() for p in folder.iterdir()), "the sources stay for a later retry"
