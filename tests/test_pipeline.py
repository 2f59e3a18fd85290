"""The ingest pipeline's mechanics, with the example plugin's tiny parser (fast,
and every outcome under control). DICOM files are in test_ingest_dicom.py."""
import os
import threading
from pathlib import Path

import pytest
import sendit_example
from sqlalchemy import delete, func, select

from sendit_core.models import (
    Batch, BatchStatus, FileOutcome, HeaderValue, Image, IngestError, Job, JobFile, JobStatus,
    utcnow,
)
from sendit_core.pipeline import Ingestor, import_now, iter_files, submit, wait_for_batch
from sendit_core.testing import broker_settings
from sendit_core.worker import Worker


def example_file(folder: Path, name: str, uid: str, body: str = "") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(sendit_example.MAGIC + f"uid={uid}\n{body}".encode())
    return path


@pytest.fixture
def app(make_app):
    """Only the example plugin parses (no DICOM parser), small jobs and chunks."""
    return make_app(builtins=(), plugins=[sendit_example],
                    settings={"sendit.import.job_size": "4", "sendit.worker.commit_every": "3"})


@pytest.fixture
def factory(app):
    return app.registry["dbsession_factory"]


def run_import(app, paths, **kw):
    factory = app.registry["dbsession_factory"]
    submission = submit(factory, app.settings, iter_files(paths), publish=False, **kw)
    result = import_now(Ingestor(app.settings, app.pm, factory), submission)
    with factory() as db:
        return submission, result, db.get(Batch, submission.batch_id)


def errors_of(factory, batch_id):
    with factory() as db:
        return {e.path: (e.step, e.message) for e in
                db.scalars(select(IngestError).where(IngestError.batch_id == batch_id))}


def test_a_folder_becomes_one_batch_with_every_file_accounted_for(app, factory, tmp_path):
    src = tmp_path / "study1"
    for i in range(10):
        example_file(src, f"sub/{i:02d}.ex", f"1.2.{i}", f"PatientID=P{i}\n")
    (src / "notes.txt").write_text("not an image")
    (src / "empty.ex").write_bytes(b"")
    submission, result, batch = run_import(app, [src], batch_name="study1")
    assert submission.file_count == 12 and len(submission.job_ids) == 3
    assert (result.imported, result.duplicates, result.errors) == (10, 0, 2)
    assert (batch.name, batch.status, batch.image_count, batch.error_count, batch.pending_count) == \
        ("study1", BatchStatus.DONE, 10, 2, 0)
    assert batch.finished_at is not None and batch.total_bytes == sum(
        p.stat().st_size for p in (src / "sub").iterdir())
    assert errors_of(factory, batch.id) == {
        "study1/notes.txt": ("parse", "not a DICOM file (no parser accepted it)"),
        "study1/empty.ex": ("read", "empty file (0 bytes)"),
    }
    with factory() as db:
        outcomes = db.execute(select(JobFile.outcome, func.count()).group_by(JobFile.outcome)).all()
        assert dict(outcomes) == {FileOutcome.IMPORTED: 10, FileOutcome.ERROR: 2}
        assert set(db.scalars(select(Job.status))) == {JobStatus.DONE}
        image = db.scalars(select(Image).where(Image.sop_instance_uid == "1.2.3")).one()
        assert image.original_name == "study1/sub/03.ex"


def test_files_are_listed_sorted_with_names_from_the_given_folder_down(tmp_path, monkeypatch):
    for name in ("b/2.ex", "b/1.ex", "a/z.ex", "top.ex"):
        (tmp_path / "study" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "study" / name).write_bytes(b"x")
    (tmp_path / "study" / "gone.ex").symlink_to(tmp_path / "nowhere")
    (tmp_path / "single.ex").write_bytes(b"x")
    monkeypatch.chdir(tmp_path / "study" / "a")
    listed = list(iter_files([f"{tmp_path}/study/", "../../single.ex", Path("..")]))
    # a folder's own files first, then its subfolders, each sorted; a broken link too
    names = ["study/gone.ex", "study/top.ex", "study/a/z.ex", "study/b/1.ex", "study/b/2.ex"]
    assert listed == [(f"{tmp_path}/{name}", name) for name in names] + [
        (str(tmp_path / "single.ex"), "single.ex")] + [(f"{tmp_path}/{name}", name) for name in names]


