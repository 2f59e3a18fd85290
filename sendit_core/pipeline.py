"""The ingest pipeline every source goes through.

1. A source calls :func:`submit` (or :func:`create_jobs` inside its own
   transaction, then :func:`sendit_core.broker.publish_jobs` after the commit):
   the batch, its jobs and one row per file are recorded first.
2. A worker (:class:`Ingestor`) claims a job and processes its pending files in
   chunks: parse (the ``sendit_parse_file`` hook), store atomically, then one
   transaction writes the images, their header values, the error rows, the
   files' outcomes and the batch's counters together.
3. After each commit the events hooks run; the source files are deleted when
   asked, and only for files whose outcome is committed and not an error.

Nothing is lost: a file's outcome and its image commit together, so a worker
killed at any point leaves pending files that the next claim picks up.
"""
from __future__ import annotations

import gc
import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, bindparam, case, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from . import events
from .models import (
    MAX_VALUE_LENGTH, get_session_factory, Batch, BatchStatus, FileOutcome, HeaderField, Image,
    IngestError, Job, JobFile, JobStatus, utcnow,
)
from .parsing import HeaderElement, ParsedFile, ParseError, parse_file
from .bulk import BulkWriter, placeholder
from .storage import Stored, remove_stored, same_content, store_file, stored_relpath

log = logging.getLogger(__name__)


# -- submitting -----------------------------------------------------------------


@dataclass
class Submission:
    batch_id: int
    job_ids: list[int]
    file_count: int


def iter_files(paths: Iterable[str | Path]) -> Iterator[tuple[str, str]]:
    """Yield ``(absolute path, display name)`` for files and folders (recursively,
    sorted, streaming); the display name is the path from the given folder's
    name down. Broken symlinks are yielded too: they become error rows.

    Plain strings, not :class:`~pathlib.Path` objects: a 20,000-file folder's
    paths cost 0.3 s of pathlib, before any file is imported.
    """
    for given in paths:
        root = os.path.abspath(given)
        if os.path.isdir(root):
            skip = len(os.path.join(os.path.dirname(root), ""))  # up to the folder's own name
            for folder, dirs, files in os.walk(root):
                dirs.sort()
                shown = folder[skip:]
                for name in sorted(files):
                    yield os.path.join(folder, name), os.path.join(shown, name)
        else:
            yield root, os.path.basename(root)


def create_jobs(
    db: Session,
    settings: dict[str, Any],
    files: Iterable[tuple[str | Path, str]],
    *,
    batch: Batch | None = None,
    batch_name: str | None = None,
    source: str = "cli",
    delete_source: bool | None = None,
) -> Submission:
    """Record a batch (new, or ``batch``) and jobs for ``files`` in ``db``'s transaction.

    Publish the returned job ids with :func:`sendit_core.broker.publish_jobs`
    only after the transaction commits. Memory stays flat: files are inserted
    in chunks as they are iterated.
    """
    if delete_source is None:
        delete_source = settings["sendit.import.delete_source"]
    if batch is None:
        batch = Batch(name=batch_name or f"{source}-{utcnow():%Y%m%d-%H%M%S}", source=source,
                      status=BatchStatus.QUEUED)
        db.add(batch)
        db.flush()
    job_size = settings["sendit.import.job_size"]
    job_ids: list[int] = []
    chunk: list[tuple[str, str]] = []
    total = 0

    def flush_job() -> None:
        job = Job(batch_id=batch.id, source=source, delete_source=delete_source, file_count=len(chunk))
        db.add(job)
        db.flush()
        # on the driver's cursor: SQLAlchemy's per-row parameter handling was
        # half of recording a 20,000-file folder
        connection = db.connection()
        mark = placeholder(connection.dialect)
        connection.exec_driver_sql(
            f"INSERT INTO job_file (job_id, path, name, outcome, source_deleted) "
            f"VALUES ({mark}, {mark}, {mark}, '{FileOutcome.PENDING.value}', {mark})",
            [(job.id, p, n, False) for p, n in chunk])
        job_ids.append(job.id)
        chunk.clear()

    for path, name in files:
        chunk.append((str(path), name))
        total += 1
        if len(chunk) >= job_size:
            flush_job()
    if chunk:
        flush_job()
    values: dict[str, Any] = {"pending_count": Batch.pending_count + total, "updated_at": utcnow()}
    if total:
        values.update(status=BatchStatus.QUEUED, finished_at=None)
    elif batch.image_count == 0 and batch.pending_count == 0:
        values.update(status=BatchStatus.EMPTY, finished_at=utcnow())
    db.execute(update(Batch).where(Batch.id == batch.id).values(**values))
    return Submission(batch.id, job_ids, total)


