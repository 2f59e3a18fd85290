"""The watcher plugin: real watchdog on temporary folders, real DICOM files,
real ``sendit watcher`` processes (foreground ``run`` and the daemon), an
in-test worker thread importing what the watcher hands over."""
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pydicom.data
import pytest
from sqlalchemy import func, select
from webtest import TestApp

from sendit_core.ingest import ingest_sources
from sendit_core.settings import SettingsError
from sendit_core.models import Batch, BatchStatus, FileOutcome, Image, IngestError, Job, JobFile
from sendit_core.pipeline import Ingestor
from sendit_core.synth import SeriesSpec, write_series
from sendit_core.testing import broker_settings, browser_login, login, save_screenshot, serve, write_ini
from sendit_core.worker import Worker
from sendit_watcher import folders
from sendit_watcher.daemon import WatcherSource
from sendit_watcher.pidfile import PidFile, AlreadyRunning, check, is_watcher_cmdline
from sendit_watcher.watcher import WatcherError, check_data_dir

SENDIT = str(Path(sys.executable).parent / "sendit")
CT_SMALL = pydicom.data.get_testdata_file("CT_small.dcm")
FINISHED = (BatchStatus.DONE, BatchStatus.EMPTY, BatchStatus.ERROR)


def wait_until(predicate, timeout=30.0, what="the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def dicoms(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` small real DICOM files (one synthetic CT series)."""
    return write_series(folder, SeriesSpec(slices=count, rows=8, columns=8), seed=seed)


@dataclass
class Env:
    """An app (database, settings), its ini file for the commands, and the
    watcher processes this test started."""

    app: object
    ini: Path
    tmp: Path
    processes: list = field(default_factory=list)

    @property
    def settings(self):
        return self.app.settings

    @property
    def data(self) -> Path:
        return Path(self.settings["sendit.data_dir"])

    @property
    def pid_file(self) -> Path:
        return Path(self.settings["sendit.watcher.pid_file"])

    @property
    def factory(self):
        return self.app.registry["dbsession_factory"]

    def log(self) -> str:
        path = Path(self.settings["sendit.watcher.log_dir"]) / "watcher.log"
        return path.read_text() if path.exists() else ""

    def error_log(self) -> str:
        path = Path(self.settings["sendit.watcher.log_dir"]) / "watcher-error.log"
        return path.read_text() if path.exists() else ""

    def wait_for_log(self, text: str, timeout: float = 20, count: int = 1) -> None:
        wait_until(lambda: self.log().count(text) >= count, timeout, f"{text!r} in the watcher log:\n"
                   + self.log())

    def sendit(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
        result = subprocess.run([SENDIT, "watcher", *args, str(self.ini)], capture_output=True,
                                text=True, timeout=timeout)
        if args[0] == "start" and result.returncode == 0:
            self.processes.append(int(self.pid_file.read_text()))
        return result

    def run(self) -> subprocess.Popen:
        """``sendit watcher run INI`` in the foreground; returns once it watches."""
        before = self.log().count("STARTED:")
        output = open(self.tmp / f"watcher-run-{len(self.processes)}.out", "w")
        process = subprocess.Popen([SENDIT, "watcher", "run", str(self.ini)], stdout=output,
                                   stderr=subprocess.STDOUT)
        self.processes.append(process)
        wait_until(lambda: self.log().count("STARTED:") > before or process.poll() is not None, 60,
                   "the watcher to start")
        assert process.poll() is None, Path(output.name).read_text()
        return process

    def batches(self) -> list[Batch]:
        with self.factory() as db:
            return db.scalars(select(Batch).order_by(Batch.id)).all()

    def batch(self, name: str, timeout: float = 30, images: int | None = None) -> Batch:
        """Wait until batch ``name`` is finished (with ``images`` images); return it."""
        def done():
            found = [b for b in self.batches() if b.name == name]
            if found and found[-1].status in FINISHED and found[-1].pending_count == 0 and \
                    (images is None or found[-1].image_count >= images):
                return found[-1]
            return None

        return wait_until(done, timeout, f"batch {name!r} to be imported ({self.batches()}); log:\n"
                          + self.log())

    def job_files(self, batch_id: int) -> list[tuple[str, FileOutcome]]:
        with self.factory() as db:
            return db.execute(select(JobFile.name, JobFile.outcome).join(Job, Job.id == JobFile.job_id)
                              .where(Job.batch_id == batch_id).order_by(JobFile.id)).all()

    def cleanup(self) -> None:
        for process in self.processes:
            if isinstance(process, subprocess.Popen):
                if process.poll() is None:
                    process.kill()
                process.wait(10)
            else:  # a daemon's pid
                try:
                    if is_watcher_cmdline(Path(f"/proc/{process}/cmdline").read_bytes()
                                          .decode().split("\0")):
                        os.kill(process, signal.SIGKILL)
                except (OSError, ValueError):
                    pass


@pytest.fixture(autouse=True)
def _no_dead_log_handlers():
    """Worker threads here log through the root logger: drop handlers an earlier
    test left on a stream that pytest has closed since (``sendit initdb`` run
    in-process configures logging from the ini onto the captured stderr)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.StreamHandler) and getattr(handler.stream, "closed", False):
            root.removeHandler(handler)


@pytest.fixture
def make_env(make_app, make_settings, broker_url, tmp_path):
    envs = []

    def factory(**overrides):
        raw = {"sendit.worker": "external", "sendit.watcher.settle_seconds": "0.5",
               "sendit.worker.sweep_seconds": "1", **broker_settings(broker_url)}
        raw.update({key: str(value) for key, value in overrides.items()})
        app = make_app(settings=raw)
        ini = write_ini(tmp_path / "watcher.ini", make_settings(raw))
        env = Env(app, ini, tmp_path)
        envs.append(env)
        return env

    yield factory
    for env in envs:
        env.cleanup()


@pytest.fixture
def env(make_env):
    return make_env()


@pytest.fixture
def worker(env):
    """A worker thread importing whatever the watcher queues."""
    running = Worker(env.settings, env.app.pm, env.factory, heartbeat_every=1)
    thread = threading.Thread(target=running.run, name="test-worker", daemon=True)
    thread.start()
    yield running
    running.stop()
    thread.join(15)


def count_images(env) -> tuple[int, int]:
    with env.factory() as db:
        return (db.scalar(select(func.count()).select_from(Image)),
                db.scalar(select(func.count(func.distinct(Image.sop_instance_uid)))))


# -- folders become batches -----------------------------------------------------------------


@pytest.mark.parametrize("polling", [False, True], ids=["inotify", "polling"])
def test_a_tmp_folder_renamed_to_its_final_name_becomes_one_batch(make_env, polling):
    env = make_env(**{"sendit.watcher.polling": str(polling).lower()})
    running = _start_worker(env)
    try:
        env.run()
        staging = env.data / "x.tmp1"
        staging.mkdir()
        dicoms(staging, 6)
        env.wait_for_log(f"NOTFINISHED: {staging}")
        time.sleep(1.0)  # settled long ago, but unfinished: nothing happens
        assert env.batches() == []
        staging.rename(env.data / "x")
        batch = env.batch("x", images=6)
    finally:
        _stop_worker(*running)
    assert (batch.name, batch.source, batch.status, batch.image_count, batch.error_count) == \
        ("x", "watcher", BatchStatus.DONE, 6, 0)
    assert [b.name for b in env.batches()] == ["x"]
    # the worker may finish the batch before the watcher has written the line it
    # writes after queueing it: wait for the line, then read the whole log
    env.wait_for_log(f"IMPORTING: {env.data / 'x'} -> new batch 'x'")
    log = env.log()
    for line in (f"CREATE EVENT: {staging}", f"NOTFINISHED: {staging}",
                 f"MOVED EVENT: {staging} -> {env.data / 'x'}", f"FINISHED: {env.data / 'x'}",
                 f"IMPORTING: {env.data / 'x'} -> new batch 'x'"):
        assert line in log, log
    assert env.error_log() == ""


def _start_worker(env):
    running = Worker(env.settings, env.app.pm, env.factory, heartbeat_every=1)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    return running, thread


def _stop_worker(running, thread):
    running.stop()
    thread.join(15)


def test_a_folder_staged_elsewhere_and_moved_in_is_imported(env, worker, tmp_path):
    env.run()
    staged = tmp_path / "stage" / "CT_study"
    dicoms(staged / "series1", 3)
    shutil.copy(CT_SMALL, staged / "CT_small.dcm")
    os.rename(staged, env.data / "CT_study")
    (env.data / "stray.dcm").write_bytes(Path(CT_SMALL).read_bytes())  # not in a folder
    (env.data / ".hidden").mkdir()
    batch = env.batch("CT_study", images=4)
    env.wait_for_log(f"IGNORED: {env.data / 'stray.dcm'} (a file, not a folder")
    env.wait_for_log(f"IGNORED: {env.data / '.hidden'} (hidden)")
    assert [b.name for b in env.batches()] == ["CT_study"]
    assert (batch.image_count, batch.error_count, batch.status) == (4, 0, BatchStatus.DONE)
    assert sorted(name for name, _ in env.job_files(batch.id)) == [
        "CT_study/CT_small.dcm", "CT_study/series1/00000.dcm", "CT_study/series1/00001.dcm",
        "CT_study/series1/00002.dcm"]
    assert f"CREATE EVENT: {env.data / 'CT_study'}" in env.log()


def test_files_written_slowly_into_a_finished_folder_make_one_batch(make_env, tmp_path):
    env = make_env(**{"sendit.watcher.settle_seconds": "1.5"})
    running = _start_worker(env)
    try:
        env.run()
        sources = dicoms(tmp_path / "source", 8)
        target = env.data / "slow"
        target.mkdir()
        for path in sources:  # a slow copy, straight into the finished folder
            time.sleep(0.2)
            shutil.copy(path, target / path.name)
        batch = env.batch("slow", images=8)
    finally:
        _stop_worker(*running)
    assert [(b.name, b.image_count) for b in env.batches()] == [("slow", 8)]
    assert len(env.job_files(batch.id)) == 8
    env.wait_for_log(f"IMPORTING: {target}")  # written after the queueing, maybe after the import
    assert env.log().count(f"IMPORTING: {target}") == 1, env.log()


def test_folders_that_arrive_while_the_watcher_is_stopped_are_imported_at_the_next_start(env, worker):
    dicoms(env.data / "early", 3)
    started = env.sendit("start")
    assert started.returncode == 0, started.stderr
    assert "watcher started (pid" in started.stdout
    early = env.batch("early", images=3)
    stopped = env.sendit("stop")
    assert (stopped.returncode, stopped.stdout.strip()) == (0, f"watcher stopped (pid {env.processes[-1]})")
    assert not env.pid_file.exists()

    dicoms(env.data / "late", 4, seed=1)
    dicoms(env.data / "unfinished.tmp42", 2, seed=2)
    assert env.sendit("start").returncode == 0
    late = env.batch("late", images=4)
    env.wait_for_log(f"SKIPPED: {env.data / 'early'}")
    assert (late.image_count, late.status) == (4, BatchStatus.DONE)
    assert len(env.job_files(early.id)) == 3  # not handed over a second time
    assert sorted(b.name for b in env.batches()) == ["early", "late"]
    assert f"NOTFINISHED: {env.data / 'unfinished.tmp42'}" in env.log()
    assert env.sendit("stop").returncode == 0


def test_new_files_in_an_imported_folder_go_into_its_batch_live_and_after_a_restart(env, worker):
    # staged first: moved in later, these files keep times older than the batch's
    moved_live, moved_while_down = env.tmp / "stage" / "c", env.tmp / "stage" / "d"
    dicoms(moved_live, 2, seed=6)
    dicoms(moved_while_down, 2, seed=7)
    process = env.run()
    folder = env.data / "grows"
    dicoms(folder / "a", 2)
    first = env.batch("grows", images=2)
    dicoms(folder / "b", 3, seed=5)  # written in place
    env.batch("grows", images=5)
    env.wait_for_log(f"CHANGED: {folder}")
    os.rename(moved_live, folder / "c")  # a sub-folder moved in
    env.batch("grows", images=7)
    process.send_signal(signal.SIGTERM)
    assert process.wait(15) == 0
    os.rename(moved_while_down, folder / "d")
    env.run()
    batch = env.batch("grows", images=9)
    assert batch.id == first.id and batch.image_count == 9
    assert [b.name for b in env.batches()] == ["grows"]
    assert len(env.job_files(batch.id)) == 9  # each file handed over once
    assert count_images(env) == (9, 9)


def test_the_watcher_retries_when_the_database_is_away(env, caplog):
    from sqlalchemy.exc import OperationalError

    from sendit_watcher.watcher import Watcher

    def away():
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    watcher = Watcher(env.settings, away)
    folder = env.data / "waiting"
    dicoms(folder, 1)
    assert watcher.sync(folder) is None
    assert folder in watcher.due and "could not import" in caplog.text
    watcher.session_factory = env.factory
    result = watcher.sync(folder)
    assert (result.new_batch, result.submitted) == (True, 1)


# -- the pid file, start, stop, status ----------------------------------------------------------


def test_a_stale_pid_file_is_reported_inactive_and_replaced_at_start(env):
    finished = subprocess.Popen(["true"])
    finished.wait()
    for pid, reason in ((finished.pid, "is not running"), (os.getpid(), "is not a sendit watcher")):
        env.pid_file.parent.mkdir(parents=True, exist_ok=True)
        env.pid_file.write_text(f"{pid}\n")
        status = env.sendit("status")
        assert status.returncode == 3, status.stdout
        assert status.stdout.startswith("watcher: inactive: not running; stale pid file")
        assert reason in status.stdout
        stop = env.sendit("stop")
        assert stop.returncode == 1 and "stale" in stop.stderr and reason in stop.stderr

    started = env.sendit("start")
    assert started.returncode == 0, started.stderr
    assert f"STALE PID FILE: {env.pid_file} replaced (process {os.getpid()} is not a sendit watcher" \
        in env.log()
    status = env.sendit("status")
    assert status.returncode == 0 and status.stdout.startswith("watcher: active: watching")
    assert int(env.pid_file.read_text()) == env.processes[-1]
    assert env.sendit("stop").returncode == 0 and not env.pid_file.exists()


def test_stopping_a_watcher_that_is_not_running_says_so_and_fails(env):
    result = env.sendit("stop")
    assert result.returncode == 1
    assert result.stderr.strip() == (f"sendit watcher: error: the watcher is not running (there is "
                                     f"no pid file {env.pid_file})")
    assert env.sendit("status").returncode == 3


def test_two_watchers_on_one_pid_file_the_second_refuses(env):
    first = env.run()
    second = subprocess.run([SENDIT, "watcher", "run", str(env.ini)], capture_output=True, text=True,
                            timeout=60)
    assert second.returncode == 1
    assert f"a watcher is already running (pid {first.pid}, pid file {env.pid_file})" in second.stderr
    started = env.sendit("start")
    assert started.returncode == 1 and f"already running (pid {first.pid}" in started.stderr
    assert first.poll() is None and int(env.pid_file.read_text()) == first.pid


def test_the_pid_file_lock_refuses_a_second_holder(tmp_path):
    path = tmp_path / "w.pid"
    first = PidFile(path)
    assert first.acquire().pid is None
    with pytest.raises(AlreadyRunning, match=f"pid {os.getpid()}"):
        PidFile(path).acquire()
    first.release()
    assert not path.exists()
    again = PidFile(path)
    again.acquire()
    again.release()


def test_sigterm_stops_the_watcher_cleanly_and_removes_the_pid_file(env):
    process = env.run()
    assert int(env.pid_file.read_text()) == process.pid
    process.send_signal(signal.SIGTERM)
    assert process.wait(15) == 0
    assert not env.pid_file.exists()
    assert "SIGNAL: SIGTERM, stopping" in env.log() and f"STOPPED: pid {process.pid}" in env.log()


def test_sigkill_during_an_import_then_restart_imports_every_file_exactly_once(make_env):
    env = make_env(**{"sendit.watcher.settle_seconds": "2", "sendit.import.job_size": "4"})
    watcher = env.run()
    dicoms(env.data / "handed_over", 10)
    wait_until(lambda: [b for b in env.batches() if b.name == "handed_over"], 20, "the first batch")
    dicoms(env.data / "settling", 5, seed=3)  # still settling when the watcher dies
    env.wait_for_log(f"FINISHED: {env.data / 'settling'}")
    watcher.send_signal(signal.SIGKILL)
    watcher.wait(10)
    assert env.pid_file.exists()  # left behind
    assert [b.name for b in env.batches()] == ["handed_over"]  # queued, not imported yet

    running = _start_worker(env)
    try:
        env.run()
        handed_over = env.batch("handed_over", images=10)
        settling = env.batch("settling", images=5)
    finally:
        _stop_worker(*running)
    assert "STALE PID FILE" in env.log()
    assert (handed_over.image_count, settling.image_count) == (10, 5)
    assert count_images(env) == (15, 15)
    outcomes = env.job_files(handed_over.id) + env.job_files(settling.id)
    assert len(outcomes) == 15 and {o for _, o in outcomes} == {FileOutcome.IMPORTED}
    env.wait_for_log(f"SKIPPED: {env.data / 'handed_over'}")


# -- bad situations ---------------------------------------------------------------------


def test_a_missing_data_folder_stops_start_and_run_with_a_clear_message(env):
    shutil.rmtree(env.data)
    for action in ("start", "run"):
        result = env.sendit(action)
        assert result.returncode == 1
        assert f"the data folder {env.data} does not exist (sendit.data_dir)" in result.stderr
    env.data.write_text("not a folder")
    result = env.sendit("start")
    assert result.returncode == 1 and "is not a folder" in result.stderr
    assert not env.pid_file.exists()


def test_unwritable_logs_or_pid_file_stop_the_start_with_a_clear_message(make_env, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    env = make_env(**{"sendit.watcher.log_dir": tmp_path / "a-file"})
    result = env.sendit("start")
    assert result.returncode == 1, result.stderr
    assert "cannot write the watcher's logs in" in result.stderr and "Traceback" not in result.stderr
    env = make_env(**{"sendit.watcher.pid_file": tmp_path / "a-file" / "w.pid"})
    result = env.sendit("start")
    assert result.returncode == 1, result.stderr
    assert "cannot write the pid file" in result.stderr and "Traceback" not in result.stderr


def test_an_unreadable_data_folder_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(WatcherError, match="cannot be read by this user"):
        check_data_dir(tmp_path)


def test_the_data_folder_deleted_while_watching_stops_the_watcher_with_an_error(env):
    process = env.run()
    shutil.rmtree(env.data)
    assert process.wait(20) == 1
    assert not env.pid_file.exists()
    assert "FAILED: the data folder" in env.log()
    assert "was deleted" in env.error_log() or "does not exist" in env.error_log()


def test_a_folder_deleted_while_it_settles_is_not_imported(make_env):
    env = make_env(**{"sendit.watcher.settle_seconds": "1.5"})
    env.run()
    folder = env.data / "short_lived"
    dicoms(folder, 2)
    env.wait_for_log(f"FINISHED: {folder}")
    shutil.rmtree(folder)
    env.wait_for_log(f"GONE: {folder}")
    time.sleep(2)
    assert env.batches() == []
    assert env.error_log() == ""


def test_an_unreadable_sub_folder_is_an_error_row_and_imported_once_readable(env, monkeypatch):
    monkeypatch.setattr(folders, "MARGIN", 0.0)  # exact times: this test checks what is resent
    folder = env.data / "locked_inside"
    dicoms(folder, 1)
    locked = folder / "locked"
    dicoms(locked, 2, seed=9)
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    first = folders.sync_folder(env.factory, env.settings, folder)
    assert (first.new_batch, first.submitted) == (True, 1)
    assert first.problems == [(locked, "cannot read the folder: Permission denied; its files were "
                                       "not imported")]
    again = folders.sync_folder(env.factory, env.settings, folder)  # still locked: no second row
    assert (again.submitted, len(again.problems)) == (0, 1)
    with env.factory() as db:
        errors = db.execute(select(IngestError.path, IngestError.step)).all()
    assert errors == [("locked_inside/locked", "read")]

    monkeypatch.setattr(os, "scandir", real_scandir)
    time.sleep(0.01)
    os.chmod(locked, 0o755)  # permissions fixed: the folder's ctime moves on
    fixed = folders.sync_folder(env.factory, env.settings, folder)
    assert (fixed.batch_id, fixed.submitted, fixed.problems) == (first.batch_id, 2, [])
    with env.factory() as db:
        jobs = db.scalars(select(Job.id).where(Job.batch_id == first.batch_id).order_by(Job.id)).all()
    ingestor = Ingestor(env.settings, env.app.pm, env.factory)
    for job_id in jobs:
        ingestor.run_job(job_id)
    with env.factory() as db:
        batch = db.get(Batch, first.batch_id)
    assert (batch.image_count, batch.error_count, batch.status) == (3, 1, BatchStatus.DONE)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder: cannot test permission errors")
def test_a_sub_folder_without_read_permission_is_reported_by_the_running_watcher(env, worker):
    env.run()
    staged = env.tmp / "stage" / "perm"
    dicoms(staged, 1)
    dicoms(staged / "locked", 2, seed=4)
    os.chmod(staged / "locked", 0)
    try:
        os.rename(staged, env.data / "perm")
        env.wait_for_log(f"UNREADABLE: {env.data / 'perm' / 'locked'}")
        batch = env.batch("perm", images=1)
        assert batch.error_count == 1
        os.chmod(env.data / "perm" / "locked", 0o755)
        batch = env.batch("perm", images=3)
    finally:
        os.chmod(env.data / "perm" / "locked", 0o755)
    assert batch.image_count == 3


def test_sighup_looks_at_every_folder_again(env):
    process = env.run()
    process.send_signal(signal.SIGHUP)
    env.wait_for_log("RESCAN: looking at every folder again")
    assert process.poll() is None


# -- deleting imported files ------------------------------------------------------------------


def test_delete_source_removes_imported_files_and_emptied_folders_never_errors(make_env):
    env = make_env(**{"sendit.import.delete_source": "true"})
    running = _start_worker(env)
    try:
        env.run()
        clean = env.tmp / "stage" / "clean"
        dicoms(clean / "sub", 3)
        shutil.copy(CT_SMALL, clean / "CT_small.dcm")
        mixed = env.tmp / "stage" / "mixed"
        dicoms(mixed, 2, seed=7)
        dicoms(mixed / "sub", 1, seed=8)
        (mixed / "notes.txt").write_text("not DICOM")
        os.rename(clean, env.data / "clean")
        os.rename(mixed, env.data / "mixed")
        clean_batch = env.batch("clean", images=4)
        mixed_batch = env.batch("mixed", images=3)
        wait_until(lambda: not (env.data / "clean").exists(), 10, "the emptied folder to be removed")
    finally:
        _stop_worker(*running)
    assert (clean_batch.image_count, clean_batch.error_count) == (4, 0)
    assert (mixed_batch.image_count, mixed_batch.error_count) == (3, 1)
    left = sorted(str(p.relative_to(env.data)) for p in env.data.rglob("*"))
    assert left == ["mixed", "mixed/notes.txt"]  # the file with an error stays, with its folder
    time.sleep(1)  # the deletions must not look like new arrivals
    assert env.log().count(f"IMPORTING: {env.data / 'mixed'}") == 1, env.log()


@pytest.mark.parametrize("key, value", [
    ("sendit.storage_dir", "data/storage"), ("sendit.watcher.log_dir", "data"),
    ("sendit.watcher.pid_file", "data/sub/w.pid"),
])
def test_nothing_sendit_writes_may_live_in_the_watched_folder(make_app, key, value, tmp_path):
    with pytest.raises(SettingsError, match=f"{key}.*is inside the watched folder"):
        make_app(settings={key: str(tmp_path / value)})


def test_remove_if_empty_only_removes_empty_watched_folders(tmp_path):
    data = tmp_path / "data"
    (data / "a" / "b" / "c").mkdir(parents=True)
    assert folders.remove_if_empty(data / "a", data) and not (data / "a").exists()
    (data / "kept" / "empty").mkdir(parents=True)
    (data / "kept" / "error.txt").write_text("x")
    assert not folders.remove_if_empty(data / "kept", data)
    assert sorted(p.name for p in (data / "kept").iterdir()) == ["error.txt"]
    (data / "x.tmp1").mkdir()
    (tmp_path / "outside").mkdir()
    assert not folders.remove_if_empty(data / "x.tmp1", data)
    assert not folders.remove_if_empty(tmp_path / "outside", data)
    assert not folders.remove_if_empty(data / ".." / "outside", data)


# -- the folder convention and the process check ----------------------------------------------


@pytest.mark.parametrize("name, unfinished", [
    ("study1.tmp8731", True), ("study1.tmp", True), ("study1.TMP12", True), ("study1", False),
    ("study.1", False), ("tmp", False), ("study.tmp1.done", False),
])
def test_the_tmp_extension_marks_an_unfinished_folder(name, unfinished):
    assert folders.is_unfinished(name) is unfinished
    assert folders.is_batch_name(name) is not unfinished
    assert not folders.is_batch_name(".hidden")


@pytest.mark.parametrize("args, watcher", [
    (["/venv/bin/python", "/venv/bin/sendit", "watcher", "run", "a.ini"], True),
    (["/usr/bin/python3", "-m", "sendit_watcher", "run", "--detached", "a.ini"], True),
    (["/venv/bin/sendit", "worker", "a.ini"], False),
    (["/venv/bin/sendit", "watcher", "status", "a.ini"], False),
    (["vim", "sendit", "watcher.txt"], False),
    (["sleep", "100"], False),
])
def test_only_a_sendit_watcher_process_counts_as_running(args, watcher):
    assert is_watcher_cmdline(args) is watcher


def test_status_of_a_pid_file_naming_a_live_process_that_is_no_watcher(tmp_path):
    path = tmp_path / "w.pid"
    path.write_text(f"{os.getpid()}\n")
    state = check(path)
    assert (state.running, state.pid) == (False, os.getpid())
    assert "is not a sendit watcher" in state.stale
    path.write_text("garbage")
    assert check(path).stale == "the pid file holds no process id"


# -- the plugin's hooks and pages --------------------------------------------------------------


def test_the_watcher_is_an_ingest_source_with_start_stop_and_status(env):
    (source,) = [s for s in ingest_sources(env.app.pm, env.settings) if s.name == "watcher"]
    assert isinstance(source, WatcherSource) and source.daemon
    status = source.status(env.settings)
    assert (status.active, status.summary) == (False, "not running")
    assert status.details["Watched folder"] == str(env.data)
    with pytest.raises(WatcherError, match="not running"):
        source.stop(env.settings)
    with pytest.raises(WatcherError, match="sendit watcher start INI"):
        source.start(env.settings)
    source.start(env.settings, ini=env.ini)
    try:
        status = source.status(env.settings)
        assert status.active and status.since is not None
        assert status.summary.startswith(f"watching {env.data} since ")
    finally:
        source.stop(env.settings)
    assert not source.status(env.settings).active


def test_dashboard_and_settings_show_the_watcher_and_batch_pages_do_not(env):
    client = TestApp(env.app.wsgi)
    assert login(client).status_int == 303
    panel = client.get("/").html.find(id="panel-watcher")
    assert panel.find(id="watcher-state").text == "inactive"
    assert str(env.data) in panel.text
    process = env.run()
    panel = client.get("/").html.find(id="panel-watcher")
    assert panel.find(id="watcher-state").text == "active"
    assert f"watching {env.data} since" in " ".join(panel.text.split())
    settings_panel = client.get("/settings").html.find(id="panel-watcher")
    assert settings_panel.find(id="watcher-state").text == "active"
    assert str(env.pid_file) in settings_panel.text and str(process.pid) in settings_panel.text
    assert "watching" in client.get("/settings").html.find(id="sources").text
    dicoms(env.data / "shown", 1)
    batch_id = wait_until(lambda: [b.id for b in env.batches()], 20, "a batch")[0]
    assert client.get(f"/batches/{batch_id}").html.find(id="panel-watcher") is None
    process.send_signal(signal.SIGTERM)
    process.wait(15)
    panel = client.get("/").html.find(id="panel-watcher")
    assert panel.find(id="watcher-state").text == "inactive"


@pytest.fixture
def watched_server(make_env):
    """An environment served by waitress, its pages refreshing every second
    (set up before ``page``, so the browser closes before the server stops)."""
    env = make_env(**{"sendit.dashboard.refresh_seconds": "1"})
    server = serve(env.app)
    running = _start_worker(env)
    yield env, server
    _stop_worker(*running)
    server.stop()


@pytest.mark.browser
def test_browser_dashboard_shows_the_watcher_active_and_inactive(watched_server, page):
    env, server = watched_server
    browser_login(page, server.url)
    page.goto(server.url + "/")
    assert page.locator("#panel-watcher #watcher-state").inner_text() == "inactive"
    save_screenshot(page, "dashboard-watcher-inactive")
    assert env.sendit("start").returncode == 0
    page.wait_for_function(  # the page refreshes itself: no reload
        "() => document.querySelector('#panel-watcher #watcher-state').textContent === 'active'")
    assert str(env.data) in page.locator("#panel-watcher").inner_text()
    dicoms(env.data / "CT_CHEST_watched", 12)
    page.wait_for_selector("#batches >> text=CT_CHEST_watched")
    page.wait_for_selector("#batches .badge-DONE")
    save_screenshot(page, "dashboard-watcher-active")
    page.goto(server.url + "/settings")
    assert page.locator("#panel-watcher #watcher-state").inner_text() == "active"
    save_screenshot(page, "settings-watcher", full_page=False)
    assert env.sendit("stop").returncode == 0
    page.goto(server.url + "/")
    assert page.locator("#panel-watcher #watcher-state").inner_text() == "inactive"
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1280, "the watcher panel widens the page"