def test_storage_layout_and_no_temporary_files_left(app, tmp_path):
    example_file(tmp_path / "in", "a.ex", "1.2.3")
    _, _, batch = run_import(app, [tmp_path / "in"])
    storage = Path(app.settings["sendit.storage_dir"])
    stored = [p for p in storage.rglob("*") if p.is_file()]
    assert [p.relative_to(storage).as_posix() for p in stored] == \
        [f"{batch.id}/unknown-study/unknown-series/1.2.3.dcm"]
    assert stored[0].read_bytes() == (tmp_path / "in" / "a.ex").read_bytes()


def test_importing_the_same_folder_again_adds_nothing(app, factory, tmp_path):
    src = tmp_path / "in"
    for i in range(5):
        example_file(src, f"{i}.ex", f"1.2.{i}")
    (src / "bad.txt").write_text("x")
    submission, _, first = run_import(app, [src])
    _, result, again = run_import(app, [src], batch_id=submission.batch_id)
    assert (result.imported, result.duplicates, result.errors) == (0, 5, 1)
    assert (again.image_count, again.error_count, again.status) == (5, 1, BatchStatus.DONE)
    with factory() as db:
        assert db.scalar(select(func.count()).select_from(Image)) == 5
        assert db.scalar(select(func.count()).select_from(IngestError)) == 1


def test_same_file_twice_in_one_import_is_stored_once(app, tmp_path):
    a = example_file(tmp_path, "a.ex", "1.2.3")
    _, result, batch = run_import(app, [a, a])
    assert (result.imported, result.duplicates, batch.image_count) == (1, 1, 1)


def test_a_different_file_with_the_same_uid_is_an_error_not_an_overwrite(app, factory, tmp_path):
    first = example_file(tmp_path / "in", "1-first.ex", "1.2.3", "name=first\n")
    example_file(tmp_path / "in", "2-second.ex", "1.2.3", "name=second\n")
    _, result, batch = run_import(app, [tmp_path / "in"])
    assert (result.imported, result.errors) == (1, 1)
    step, message = errors_of(factory, batch.id)["in/2-second.ex"]
    assert step == "store" and "different file with SOP Instance UID 1.2.3" in message
    stored = next(Path(app.settings["sendit.storage_dir"]).rglob("*.dcm"))
    assert stored.read_bytes() == first.read_bytes()


def test_batch_statuses(app, tmp_path):
    (tmp_path / "empty").mkdir()
    _, _, empty = run_import(app, [tmp_path / "empty"])
    assert empty.status is BatchStatus.EMPTY and empty.finished_at is not None
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.txt").write_text("x")
    _, _, failed = run_import(app, [tmp_path / "bad"])
    assert failed.status is BatchStatus.ERROR


def test_status_moves_from_queued_to_processing_to_done(app, factory, tmp_path):
    for i in range(7):
        example_file(tmp_path / "in", f"{i}.ex", f"1.2.{i}")
    submission = submit(factory, app.settings, iter_files([tmp_path / "in"]), publish=False)
    seen = []

    def watch(result, n):
        with factory() as db:
            seen.append(db.get(Batch, submission.batch_id).status)

    with factory() as db:
        seen.append(db.get(Batch, submission.batch_id).status)
    ingestor = Ingestor(app.settings, app.pm, factory)
    ingestor.on_chunk = watch
    import_now(ingestor, submission)
    assert seen[0] is BatchStatus.QUEUED
    assert BatchStatus.PROCESSING in seen[1:-1]
    assert seen[-1] is BatchStatus.DONE