def submit(
    session_factory: sessionmaker[Session],
    settings: dict[str, Any],
    files: Iterable[tuple[str | Path, str]],
    *,
    batch_id: int | None = None,
    batch_name: str | None = None,
    source: str = "cli",
    delete_source: bool | None = None,
    publish: bool = True,
) -> Submission:
    """Record files for import in their own transaction, then wake the workers.

    :param batch_id: add to this existing batch (``LookupError`` if it is gone),
        else a new batch named ``batch_name`` is created.
    """
    with session_factory() as db:
        batch = None
        if batch_id is not None:
            batch = db.get(Batch, batch_id)
            if batch is None:
                raise LookupError(f"there is no batch {batch_id}")
        submission = create_jobs(db, settings, files, batch=batch, batch_name=batch_name,
                                 source=source, delete_source=delete_source)
        db.commit()
    if publish:
        from .broker import publish_jobs  # here: kombu is a tenth of an in-process import's start-up

        publish_jobs(settings, submission.job_ids)
    return submission


# -- processing -------------------------------------------------------------------


@dataclass
class Outcome:
    """What happened to one file, before and after the commit."""

    file_id: int
    path: Path
    name: str
    outcome: FileOutcome = FileOutcome.PENDING
    parsed: ParsedFile | None = None
    relpath: str | None = None
    size: int = 0
    step: str = ""
    message: str = ""
    image_id: int | None = None
    #: a file this attempt wrote into storage (removed again if the file is rejected)
    stored_new: bool = False

    def fail(self, step: str, message: str) -> "Outcome":
        self.outcome, self.step, self.message = FileOutcome.ERROR, step, message
        self.parsed = None
        return self


@dataclass
class JobResult:
    """Counts for one processed job (or an in-process import)."""

    imported: int = 0
    duplicates: int = 0
    errors: int = 0
    bytes: int = 0
    batch_finished: bool = False

    def add(self, other: "JobResult") -> None:
        self.imported += other.imported
        self.duplicates += other.duplicates
        self.errors += other.errors
        self.bytes += other.bytes
        self.batch_finished = self.batch_finished or other.batch_finished


