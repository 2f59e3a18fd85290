"""Standalone `sendit worker` processes: killed mid-batch, nothing is lost or doubled."""
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sendit_example
from sqlalchemy import func, select

from sendit_core.models import Batch, BatchStatus, FileOutcome, Image, JobFile
from sendit_core.pipeline import iter_files, submit, wait_for_batch
from sendit_core.testing import broker_settings, write_ini

SENDIT = str(Path(sys.executable).parent / "sendit")


@pytest.fixture
def setup(make_app, make_settings, broker_url, tmp_path):
    overrides = {"sendit.import.job_size": "25", "sendit.worker.commit_every": "5",
                 "sendit.example.delay_ms": "10", "sendit.worker.sweep_seconds": "2",
                 **broker_settings(broker_url)}
    app = make_app(builtins=(), plugins=[sendit_example], entrypoints=False, settings=overrides)
    ini = write_ini(tmp_path / "worker.ini", make_settings(overrides))
    return app, ini


def start_worker(ini, tmp_path, name):
    log = open(tmp_path / f"{name}.log", "w")
    return subprocess.Popen([SENDIT, "worker", str(ini)], stdout=log, stderr=subprocess.STDOUT)


def wait_until(predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_sigkill_mid_batch_then_a_new_worker_imports_every_file_exactly_once(setup, tmp_path):
    app, ini = setup
    factory = app.registry["dbsession_factory"]
    n = 200
    for i in range(n):
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / f"{i:03d}.ex").write_bytes(sendit_example.MAGIC + f"uid=1.2.{i}\n".encode())
    submission = submit(factory, app.settings, iter_files([tmp_path / "in"]))

    def imported():
        with factory() as db:
            return db.get(Batch, submission.batch_id).image_count

    first = start_worker(ini, tmp_path, "first")
    try:
        assert wait_until(lambda: imported() >= 30), (tmp_path / "first.log").read_text()
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        first.kill()
    assert imported() < n, "the worker finished before it was killed: make the batch bigger"
    second = start_worker(ini, tmp_path, "second")
    try:
        batch = wait_for_batch(factory, submission.batch_id, timeout=60)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(15) == 0
    assert (batch.status, batch.image_count, batch.error_count, batch.pending_count) == \
        (BatchStatus.DONE, n, 0, 0), (tmp_path / "second.log").read_text()
    with factory() as db:
        assert db.scalar(select(func.count()).select_from(Image)) == n
        assert db.scalar(select(func.count(func.distinct(Image.sop_instance_uid)))) == n
        assert db.scalar(select(func.count()).where(JobFile.outcome != FileOutcome.IMPORTED)) == 0
    stored = [p for p in Path(app.settings["sendit.storage_dir"]).rglob("*") if p.is_file()]
    assert len(stored) == n and not any(p.name.startswith(".incoming") for p in stored)
    assert "stopped after" in (tmp_path / "second.log").read_text()


def test_sigterm_lets_a_worker_finish_its_chunk_and_give_the_job_back(setup, tmp_path):
    app, ini = setup
    factory = app.registry["dbsession_factory"]
    for i in range(60):
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / f"{i:03d}.ex").write_bytes(sendit_example.MAGIC + f"uid=1.{i}\n".encode())
    submission = submit(factory, app.settings, iter_files([tmp_path / "in"]))
    worker = start_worker(ini, tmp_path, "w")
    with factory() as db:
        assert wait_until(lambda: db.get(Batch, submission.batch_id, populate_existing=True).image_count > 0)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(15) == 0
    again = start_worker(ini, tmp_path, "again")
    try:
        batch = wait_for_batch(factory, submission.batch_id, timeout=60)
    finally:
        again.send_signal(signal.SIGTERM)
        again.wait(15)
    assert (batch.status, batch.image_count) == (BatchStatus.DONE, 60)