def test_bad_input_each_becomes_a_clear_error_row(app, factory, tmp_path):
    src = tmp_path / "in"
    example_file(src, "good.ex", "1.2.3")
    (src / "dangling.ex").symlink_to(src / "missing-target")
    big = src / "big.ex"
    big.write_bytes(sendit_example.MAGIC + b"uid=9.9\n" + b"x" * (2 * 2**20))
    example_file(src, "nouid.ex", "").write_bytes(sendit_example.MAGIC + b"name=x\n")
    submission = submit(factory, app.settings, iter_files([src]), publish=False)
    gone = example_file(tmp_path, "gone.ex", "7.7")
    submission2 = submit(factory, app.settings, [(gone, "gone.ex")], batch_id=submission.batch_id,
                         publish=False)
    gone.unlink()
    settings = {**app.settings, "sendit.import.max_file_mb": 1}
    ingestor = Ingestor(settings, app.pm, factory)
    import_now(ingestor, submission)
    import_now(ingestor, submission2)
    errors = errors_of(factory, submission.batch_id)
    assert errors["in/dangling.ex"][0] == "read"
    assert "broken symbolic link" in errors["in/dangling.ex"][1]
    assert errors["in/big.ex"] == ("read", "file is 2 MB, larger than the limit sendit.import.max_file_mb = 1")
    assert errors["in/nouid.ex"] == ("parse", "example file without a uid= line")
    assert errors["gone.ex"] == ("read", "the file is gone (deleted or moved before it was imported)")
    with factory() as db:
        assert db.get(Batch, submission.batch_id).image_count == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file: cannot test permission errors")
def test_unreadable_file(app, factory, tmp_path):
    path = example_file(tmp_path / "in", "locked.ex", "1.2.3")
    path.chmod(0)
    _, _, batch = run_import(app, [tmp_path / "in"])
    assert errors_of(factory, batch.id)["in/locked.ex"] == ("read", "cannot read the file: permission denied")


def test_a_parser_bug_is_one_files_error(make_app, tmp_path):
    from sendit_core import hookimpl

    class Buggy:
        @staticmethod
        @hookimpl
        def sendit_parse_file(path):
            if path.name == "boom.ex":
                raise ZeroDivisionError("division by zero")

    app = make_app(builtins=(), plugins=[sendit_example, Buggy()])
    example_file(tmp_path / "in", "boom.ex", "1.1")
    example_file(tmp_path / "in", "fine.ex", "1.2")
    _, result, batch = run_import(app, [tmp_path / "in"])
    assert (result.imported, result.errors) == (1, 1)
    factory = app.registry["dbsession_factory"]
    assert errors_of(factory, batch.id)["in/boom.ex"] == \
        ("parse", "the parser failed: ZeroDivisionError: division by zero")


def test_delete_source_removes_only_imported_files(app, factory, tmp_path):
    src = tmp_path / "in"
    good = [example_file(src, f"{i}.ex", f"1.2.{i}") for i in range(4)]
    bad = src / "bad.txt"
    bad.write_text("x")
    _, result, batch = run_import(app, [src], delete_source=True)
    assert result.imported == 4
    assert not any(p.exists() for p in good)
    assert bad.exists()
    with factory() as db:
        assert db.scalar(select(func.count()).where(JobFile.source_deleted)) == 4


def test_sources_are_kept_by_default(app, tmp_path):
    path = example_file(tmp_path, "a.ex", "1.2.3")
    run_import(app, [path])
    assert path.exists()


def test_events_fire_after_commit(app, factory, tmp_path):
    sendit_example.EVENTS.clear()
    for i in range(4):
        example_file(tmp_path / "in", f"{i}.ex", f"1.2.{i}")
    _, _, batch = run_import(app, [tmp_path / "in"])
    with factory() as db:
        ids = set(db.scalars(select(Image.id)))
    assert {i for kind, i in sendit_example.EVENTS if kind == "image_imported"} == ids
    assert sendit_example.EVENTS[-1] == ("batch_finished", batch.id)
    assert [kind for kind, _ in sendit_example.EVENTS].count("batch_finished") == 1


def test_adding_files_to_a_finished_batch_reopens_it(app, tmp_path):
    example_file(tmp_path / "a", "1.ex", "1.1")
    example_file(tmp_path / "b", "2.ex", "2.2")
    submission, _, batch = run_import(app, [tmp_path / "a"])
    factory = app.registry["dbsession_factory"]
    more = submit(factory, app.settings, iter_files([tmp_path / "b"]), batch_id=batch.id, publish=False)
    with factory() as db:
        reopened = db.get(Batch, batch.id)
        assert reopened.status is BatchStatus.QUEUED and reopened.finished_at is None
    import_now(Ingestor(app.settings, app.pm, factory), more)
    with factory() as db:
        assert db.get(Batch, batch.id).image_count == 2