def worker_identity() -> str:
    """``host:pid:token``: who claimed a job (the pid lets a local sweep see it died)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _dialect_insert(db: Session, table):
    if db.bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return dialect_insert(table)


class Ingestor:
    """Processes jobs. One per worker (it caches header field ids)."""

    MAX_CACHED_FIELDS = 200_000

    def __init__(self, settings: dict[str, Any], pm, session_factory: sessionmaker[Session],
                 identity: str | None = None):
        self.settings = settings
        self.pm = pm
        self.session_factory = session_factory
        self.identity = identity or worker_identity()
        self.storage_dir = Path(settings["sendit.storage_dir"])
        self.max_bytes = settings["sendit.import.max_file_mb"] * 1024 * 1024
        self.commit_every = settings["sendit.worker.commit_every"]
        self.fields: dict[str, int] = {}
        #: set it to make :meth:`run_job` release its job after the current chunk
        self.stop_requested = threading.Event()
        #: called with each chunk's :class:`JobResult` (progress bars)
        self.on_chunk = None
        #: prepare the next chunk in a thread while writing this one (see
        #: :meth:`_prepared_chunks`)
        self.prepare_ahead = True

    # -- jobs

    def claim(self, job_id: int) -> Job | None:
        """Claim a queued job, one whose worker went silent, or one this worker
        still holds from an attempt that failed; ``None`` if taken or done."""
        now = utcnow()
        stale = now - timedelta(seconds=self.settings["sendit.worker.stale_seconds"])
        with self.session_factory() as db:
            result = db.execute(
                update(Job)
                .where(Job.id == job_id, or_(Job.status == JobStatus.QUEUED,
                                             and_(Job.status == JobStatus.CLAIMED,
                                                  or_(Job.heartbeat_at < stale,
                                                      # ours, kept after a failed release
                                                      Job.claimed_by == self.identity))))
                .values(status=JobStatus.CLAIMED, claimed_by=self.identity, claimed_at=now,
                        heartbeat_at=now, attempts=Job.attempts + 1)
            )
            if result.rowcount != 1:
                db.rollback()
                return None
            db.execute(update(Batch).where(Batch.id == select(Job.batch_id).where(Job.id == job_id)
                                           .scalar_subquery(), Batch.status == BatchStatus.QUEUED)
                       .values(status=BatchStatus.PROCESSING, updated_at=now))
            db.commit()
            return db.get(Job, job_id)

    def run_job(self, job_id: int) -> JobResult | None:
        """Claim and process a job; ``None`` when another worker has it or it is done."""
        job = self.claim(job_id)
        if job is None:
            return None
        result = JobResult()
        try:
            for chunk in self._prepared_chunks(job):
                chunk_result = self._process_chunk(job, chunk)
                result.add(chunk_result)
                if self.on_chunk:
                    self.on_chunk(chunk_result, len(chunk))
                if self.stop_requested.is_set():
                    self.release(job.id)
                    return result
        except BaseException:
            self.release(job.id)
            raise
        with self.session_factory() as db:
            db.execute(update(Job).where(Job.id == job.id, Job.claimed_by == self.identity)
                       .values(status=JobStatus.DONE, finished_at=utcnow()))
            db.commit()
        return result

    def release(self, job_id: int) -> None:
        """Give a claimed job back to the queue (after a failure or on shutdown)."""
        try:
            with self.session_factory() as db:
                db.execute(update(Job).where(Job.id == job_id, Job.claimed_by == self.identity,
                                             Job.status == JobStatus.CLAIMED)
                           .values(status=JobStatus.QUEUED, claimed_by=None))
                db.commit()
        except Exception:  # noqa: BLE001 - the sweep re-queues it when it goes stale
            log.exception("could not release job %s", job_id)

    def _pending_chunks(self, job_id: int) -> Iterator[list[Outcome]]:
        last = 0
        while True:
            with self.session_factory() as db:
                rows = db.execute(
                    select(JobFile.id, JobFile.path, JobFile.name)
                    .where(JobFile.job_id == job_id, JobFile.outcome == FileOutcome.PENDING,
                           JobFile.id > last)
                    .order_by(JobFile.id).limit(self.commit_every)
                ).all()
            if not rows:
                return
            last = rows[-1].id
            yield [Outcome(r.id, Path(r.path), r.name) for r in rows]

    # -- one chunk

    def _process_chunk(self, job: Job, chunk: list[Outcome]) -> JobResult:
        parsed = [item for item in chunk if item.parsed is not None]
        self._check_existing(job.batch_id, parsed)
        for item in parsed:  # stored, then found to be a duplicate or a conflict
            if item.stored_new and item.outcome is not FileOutcome.PENDING:
                remove_stored(self.storage_dir, item.relpath)
        self._ensure_fields([item for item in chunk if item.outcome is FileOutcome.PENDING])
        result, finished = self._commit(job, chunk)
        self._after_commit(job, chunk, finished)
        return result

    def _prepared_chunks(self, job: Job) -> Iterator[list[Outcome]]:
        """Pending files, read, parsed and stored (no database work yet).

        One chunk ahead is prepared in a thread while the caller writes the
        current one to the database: creating the stored files waits on the
        file system's journal (~0.5 ms a file on ext4), and the database writes
        wait on the disk too, so the waits overlap instead of adding up. Chunks
        are still prepared one after the other, in order; a chunk prepared but
        never committed (stop, crash) is safe to prepare again (its stored
        files are found identical).

        Not with SQLite in several import processes at once (``import
        --processes``): there the CPUs are already busy, and the thread only
        slows the database writes, which then wait for the interpreter lock
        row after row (measured: 15 % fewer files a second on two cores).
        """
        context = PrepareContext.of(self, job.batch_id)
        if not self.prepare_ahead:
            for chunk in self._pending_chunks(job.id):
                yield _prepare_all(chunk, context)
            return
        with ThreadPoolExecutor(1, thread_name_prefix="sendit-prepare") as pool:
            ahead = None
            for chunk in self._pending_chunks(job.id):
                following = pool.submit(_prepare_all, chunk, context)
                if ahead is not None:
                    yield ahead.result()
                ahead = following
            if ahead is not None:
                yield ahead.result()

    def _check_existing(self, batch_id: int, parsed: list[Outcome]) -> None:
        """Same UID already in the batch (or earlier in this chunk): identical
        bytes are a duplicate, different bytes an error; the stored file is kept."""
        if not parsed:
            return
        uids = {item.parsed.sop_instance_uid for item in parsed}
        with self.session_factory() as db:
            existing = dict(db.execute(
                select(Image.sop_instance_uid, Image.stored_path)
                .where(Image.batch_id == batch_id, Image.sop_instance_uid.in_(uids))
            ).all())
        seen: dict[str, Outcome] = {}
        for item in parsed:
            uid = item.parsed.sop_instance_uid
            if uid in existing:
                self._duplicate_or_conflict(item, self.storage_dir / existing[uid])
            elif uid in seen:
                self._duplicate_or_conflict(item, seen[uid].path)
            else:
                seen[uid] = item

    def _duplicate_or_conflict(self, item: Outcome, other: Path) -> None:
        uid = item.parsed.sop_instance_uid
        try:
            identical = same_content(item.path, other)
        except OSError:
            identical = False
        if identical:
            item.outcome, item.parsed = FileOutcome.DUPLICATE, None
        else:
            item.fail("store", conflict_message(uid))

    def _ensure_fields(self, items: list[Outcome]) -> None:
        """Give every header path a field id, inserting new ones in their own transaction."""
        missing: dict[str, HeaderElement] = {}
        for item in items:
            for element in item.parsed.elements:
                if element.tag_path not in self.fields and element.tag_path not in missing:
                    missing[element.tag_path] = element
        if not missing:
            return
        if len(self.fields) > self.MAX_CACHED_FIELDS:
            self.fields.clear()
        with self.session_factory() as db:
            rows = [{"tag_path": e.tag_path, "keyword_path": e.keyword_path[:512],
                     "tag": _last_tag(e.tag_path), "vr": (e.vr or "UN")[:2],
                     "depth": e.tag_path.count("."), "private_creator": e.private_creator}
                    for e in missing.values()]
            stmt = _dialect_insert(db, HeaderField).on_conflict_do_nothing(index_elements=["tag_path"])
            db.execute(stmt, rows)
            found = db.execute(select(HeaderField.tag_path, HeaderField.id)
                               .where(HeaderField.tag_path.in_(list(missing)))).all()
            db.commit()
        self.fields.update(dict(found))

    def _commit(self, job: Job, chunk: list[Outcome]) -> tuple[JobResult, bool]:
        result = JobResult()
        now = utcnow()
        pending = [item for item in chunk if item.outcome is FileOutcome.PENDING]
        with self.session_factory() as db, _foreign_keys_unchecked(db):
            writer = BulkWriter(db)
            if pending:
                # Staging begins the driver's transaction (SQLite: on its temporary
                # table, no lock). The first statement on the database itself must
                # then be a write (the first image's insert): a read first would
                # pin a snapshot that SQLite refuses to turn into a write once
                # another process has committed ("database is locked", at once).
                writer.stage_values(self._value_rows(pending))
            for item in pending:
                self._insert_image(writer, job.batch_id, item, now)
            writer.insert_staged({item.file_id: item.image_id for item in pending
                                  if item.outcome is FileOutcome.IMPORTED})
            writer.close()
            errors = self._new_errors(db, job.batch_id, chunk, now)
            if errors:
                db.execute(IngestError.__table__.insert(), errors)
            db.execute(_SET_OUTCOME, [{"b_id": item.file_id, "b_outcome": item.outcome.value,
                                       "b_image": item.image_id} for item in chunk])
            result.imported = sum(item.outcome is FileOutcome.IMPORTED for item in chunk)
            result.duplicates = sum(item.outcome is FileOutcome.DUPLICATE for item in chunk)
            result.errors = sum(item.outcome is FileOutcome.ERROR for item in chunk)
            result.bytes = sum(item.size for item in chunk if item.outcome is FileOutcome.IMPORTED)
            counted = db.execute(update(Batch).where(Batch.id == job.batch_id).values(
                image_count=Batch.image_count + result.imported,
                error_count=Batch.error_count + len(errors),
                pending_count=Batch.pending_count - len(chunk),
                total_bytes=Batch.total_bytes + result.bytes,
                updated_at=now,
            )).rowcount
            if not counted:  # deleted meanwhile: its rows must not outlive it
                raise LookupError(f"batch {job.batch_id} was deleted while its files were imported")
            finished = db.execute(
                update(Batch)
                .where(Batch.id == job.batch_id, Batch.pending_count <= 0,
                       Batch.status.in_([BatchStatus.QUEUED, BatchStatus.PROCESSING]))
                .values(status=case((Batch.image_count > 0, BatchStatus.DONE),
                                    (Batch.error_count > 0, BatchStatus.ERROR),
                                    else_=BatchStatus.EMPTY),
                        finished_at=now)
            ).rowcount == 1
            db.execute(update(Job).where(Job.id == job.id).values(heartbeat_at=now))
            db.commit()
        result.batch_finished = finished
        return result, finished

    @staticmethod
    def _new_errors(db: Session, batch_id: int, chunk: list[Outcome], now) -> list[dict[str, Any]]:
        """Error rows for this chunk, minus those the batch already has (a re-import
        of the same bad file adds no second row)."""
        failed = {(item.name[:1024], item.step, item.message): item
                  for item in chunk if item.outcome is FileOutcome.ERROR}
        if not failed:
            return []
        known = set(db.execute(
            select(IngestError.path, IngestError.step, IngestError.message)
            .where(IngestError.batch_id == batch_id,
                   IngestError.path.in_({path for path, _, _ in failed}))
        ).all())
        return [{"batch_id": batch_id, "path": path, "step": step, "message": message,
                 "created_at": now}
                for (path, step, message) in failed if (path, step, message) not in known]

    def _insert_image(self, writer: BulkWriter, batch_id: int, item: Outcome, now) -> None:
        p = item.parsed
        image_id = writer.insert_image(dict(
            batch_id=batch_id, sop_instance_uid=p.sop_instance_uid[:64],
            sop_class_uid=_cut(p.sop_class_uid, 64), study_instance_uid=_cut(p.study_instance_uid, 64),
            series_instance_uid=_cut(p.series_instance_uid, 64), modality=_cut(p.modality, 16),
            instance_number=p.instance_number, transfer_syntax_uid=_cut(p.transfer_syntax_uid, 64),
            stored_path=item.relpath, original_name=item.name[:1024], size=item.size, created_at=now,
        ))
        if image_id is None:  # another worker committed the same UID meanwhile
            self._duplicate_or_conflict(item, self.storage_dir / item.relpath)
            return
        item.outcome, item.image_id = FileOutcome.IMPORTED, image_id

    def _value_rows(self, items: list[Outcome]) -> list[tuple]:
        """The header value rows of ``items``, keyed by job-file id (see
        :meth:`BulkWriter.stage_values`)."""
        fields = self.fields
        values: list[tuple] = []
        for item in items:
            file_id = item.file_id
            seen: set[tuple[int, str, int]] = set()
            for e in item.parsed.elements:
                key = (fields[e.tag_path], e.item, e.position)
                if key in seen:  # a parser listed one value twice: keep the first
                    continue
                seen.add(key)
                text = e.value_text
                values.append((file_id, key[0], e.item, e.position,
                               text if text is None or len(text) <= MAX_VALUE_LENGTH else text[:MAX_VALUE_LENGTH],
                               e.value_num))
        return values

    def _after_commit(self, job: Job, chunk: list[Outcome], finished: bool) -> None:
        if job.delete_source:
            self._delete_sources(chunk)
        imported = [item.image_id for item in chunk if item.outcome is FileOutcome.IMPORTED]
        hooks = self.pm.hook
        if not imported and not finished:
            return
        wants_images = bool(imported and hooks.sendit_image_imported.get_hookimpls())
        wants_batch = bool(finished and hooks.sendit_batch_finished.get_hookimpls())
        if not (wants_images or wants_batch):
            return
        with self.session_factory() as db:
            batch = db.get(Batch, job.batch_id)
            if wants_images:
                for image in db.scalars(select(Image).where(Image.id.in_(imported))):
                    events.image_imported(self.pm, image, batch, self.settings)
            if wants_batch:
                events.batch_finished(self.pm, batch, self.settings)

    def _delete_sources(self, chunk: list[Outcome]) -> None:
        deleted = []
        for item in chunk:
            if item.outcome in (FileOutcome.IMPORTED, FileOutcome.DUPLICATE):
                try:
                    item.path.unlink()
                    deleted.append(item.file_id)
                except FileNotFoundError:
                    deleted.append(item.file_id)
                except OSError as exc:
                    log.warning("imported %s but could not delete it: %s", item.path, exc)
        if deleted:
            with self.session_factory() as db:
                db.execute(update(JobFile).where(JobFile.id.in_(deleted)).values(source_deleted=True))
                db.commit()

    # -- recovery

    def sweep(self, include_queued: bool = True) -> list[int]:
        """Re-queue jobs whose worker died or went silent; returns the job ids to
        publish again: those, and (``include_queued``) every queued job, whose
        message may have been lost."""
        now = utcnow()
        stale = now - timedelta(seconds=self.settings["sendit.worker.stale_seconds"])
        with self.session_factory() as db:
            claimed = db.execute(select(Job.id, Job.claimed_by, Job.heartbeat_at)
                                 .where(Job.status == JobStatus.CLAIMED)).all()
            dead = [row.id for row in claimed
                    if _claimant_is_dead(row.claimed_by) or _older(row.heartbeat_at, stale)]
            if dead:
                db.execute(update(Job).where(Job.id.in_(dead), Job.status == JobStatus.CLAIMED)
                           .values(status=JobStatus.QUEUED, claimed_by=None))
            queued = db.scalars(select(Job.id).where(Job.status == JobStatus.QUEUED)
                                .order_by(Job.id)).all() if include_queued else sorted(dead)
            db.commit()
        if dead:
            log.warning("re-queued %d job(s) whose worker stopped: %s", len(dead), dead)
        return list(queued)

    def heartbeat(self) -> None:
        """Tell the others this worker's claimed jobs are alive."""
        with self.session_factory() as db:
            db.execute(update(Job).where(Job.claimed_by == self.identity,
                                         Job.status == JobStatus.CLAIMED)
                       .values(heartbeat_at=utcnow()))
            db.commit()


