"""The folder convention, and what of a finished folder still needs importing.

A folder directly inside ``sendit.data_dir`` is one batch, named after it. A
name with a ``.tmp…`` extension (``study1.tmp8731``) marks a folder still being
written; hidden names (``.something``) are never batches.

Re-import idempotence (the watcher restarts, or files arrive in a folder that
was already imported) rests on the database alone:

- a folder's batch is the newest ``watcher`` batch with the folder's name whose
  recorded files lie inside this folder (or that has no files at all);
- every file the batch has seen has a :class:`~sendit_core.models.JobFile` row
  with its absolute path, in a job dated from the moment the watcher began
  listing the folder; a file is handed over again only when it is new to the
  batch, or itself changed (``max(mtime, ctime)``) after that moment;
- a file arriving in a folder (copied, renamed or linked) gets a fresh
  ``ctime``, and so does a sub-folder moved in or whose permissions are fixed:
  a folder whose files and sub-folders all changed before the batch's last
  submission holds nothing new, and is skipped without reading the batch's
  file list. Otherwise the changed files (and every file below a changed
  sub-folder) are looked up among the batch's recorded paths;
- :data:`MARGIN` covers coarse file-system clocks; a file caught by it is
  handed over once more and the pipeline counts it as a duplicate (no change).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update

from sendit_core.models import Batch, BatchStatus, IngestError, Job, JobFile, utcnow
from sendit_core.pipeline import Submission, create_jobs

log = logging.getLogger(__name__)

#: the batches' ``source``
SOURCE = "watcher"
#: seconds before a submission that still count as "after" it: file-system
#: clocks are coarse (a few milliseconds locally, more on network shares)
MARGIN = 0.25
#: how an error row for a sub-folder that could not be read begins
UNREADABLE = "cannot read the folder: "
#: at most this many candidate paths are looked up with ``IN (...)``; more
#: load the batch's whole file list in one query
LOOKUP_LIMIT = 1000


def is_unfinished(name: str) -> bool:
    """``study1.tmp8731`` (or ``study1.tmp``): still being written."""
    return Path(name).suffix.lower().startswith(".tmp")


def is_hidden(name: str) -> bool:
    return name.startswith(".")


def is_batch_name(name: str) -> bool:
    """A finished, visible folder name: the folder is a batch."""
    return not is_hidden(name) and not is_unfinished(name)


def epoch(moment: datetime) -> float:
    """Seconds since the epoch; SQLite hands timestamps back without a zone (UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def changed_at(stat: os.stat_result) -> float:
    """When a file's content or its place last changed."""
    return max(stat.st_mtime, stat.st_ctime)


# -- walking -------------------------------------------------------------------


@dataclass
class Walk:
    """The files of one folder, like :func:`sendit_core.pipeline.iter_files`
    (same display names), but sub-folders that cannot be read are reported in
    :attr:`problems` instead of being skipped silently.
    """

    folder: Path
    problems: list[tuple[Path, str]] = field(default_factory=list)
    #: True when the folder itself vanished before it could be listed
    gone: bool = False

    def _failed(self, exc: OSError) -> None:
        path = Path(exc.filename) if exc.filename else self.folder
        if isinstance(exc, FileNotFoundError):
            self.gone = self.gone or path == self.folder
            return  # deleted while we walked: nothing to import there
        self.problems.append((path, f"{UNREADABLE}{exc.strerror or exc}; its files were not imported"))

    def _walk(self) -> Iterator[tuple[str, list[str], list[str]]]:
        for root, dirs, files in os.walk(self.folder, onerror=self._failed):
            dirs.sort()
            for name in [d for d in dirs if os.path.islink(os.path.join(root, d))]:
                self.problems.append((Path(root, name), "a symbolic link to a folder: not "
                                                        "followed, its files were not imported"))
            yield root, dirs, sorted(files)

    def files(self) -> Iterator[tuple[Path, str]]:
        """Every file: ``(absolute path, "folder/relative/name")``."""
        base = self.folder.parent
        for root, _dirs, files in self._walk():
            for name in files:
                path = Path(root, name)
                yield path, str(path.relative_to(base))

    def changed(self, since: float) -> Iterator[tuple[Path, str, float]]:
        """Files that, or whose enclosing folders, changed after ``since``, with
        when the file itself changed. A folder counts because a sub-folder moved
        in keeps its files' times (only its own ``ctime`` is fresh), and because
        fixing a sub-folder's permissions changes only its own ``ctime``."""
        base = self.folder.parent
        folder_changed: dict[str, float] = {}
        for root, _dirs, files in self._walk():
            try:
                here = changed_at(os.stat(root))
            except OSError:
                continue
            here = max(here, folder_changed.get(os.path.dirname(root), 0.0))
            folder_changed[root] = here
            for name in files:
                path = Path(root, name)
                try:
                    when = changed_at(path.lstat())
                except FileNotFoundError:
                    continue
                except OSError:
                    when = float("inf")  # cannot even stat it: let the pipeline say why
                if max(when, here) > since:
                    yield path, str(path.relative_to(base)), when


# -- the folder's batch ------------------------------------------------------------


def find_batch(db, folder: Path) -> Batch | None:
    """The watcher batch that holds this folder's files, or ``None``."""
    prefix = str(folder) + os.sep
    candidates = db.scalars(select(Batch).where(Batch.source == SOURCE, Batch.name == folder.name)
                            .order_by(Batch.id.desc())).all()
    for batch in candidates:
        path = db.scalar(select(JobFile.path).join(Job, Job.id == JobFile.job_id)
                         .where(Job.batch_id == batch.id).limit(1))
        if path is None or path.startswith(prefix):
            return batch
    return None


def last_submission(db, batch: Batch) -> float:
    """When files were last handed over for this batch (its newest job)."""
    newest = db.scalar(select(func.max(Job.created_at)).where(Job.batch_id == batch.id))
    return epoch(newest or batch.created_at)


def known_files(db, batch_id: int, paths: list[str]) -> dict[str, float]:
    """Path -> when it was last submitted, for the batch's files among ``paths``."""
    query = (select(JobFile.path, func.max(Job.created_at)).join(Job, Job.id == JobFile.job_id)
             .where(Job.batch_id == batch_id).group_by(JobFile.path))
    if len(paths) <= LOOKUP_LIMIT:
        query = query.where(JobFile.path.in_(paths))
    return {path: epoch(when) for path, when in db.execute(query)}


def record_problems(db, batch_id: int, folder: Path, problems: list[tuple[Path, str]]) -> int:
    """Error rows for sub-folders that could not be read (one per folder and
    message, however often it is seen); returns how many were added."""
    base = folder.parent
    rows = {(str(path.relative_to(base))[:1024], message) for path, message in problems}
    known = set(db.execute(select(IngestError.path, IngestError.message).where(
        IngestError.batch_id == batch_id, IngestError.step == "read",
        IngestError.path.in_({path for path, _ in rows}))).all()) if rows else set()
    new = [row for row in sorted(rows) if row not in known]
    for path, message in new:
        db.add(IngestError(batch_id=batch_id, path=path, step="read", message=message, created_at=utcnow()))
    if new:
        db.flush()
        db.execute(update(Batch).where(Batch.id == batch_id).values(error_count=Batch.error_count + len(new)))
        db.execute(update(Batch).where(Batch.id == batch_id, Batch.pending_count <= 0,
                                       Batch.image_count == 0).values(status=BatchStatus.ERROR))
    return len(new)


# -- syncing ------------------------------------------------------------------------


@dataclass
class Sync:
    """What one look at a folder did."""

    folder: Path
    batch_id: int | None = None
    batch_name: str = ""
    new_batch: bool = False
    submitted: int = 0
    problems: list[tuple[Path, str]] = field(default_factory=list)
    gone: bool = False


def sync_folder(session_factory, settings: dict[str, Any], folder: Path) -> Sync:
    """Hand the folder's files the batch has not seen (or that changed since) to
    the pipeline: into the folder's batch, or a new batch named after it.

    One transaction records the jobs (and error rows for unreadable
    sub-folders); the workers are woken after the commit.
    """
    result = Sync(folder)
    listed_at = utcnow()  # what arrives from now on is new to this submission
    with session_factory() as db:
        batch = find_batch(db, folder)
        walk = Walk(folder)
        if batch is None:  # streamed: memory stays flat however big the folder
            submission = create_jobs(db, settings, walk.files(), batch_name=folder.name, source=SOURCE)
        else:
            files = _unseen(db, batch, walk)
            submission = (create_jobs(db, settings, files, batch=batch, source=SOURCE) if files
                          else Submission(batch.id, [], 0))
        result.gone, result.problems = walk.gone, walk.problems
        added = 0 if walk.gone else record_problems(db, submission.batch_id, folder, walk.problems)
        if walk.gone or not (batch is None or submission.job_ids or added):
            db.rollback()  # gone, or nothing new: leave no trace
            result.batch_id, result.batch_name = (batch.id, batch.name) if batch else (None, "")
            return result
        if submission.job_ids:  # dated from the listing, not from the end of a long one
            db.execute(update(Job).where(Job.id.in_(submission.job_ids)).values(created_at=listed_at))
        db.commit()
    from sendit_core.broker import publish_jobs  # here, as the core does: kombu only when publishing

    publish_jobs(settings, submission.job_ids)
    result.batch_id, result.batch_name = submission.batch_id, folder.name
    result.new_batch, result.submitted = batch is None, submission.file_count
    return result


def _unseen(db, batch: Batch, walk: Walk) -> list[tuple[Path, str]]:
    """The walked files the batch has not recorded, or that changed after it did."""
    candidates = list(walk.changed(last_submission(db, batch) - MARGIN))
    if not candidates:
        return []
    known = known_files(db, batch.id, [str(path) for path, _, _ in candidates])
    return [(path, name) for path, name, when in candidates
            if str(path) not in known or when > known[str(path)] - MARGIN]


# -- deleting what was imported ------------------------------------------------------


def remove_if_empty(folder: Path, data_dir: Path) -> bool:
    """Remove a watched folder's empty sub-folders, then the folder if it is
    empty; anything left (files with errors, new arrivals) keeps it. Returns
    True when the folder is gone."""
    if folder.parent != data_dir or not is_batch_name(folder.name) or folder.is_symlink() \
            or not folder.is_dir():
        return False
    for root, _dirs, files in os.walk(folder, topdown=False):
        if files:
            continue
        try:
            os.rmdir(root)  # atomic: fails if anything is (still or again) inside
        except OSError:
            pass
    return not folder.exists()