def test_adding_to_a_missing_batch_is_refused(app, factory, tmp_path):
    with pytest.raises(LookupError, match="there is no batch 42"):
        submit(factory, app.settings, [], batch_id=42)


def test_a_claimed_job_is_not_claimed_twice(app, factory, tmp_path):
    example_file(tmp_path / "in", "1.ex", "1.1")
    submission = submit(factory, app.settings, iter_files([tmp_path / "in"]), publish=False)
    first = Ingestor(app.settings, app.pm, factory)
    second = Ingestor(app.settings, app.pm, factory)
    assert first.claim(submission.job_ids[0]) is not None
    assert second.run_job(submission.job_ids[0]) is None


def test_sweep_requeues_jobs_of_dead_or_silent_workers(app, factory, tmp_path):
    for i in range(8):
        example_file(tmp_path / "in", f"{i}.ex", f"1.{i}")
    submission = submit(factory, app.settings, iter_files([tmp_path / "in"]), publish=False)
    dead_job, silent_job = submission.job_ids
    with factory() as db:
        db.get(Job, dead_job).status = JobStatus.CLAIMED
        db.get(Job, dead_job).claimed_by = f"{os.uname().nodename}:999999:abc"
        db.get(Job, dead_job).heartbeat_at = utcnow()
        db.get(Job, silent_job).status = JobStatus.CLAIMED
        db.get(Job, silent_job).claimed_by = "elsewhere:1:abc"
        db.get(Job, silent_job).heartbeat_at = utcnow()
        db.commit()
    ingestor = Ingestor(app.settings, app.pm, factory)
    assert ingestor.sweep() == [dead_job]  # the other host's worker may still be alive
    settings = {**app.settings, "sendit.worker.stale_seconds": 0}
    assert Ingestor(settings, app.pm, factory).sweep() == [dead_job, silent_job]


@pytest.mark.service_matrix
@pytest.mark.parametrize("n", [9])
def test_a_thread_worker_imports_what_is_submitted(make_app, broker_url, tmp_path, n):
    app = make_app(builtins=(), plugins=[sendit_example],
                   settings={"sendit.import.job_size": "4", **broker_settings(broker_url)})
    factory = app.registry["dbsession_factory"]
    worker = Worker(app.settings, app.pm, factory)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        for i in range(n):
            example_file(tmp_path / "in", f"{i}.ex", f"1.2.{i}")
        submission = submit(factory, app.settings, iter_files([tmp_path / "in"]))
        batch = wait_for_batch(factory, submission.batch_id, timeout=30)
        assert (batch.status, batch.image_count) == (BatchStatus.DONE, n)
    finally:
        worker.stop()
        thread.join(10)
    assert not thread.is_alive()


def test_a_worker_started_later_finds_queued_jobs_whose_message_was_lost(make_app, broker_url, tmp_path):
    app = make_app(builtins=(), plugins=[sendit_example], settings=broker_settings(broker_url))
    factory = app.registry["dbsession_factory"]
    example_file(tmp_path / "in", "1.ex", "1.1")
    submission = submit(factory, app.settings, iter_files([tmp_path / "in"]), publish=False)
    worker = Worker(app.settings, app.pm, factory)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        batch = wait_for_batch(factory, submission.batch_id, timeout=30)
        assert batch.status is BatchStatus.DONE
    finally:
        worker.stop()
        thread.join(10)


def test_the_web_app_runs_a_worker_thread_on_the_embedded_default(make_settings, tmp_path):
    from sendit_core import main

    raw = make_settings({"sendit.worker": "thread", "sendit.plugins.disabled": "sendit_pydicom"})
    app = main({"here": str(tmp_path)}, **raw)
    worker = app.registry["sendit.worker"]
    try:
        example_file(tmp_path / "in", "1.ex", "1.1")
        factory = app.registry["dbsession_factory"]
        submission = submit(factory, app.registry.settings, iter_files([tmp_path / "in"]))
        batch = wait_for_batch(factory, submission.batch_id, timeout=30)
        assert (batch.status, batch.image_count) == (BatchStatus.DONE, 1)
    finally:
        worker.stop()


def test_no_worker_thread_with_external_workers(make_settings, tmp_path):
    from sendit_core import main

    app = main({"here": str(tmp_path)}, **make_settings({"sendit.worker": "external"}))
    assert "sendit.worker" not in app.registry