def conflict_message(uid: str) -> str:
    return (f"a different file with SOP Instance UID {uid} is already in this batch; "
            f"this one was not imported")


@dataclass(frozen=True)
class PrepareContext:
    """What preparing a file needs."""

    pm: Any
    settings: dict[str, Any]
    storage_dir: Path
    max_bytes: int
    batch_id: int

    @classmethod
    def of(cls, ingestor: "Ingestor", batch_id: int) -> "PrepareContext":
        return cls(ingestor.pm, ingestor.settings, ingestor.storage_dir, ingestor.max_bytes, batch_id)


def _prepare_all(chunk: list[Outcome], ctx: PrepareContext) -> list[Outcome]:
    return [prepare(item, ctx) for item in chunk]


def prepare(item: Outcome, ctx: PrepareContext) -> Outcome:
    """Check, parse and store one file (no database work); returns ``item``."""
    if _read_checks(item, ctx) and _parse(item, ctx):
        _store(item, ctx)
    return item


def _read_checks(item: Outcome, ctx: PrepareContext) -> bool:
    path = item.path
    try:
        if path.is_symlink() and not path.exists():
            item.fail("read", f"broken symbolic link (points to {os.readlink(path)})")
            return False
        stat = path.stat()
    except FileNotFoundError:
        item.fail("read", "the file is gone (deleted or moved before it was imported)")
        return False
    except OSError as exc:
        item.fail("read", f"cannot read the file: {exc.strerror or exc}")
        return False
    if not path.is_file():
        item.fail("read", "not a regular file")
        return False
    item.size = stat.st_size
    if item.size == 0:
        item.fail("read", "empty file (0 bytes)")
        return False
    if item.size > ctx.max_bytes:
        item.fail("read", f"file is {item.size / 2**20:.0f} MB, larger than the limit "
                          f"sendit.import.max_file_mb = {ctx.settings['sendit.import.max_file_mb']}")
        return False
    if not os.access(path, os.R_OK):
        item.fail("read", "cannot read the file: permission denied")
        return False
    return True


def _parse(item: Outcome, ctx: PrepareContext) -> bool:
    try:
        parsed = parse_file(ctx.pm, item.path, ctx.settings)
    except ParseError as exc:
        item.fail("parse", str(exc))
        return False
    except Exception as exc:  # noqa: BLE001 - a parser bug is one file's error
        log.exception("parser failed on %s", item.path)
        item.fail("parse", f"the parser failed: {type(exc).__name__}: {exc}")
        return False
    if parsed is None:
        item.fail("parse", "not a DICOM file (no parser accepted it)")
        return False
    if not parsed.sop_instance_uid:
        item.fail("parse", "no SOP Instance UID")
        return False
    item.parsed = parsed
    return True


def _store(item: Outcome, ctx: PrepareContext) -> None:
    """Store the file; never overwrites (identical bytes already there are fine)."""
    item.relpath = stored_relpath(ctx.batch_id, item.parsed)
    try:
        stored = store_file(item.path, ctx.storage_dir, item.relpath,
                            fsync=ctx.settings["sendit.storage.fsync"])
    except OSError as exc:
        item.fail("store", f"cannot store the file: {exc.strerror or exc}")
        return
    if stored is Stored.CONFLICT:
        item.fail("store", conflict_message(item.parsed.sop_instance_uid))
    item.stored_new = stored is Stored.NEW