def test_sweep_without_queued_jobs_only_returns_the_requeued(app, factory, tmp_path):
    for i in range(8):
        example_file(tmp_path / "in", f"{i}.ex", f"1.{i}")
    submission = submit(factory, app.settings, iter_files([tmp_path / "in"]), publish=False)
    dead_job = submission.job_ids[0]
    with factory() as db:
        db.get(Job, dead_job).status = JobStatus.CLAIMED
        db.get(Job, dead_job).claimed_by = f"{os.uname().nodename}:999999:abc"
        db.commit()
    ingestor = Ingestor(app.settings, app.pm, factory)
    assert ingestor.sweep(include_queued=False) == [dead_job]
    assert ingestor.sweep(include_queued=False) == []
    assert ingestor.sweep() == submission.job_ids


def test_storage_copies_through_user_space_when_the_kernel_cannot(tmp_path, monkeypatch):
    from sendit_core import storage

    def refuse(*args):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(storage.os, "copy_file_range", refuse)
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(3 * 2**20 + 17))
    assert storage.store_file(source, tmp_path / "store", "1/a.dcm") is storage.Stored.NEW
    assert (tmp_path / "store" / "1" / "a.dcm").read_bytes() == source.read_bytes()
    assert storage.store_file(source, tmp_path / "store", "1/a.dcm") is storage.Stored.IDENTICAL
    other = tmp_path / "other.bin"
    other.write_bytes(b"different")
    assert storage.store_file(other, tmp_path / "store", "1/a.dcm") is storage.Stored.CONFLICT
    assert [p.name for p in (tmp_path / "store" / "1").iterdir()] == ["a.dcm"]


@pytest.fixture
def one_job_app(make_app):
    """One job for a whole folder, written in chunks of three files."""
    return make_app(builtins=(), plugins=[sendit_example],
                    settings={"sendit.import.job_size": "100", "sendit.worker.commit_every": "3"})


@pytest.mark.parametrize("ahead", [True, False], ids=["prepare-ahead", "one-by-one"])
def test_chunks_prepared_ahead_or_not_import_the_same(one_job_app, tmp_path, ahead):
    """The next chunk is parsed and stored in a thread while this one is written;
    a UID repeated across chunks is still caught, and the outcomes are the same."""
    app, factory = one_job_app, one_job_app.registry["dbsession_factory"]
    src = tmp_path / "many"
    for i in range(10):
        example_file(src, f"{i:02d}.ex", f"1.5.{i}")
    example_file(src, "10-again.ex", "1.5.0")  # the same file as 00.ex, three chunks later
    example_file(src, "11-other.ex", "1.5.1", "PatientID=X\n")  # a different file, same UID
    submission = submit(factory, app.settings, iter_files([src]), publish=False)
    ingestor = Ingestor(app.settings, app.pm, factory)
    ingestor.prepare_ahead = ahead
    result = import_now(ingestor, submission)
    assert (result.imported, result.duplicates, result.errors) == (10, 1, 1)
    assert [e[0] for e in errors_of(factory, submission.batch_id).values()] == ["store"]


def test_a_stop_between_chunks_leaves_the_chunk_prepared_ahead_to_the_next_run(one_job_app, tmp_path):
    """Stopped after its first chunk, a worker has already stored the second one's
    files; the job goes back to the queue and the next run imports them once."""
    app, factory = one_job_app, one_job_app.registry["dbsession_factory"]
    src = tmp_path / "stopped"
    for i in range(9):
        example_file(src, f"{i:02d}.ex", f"1.6.{i}")
    submission = submit(factory, app.settings, iter_files([src]), publish=False)
    first = Ingestor(app.settings, app.pm, factory)
    first.on_chunk = lambda result, size: first.stop_requested.set()
    assert first.run_job(submission.job_ids[0]).imported == 3
    with factory() as db:
        assert db.get(Job, submission.job_ids[0]).status is JobStatus.QUEUED
    result = Ingestor(app.settings, app.pm, factory).run_job(submission.job_ids[0])
    assert (result.imported, result.duplicates, result.errors) == (6, 0, 0)
    with factory() as db:
        assert db.scalar(select(func.count()).select_from(Image)) == 9
        assert db.get(Batch, submission.batch_id).status is BatchStatus.DONE