_JOB_FILE = JobFile.__table__
_SET_OUTCOME = (update(_JOB_FILE).where(_JOB_FILE.c.id == bindparam("b_id"))
                .values(outcome=bindparam("b_outcome"), image_id=bindparam("b_image")))


@contextmanager
def _foreign_keys_unchecked(db: Session):
    """SQLite: no foreign key lookups in ``db``'s next transaction.

    A chunk's rows are consistent by construction: its images reference the
    batch its transaction has just found (the counters' update), its values
    those images and header fields, which are never deleted. Checking each of
    ~111 values a file against two parent tables is a sixth of SQLite's work
    for them, done while every other import process waits for the database.
    The connection gets its checks back whatever happens (rolled back first:
    SQLite ignores the pragma inside a transaction), or is discarded.
    """
    if db.bind.dialect.name != "sqlite":
        yield
        return
    connection = db.connection()
    connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        try:
            db.rollback()  # nothing after a commit; an unfinished transaction is undone
            connection = db.connection()
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            restored = connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        except Exception:  # noqa: BLE001 - the body's own error, if any, goes on
            restored = False
        if not restored:  # never back into the pool without its checks
            connection.invalidate()


def _older(moment, limit) -> bool:
    if moment is None:
        return True
    if moment.tzinfo is None:  # SQLite hands back naive datetimes
        limit = limit.replace(tzinfo=None)
    return moment < limit