def test_an_import_tunes_the_garbage_collector_and_undoes_it(app, tmp_path, monkeypatch):
    """Collections are rare and skip start-up's objects while files are imported;
    afterwards the process is as it was (tests and servers call import_now too)."""
    import gc

    from sendit_core import pipeline

    seen = []
    real_run_job = Ingestor.run_job

    def run_job(self, job_id):
        seen.append((gc.get_threshold()[0], gc.get_freeze_count()))
        return real_run_job(self, job_id)

    monkeypatch.setattr(Ingestor, "run_job", run_job)
    before = gc.get_threshold(), gc.get_freeze_count()
    example_file(tmp_path, "a.ex", "1.2.3")
    _, result, _ = run_import(app, [tmp_path])
    assert result.imported == 1
    assert seen and all(threshold == pipeline.INGEST_GC_THRESHOLD and frozen > 0
                        for threshold, frozen in seen)
    assert (gc.get_threshold(), gc.get_freeze_count()) == before


def _pooled_foreign_keys(app) -> set:
    """``PRAGMA foreign_keys`` of every connection the app's SQLite pool would hand out."""
    engine = app.settings["sendit.engine"]
    connections = [engine.connect() for _ in range(engine.pool.checkedin() or 1)]
    try:
        return {c.exec_driver_sql("PRAGMA foreign_keys").scalar() for c in connections}
    finally:
        for c in connections:
            c.close()


def test_deleting_an_imported_batch_still_cascades_to_its_values(app, factory, tmp_path):
    """On SQLite a chunk's transaction skips the foreign key lookups (its rows
    are consistent by construction); the connection gets them back after, so a
    later delete on the same pooled connections still removes the batch's
    images and header values."""
    for i in range(7):
        example_file(tmp_path / "in", f"{i}.ex", f"1.2.{i}", f"PatientID=P{i}\n")
    _, result, batch = run_import(app, [tmp_path / "in"])
    assert result.imported == 7
    if app.settings["sendit.engine"].dialect.name == "sqlite":
        assert _pooled_foreign_keys(app) == {1}
    with factory() as db:
        assert db.scalar(select(func.count()).select_from(HeaderValue)) > 0
        db.execute(delete(Batch).where(Batch.id == batch.id))
        db.commit()
        assert db.scalar(select(func.count()).select_from(Image)) == 0
        assert db.scalar(select(func.count()).select_from(HeaderValue)) == 0


def test_a_chunk_that_fails_midway_leaves_nothing_and_gives_the_checks_back(app, factory, tmp_path,
                                                                            monkeypatch):
    from sendit_core import bulk

    for i in range(3):
        example_file(tmp_path / "in", f"{i}.ex", f"1.2.{i}", f"PatientID=P{i}\n")

    def broken(self, image_ids):
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(bulk.BulkWriter, "insert_staged", broken)
    with pytest.raises(RuntimeError, match="the disk is full"):
        run_import(app, [tmp_path / "in"])
    with factory() as db:
        assert db.scalar(select(func.count()).select_from(Image)) == 0
    if app.settings["sendit.engine"].dialect.name == "sqlite":
        assert _pooled_foreign_keys(app) == {1}


def test_a_batch_deleted_while_its_chunk_is_written_leaves_no_orphan_rows(app, factory, tmp_path,
                                                                          monkeypatch):
    """The app refuses to delete a batch with files pending; should its row go
    anyway (by hand, in SQL) while a chunk is prepared, the chunk's transaction
    finds it gone and writes nothing, foreign key lookups or not."""
    for i in range(3):
        example_file(tmp_path / "in", f"{i}.ex", f"1.2.{i}", f"PatientID=P{i}\n")
    submission = submit(factory, app.settings, iter_files([tmp_path / "in"]), publish=False)
    ensure_fields = Ingestor._ensure_fields

    def then_delete_the_batch(self, items):
        ensure_fields(self, items)
        with factory() as db:
            db.execute(delete(Batch).where(Batch.id == submission.batch_id))
            db.commit()

    monkeypatch.setattr(Ingestor, "_ensure_fields", then_delete_the_batch)
    with pytest.raises(Exception, match=f"batch {submission.batch_id} was deleted|FOREIGN KEY|foreign key"):
        import_now(Ingestor(app.settings, app.pm, factory), submission)
    with factory() as db:
        assert db.scalar(select(func.count()).select_from(Image)) == 0
        assert db.scalar(select(func.count()).select_from(HeaderValue)) == 0
        assert db.scalar(select(func.count()).select_from(IngestError)) == 0