def _claimant_is_dead(claimed_by: str | None) -> bool:
    """True when the claiming worker ran on this host and its process is gone."""
    if not claimed_by:
        return True
    host, _, rest = claimed_by.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(int(pid))


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _last_tag(tag_path: str) -> int:
    last = tag_path.rsplit(".", 1)[-1]
    try:
        return int(last, 16)
    except ValueError:
        return 0


def _cut(value: str | None, length: int) -> str | None:
    return value[:length] if value else value


#: Allocations (less deallocations) of tracked objects between two collections
#: of the youngest generation in an ingest process (Python's default: 700).
INGEST_GC_THRESHOLD = 20_000


@contextmanager
def gc_tuned_for_ingest() -> Iterator[None]:
    """Make the cyclic garbage collector cheap while this process ingests.

    Each file makes a few hundred objects (rows, tuples, strings) that live
    until its chunk is written, so with the defaults the collector ran every
    few files, and its older generations, which hold every module, class and
    mapper of the application, were walked again and again: 12 % of an import
    process's time. Everything alive when the block starts is moved out of
    the collector's sight (``gc.freeze``, which also keeps forked import
    processes from copying those pages) and the youngest generation is
    collected less often; cycles are still collected. Both are undone when
    the block ends.
    """
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(INGEST_GC_THRESHOLD, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def import_now(ingestor: Ingestor, submission: Submission) -> JobResult:
    """Process a submission's jobs in this process (``sendit import --now``)."""
    total = JobResult()
    with gc_tuned_for_ingest():
        for job_id in submission.job_ids:
            result = ingestor.run_job(job_id)
            if result is not None:
                total.add(result)
    return total


def import_parallel(settings: dict[str, Any], pm, submission: Submission, processes: int,
                    progress=None) -> JobResult:
    """Process a submission's jobs in ``processes`` forked workers, each a whole
    pipeline (parse, store, write); the database arbitrates who takes which job.

    :param progress: called now and then with the number of files done so far.
    """
    import multiprocessing

    engine = settings["sendit.engine"]
    context = multiprocessing.get_context("fork")
    prepare_ahead = not (processes > 1 and engine.dialect.name == "sqlite")
    reports = context.SimpleQueue()
    children = [context.Process(target=_work_on, args=(settings, pm, submission, prepare_ahead, reports),
                                name=f"sendit-import-{n}", daemon=True) for n in range(processes)]
    engine.dispose()  # no pooled connection may cross the fork
    for child in children:
        child.start()
    factory = get_session_factory(engine)
    try:
        while any(child.is_alive() for child in children):
            for child in children:
                child.join(0.25)
            if progress:
                progress(_files_done(factory, submission))
    except BaseException:
        for child in children:
            child.terminate()
        raise
    failed = [child.name for child in children if child.exitcode != 0]
    if failed:
        raise RuntimeError(f"import process(es) {', '.join(failed)} failed; see the log above")
    reported = JobResult()
    while not reports.empty():
        reported.add(reports.get())
    reports.close()
    counts = _outcome_counts(factory, submission)
    if progress:
        progress(_done(counts))
    if counts == {FileOutcome.IMPORTED: reported.imported, FileOutcome.DUPLICATE: reported.duplicates,
                  FileOutcome.ERROR: reported.errors}:
        return reported
    # another worker (a standalone one, sweeping queued jobs) took some of the
    # jobs: count them all from the database
    return submission_result(factory, submission)


def _work_on(settings: dict[str, Any], pm, submission: Submission, prepare_ahead: bool = True,
             reports=None) -> None:
    """A forked import process: take every job nobody else has; put what it did
    in ``reports`` (a queue) at the end."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    # the engine is get_engine's: forked, it starts with an empty pool of its own
    # (the parent's connections stay the parent's)
    ingestor = Ingestor(settings, pm, get_session_factory(settings["sendit.engine"]))
    ingestor.prepare_ahead = prepare_ahead
    total = import_now(ingestor, submission)
    if reports is not None:
        reports.put(total)


def _files_done(factory, submission: Submission) -> int:
    return _done(_outcome_counts(factory, submission))


def _done(counts: dict[FileOutcome, int]) -> int:
    return sum(n for outcome, n in counts.items() if outcome is not FileOutcome.PENDING)


def _outcome_counts(factory, submission: Submission) -> dict[FileOutcome, int]:
    """How many of a submission's files have each outcome (``PENDING`` left out
    when none is); read from the job-file index alone."""
    with factory() as db:
        rows = db.execute(select(JobFile.outcome, func.count())
                          .where(JobFile.job_id.in_(submission.job_ids))
                          .group_by(JobFile.outcome)).all()
    counts = {FileOutcome.IMPORTED: 0, FileOutcome.DUPLICATE: 0, FileOutcome.ERROR: 0}
    counts.update(dict(rows))
    return counts


def submission_result(factory, submission: Submission) -> JobResult:
    """What became of a submission's files, counted from the database.

    It reads every imported image's row (for the bytes): with hundreds of
    thousands of files, tens of megabytes of SQLite's page cache."""
    result = JobResult()
    with factory() as db:
        rows = db.execute(
            select(JobFile.outcome, func.count(), func.coalesce(func.sum(Image.size), 0))
            .outerjoin(Image, Image.id == JobFile.image_id)
            .where(JobFile.job_id.in_(submission.job_ids))
            .group_by(JobFile.outcome)
        ).all()
    for outcome, count, size in rows:
        if outcome is FileOutcome.IMPORTED:
            result.imported, result.bytes = count, int(size)
        elif outcome is FileOutcome.DUPLICATE:
            result.duplicates = count
        elif outcome is FileOutcome.ERROR:
            result.errors = count
    return result


def wait_for_batch(session_factory, batch_id: int, timeout: float | None = None,
                   poll: float = 0.5, progress=None) -> Batch:
    """Block until a batch has no pending files (or the timeout passes); return it."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        with session_factory() as db:
            batch = db.get(Batch, batch_id)
        if progress:
            progress(batch)
        if batch.pending_count <= 0 and batch.status not in (BatchStatus.QUEUED, BatchStatus.PROCESSING):
            return batch
        if deadline is not None and time.monotonic() > deadline:
            return batch
        time.sleep(poll)