def test_a_connection_that_cannot_take_its_checks_back_is_discarded(app, factory, tmp_path, monkeypatch):
    """Should giving the connection its foreign key checks back fail, the
    connection is thrown away rather than pooled without them."""
    if app.settings["sendit.engine"].dialect.name != "sqlite":
        pytest.skip("the checks are skipped on SQLite only")
    from sqlalchemy.engine import Connection

    example_file(tmp_path / "in", "a.ex", "1.2.3", "PatientID=P\n")
    invalidated = []
    real_exec = Connection.exec_driver_sql

    def refusing(self, statement, *args, **kw):
        if statement == "PRAGMA foreign_keys=ON":
            raise RuntimeError("no")
        return real_exec(self, statement, *args, **kw)

    monkeypatch.setattr(Connection, "exec_driver_sql", refusing)
    monkeypatch.setattr(Connection, "invalidate", lambda self, exception=None: invalidated.append(self))
    _, result, _ = run_import(app, [tmp_path / "in"])
    assert result.imported == 1 and len(invalidated) == 1


def test_the_embedded_broker_connects_without_a_warning(app, tmp_path, caplog):
    """``filesystem://`` names no host; kombu warned about it (\"No hostname was
    supplied\") in every log at every start, for a transport that has none."""
    import logging

    from sendit_core.broker import connect, publish_jobs

    settings = {**app.settings, "sendit.broker_url": "filesystem://"}
    with caplog.at_level(logging.WARNING, logger="kombu"):
        connection = connect(settings)
        assert publish_jobs(settings, [1, 2], connection) == 2
        assert connection.as_uri() == "filesystem://:**@localhost//"  # as a worker's log names it
        connection.release()
    assert [r.getMessage() for r in caplog.records if r.name.startswith("kombu")] == []
    assert len(list((Path(settings["sendit.var_dir"]) / "queue").glob("*.msg"))) == 2


def test_a_chunks_values_are_staged_without_the_databases_write_lock(app, factory):
    """SQLite has one writer at a time: a chunk's ~11,000 header value rows are
    staged in the connection's own temporary table while another process may
    hold the lock, and only the images and one INSERT … SELECT need it."""
    import sqlite3

    from sendit_core.bulk import BulkWriter

    engine = app.settings["sendit.engine"]
    if engine.dialect.name != "sqlite":
        pytest.skip("staging in a temporary table is SQLite's")
    other = sqlite3.connect(engine.url.database, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another import process, mid-transaction
    try:
        with factory() as db:
            connection = db.connection()
            connection.exec_driver_sql("PRAGMA busy_timeout=0")  # a wait for the lock fails at once
            assert connection.exec_driver_sql("PRAGMA temp_store").scalar() == 2  # in memory, no file
            writer = BulkWriter(db)
            writer.stage_values([(7, 1, "", 0, "old", None)])
            writer.stage_values([(8, 1, "", 0, "a", None), (8, 2, "", 0, None, 1.5)])
            staged = connection.exec_driver_sql(
                "SELECT file_id, value_text FROM temp.sendit_staged_value ORDER BY rowid").all()
            assert staged == [(8, "a"), (8, None)]  # each chunk's rows alone
            with pytest.raises(sqlite3.OperationalError, match="database is locked"):
                writer.insert_image(dict(batch_id=1, sop_instance_uid="1.2.3", sop_class_uid=None,
                                         study_instance_uid=None, series_instance_uid=None, modality=None,
                                         instance_number=None, transfer_syntax_uid=None, stored_path="x",
                                         original_name="x", size=1, created_at=utcnow()))
            connection.invalidate()  # not back into the pool with busy_timeout=0
            db.rollback()
    finally:
        other.rollback()
        other.close()


def test_a_uid_committed_meanwhile_drops_that_files_staged_values(app, factory, tmp_path, monkeypatch):
    """A UID that another worker commits between the duplicate check and the
    image's insert makes the file a duplicate; the values staged for it are not
    written, and those of the chunk's other files land on their own images."""
    example_file(tmp_path / "first", "a.ex", "1.2.3", "PatientID=A\n")
    _, _, batch = run_import(app, [tmp_path / "first"])
    example_file(tmp_path / "second", "a.ex", "1.2.3", "PatientID=A\n")
    example_file(tmp_path / "second", "b.ex", "1.2.4", "PatientID=B\nPatientName=Bee\n")
    monkeypatch.setattr(Ingestor, "_check_existing", lambda self, batch_id, parsed: None)
    _, result, batch = run_import(app, [tmp_path / "second"], batch_id=batch.id)
    assert (result.imported, result.duplicates, result.errors) == (1, 1, 0)
    with factory() as db:
        values = db.execute(select(Image.sop_instance_uid, HeaderValue.value_text)
                            .join(HeaderValue, HeaderValue.image_id == Image.id)
                            .order_by(Image.sop_instance_uid, HeaderValue.value_text)).all()
    assert [tuple(v) for v in values if v[1] in {"A", "B", "Bee"}] == [
        ("1.2.3", "A"), ("1.2.4", "B"), ("1.2.4", "Bee")]


def test_a_parallel_import_adds_up_what_its_processes_report(app, factory, tmp_path):
    """Forked import processes report their counts and bytes to the parent,
    which checks them against the job-file index; the bytes no longer need a
    read of every image row (tens of megabytes of page cache at 60,000 files)."""
    from sendit_core.pipeline import import_parallel

    sizes = [example_file(tmp_path / "in", f"{i}.ex", f"1.2.{i}", "x" * i).stat().st_size for i in range(7)]
    example_file(tmp_path / "in", "same.ex", "1.2.0", "")  # identical to 0.ex: a duplicate
    (tmp_path / "in" / "junk.bin").write_bytes(b"\0" * 10)
    submission = submit(factory, app.settings, iter_files([tmp_path / "in"]), publish=False)
    result = import_parallel(app.settings, app.pm, submission, processes=2)
    assert (result.imported, result.duplicates, result.errors, result.bytes) == (7, 1, 1, sum(sizes))


def test_a_parallel_import_counts_the_files_another_worker_took(app, factory, tmp_path):
    """A standalone worker may claim some of the submission's jobs (its sweep
    publishes queued jobs): those files count too, read from the database."""
    from sendit_core.pipeline import import_parallel

    sizes = [example_file(tmp_path / "in", f"{i}.ex", f"1.2.{i}", "x" * i).stat().st_size for i in range(9)]
    submission = submit(factory, app.settings, iter_files([tmp_path / "in"]), publish=False)
    assert len(submission.job_ids) == 3
    done_elsewhere = Ingestor(app.settings, app.pm, factory).run_job(submission.job_ids[1])
    assert done_elsewhere.imported == 4
    result = import_parallel(app.settings, app.pm, submission, processes=2)
    assert (result.imported, result.duplicates, result.errors, result.bytes) == (9, 0, 0, sum(sizes))


def test_a_chunk_of_errors_alone_is_written_though_another_process_commits_meanwhile(app, factory, tmp_path,
                                                                                      monkeypatch):
    """SQLite refuses, at once, to turn a transaction's read into a write once
    another process has committed. A chunk with no image to insert reads its
    batch's known errors before it writes any: that read must not be pinned
    to a transaction the chunk had already begun."""
    import sqlite3

    engine = app.settings["sendit.engine"]
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's snapshots")
    for name in ("a.bin", "b.bin"):
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / name).write_bytes(b"\0" * 10)
    submission = submit(factory, app.settings, iter_files([tmp_path / "in"]), publish=False)
    other = sqlite3.connect(engine.url.database, isolation_level=None)  # another import process
    new_errors = Ingestor._new_errors

    def and_another_process_commits(db, batch_id, chunk, now):
        rows = new_errors(db, batch_id, chunk, now)
        other.execute("UPDATE batch SET updated_at = updated_at")
        return rows

    monkeypatch.setattr(Ingestor, "_new_errors", staticmethod(and_another_process_commits))
    try:
        result = import_now(Ingestor(app.settings, app.pm, factory), submission)
    finally:
        other.close()
    assert (result.imported, result.errors) == (0, 2)
