"""Streamed uploads: a multipart/form-data request body into a staging folder,
then into the ingest pipeline as one submission.

:func:`receive_upload` is what an upload view calls (the upload page, the API's
``POST /api/batches`` and ``POST /api/batches/{id}/images``)::

    from sendit_core.uploads import UploadError, receive_upload

    try:
        result = receive_upload(request, batch=None)   # or an existing Batch
    except UploadError as exc:
        ...  # exc.status (an HTTP status code) and str(exc), a message for people

How a request is handled:

1. Refused before a byte of the body is read when it is not multipart (415),
   declares a ``Content-Length`` above ``sendit.upload.max_request_mb`` (413),
   or carries a wrong ``X-CSRF-Token`` header (400).
2. The body is read in small chunks and parsed as it arrives (the ``multipart``
   package's push parser); each file part is written to a temporary file in a
   fresh folder under the staging root, and renamed to its sanitized name only
   once it is complete. No file and no request is ever held in memory.
3. A file above ``sendit.upload.max_file_mb``, more than
   ``sendit.upload.max_files`` files, a body that ends early (a dropped
   connection), a missing or wrong CSRF token (for browser sessions it must be
   the ``X-CSRF-Token`` header or a ``csrf_token`` field *before* the files), a
   malformed body or an empty selection raise :class:`UploadError` at once; the
   staging folder is removed, nothing is recorded.
4. Otherwise the folder moves to ``<staging root>/<batch id>-<stamp>/`` and the
   batch (new, source ``upload``, or the given one) gets one job for the files,
   in the request's transaction; the job is published after the commit. A
   failed commit removes the staged files again.

Views that call :func:`receive_upload` must be registered with
``require_csrf=False`` (it checks the token itself: Pyramid's own check would
parse the whole body first), and the request must not be made seekable first:
:func:`includeme` installs an execution policy that leaves multipart POSTs out
of pyramid_retry's retries, which would copy every body before the view runs.

Staged files are the import's sources with ``delete_source`` on: the worker
deletes each one once its import has committed; files that failed stay until
their batch is deleted (:func:`prune_batch`, :func:`sweep_staging`).
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from multipart import MultipartError, MultipartSegment, ParserLimitReached, PushMultipartParser, \
    parse_options_header
from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from .models import Batch, BatchStatus, utcnow
from .settings import Context, Setting, positive, to_int

log = logging.getLogger(__name__)

MB = 1024 * 1024
#: bytes read from the request per step
CHUNK = 1024 * 1024
#: the multipart field for files (any part with a file name is taken as a file)
FILES_FIELD = "files"
#: the form field naming a new batch
NAME_FIELD = "name"
MAX_BATCH_NAME = 255
#: text fields read (csrf_token, name) are capped at this many bytes
MAX_FIELD_BYTES = 4096
#: longest part header line (a 1000-character file name with its folders fits)
MAX_HEADER_BYTES = 16 * 1024
#: a path component is cut to this many UTF-8 bytes (file systems allow 255)
MAX_COMPONENT_BYTES = 200
#: deepest folder structure kept from an uploaded path
MAX_DEPTH = 32
#: longest relative path kept (UTF-8 bytes): leading folders go first
MAX_PATH_BYTES = 1000
#: an unfinished staging folder untouched for this long belongs to a dead request
STALE_INCOMING_SECONDS = 24 * 3600
#: a batch folder changed this recently is left alone by the sweep (its batch may
#: not be committed yet: the upload moves the folder in before the commit)
FRESH_FOLDER_SECONDS = 3600
#: orphaned staging folders are looked for at most this often per process
SWEEP_EVERY_SECONDS = 600
INCOMING = ".incoming"
CSRF_MESSAGE = ("The form's security token (CSRF) is missing or has expired, so nothing was "
                "uploaded. Reload the page and try again.")


def to_optional_path(value: str, ctx: Context) -> Path | str:
    """A folder (relative to the ini file's folder), or ``""`` when empty (the default)."""
    value = value.strip()
    if not value:
        return ""
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else (ctx.here / path).resolve()


#: The keys :func:`receive_upload` reads. The upload plugin declares them through
#: ``sendit_settings``; any plugin calling :func:`receive_upload` may declare them
#: too (identical declarations are allowed). Undeclared, the defaults apply.
UPLOAD_SETTINGS: tuple[Setting, ...] = (
    Setting("sendit.upload.max_file_mb", "1024", positive(to_int),
            "Largest file an upload may carry, in MB; a larger one is refused (413) as soon "
            "as it passes the limit."),
    Setting("sendit.upload.max_request_mb", "1024", positive(to_int),
            "Largest upload request, in MB (the upload page splits bigger selections into "
            "several requests); refused (413) before its body is read. Under waitress, keep "
            "its max_request_body_size (1 GB by default) at least this large."),
    Setting("sendit.upload.max_files", "10000", positive(to_int),
            "Most files one upload request may carry (the upload page splits bigger "
            "selections into several requests)."),
    Setting("sendit.upload.staging_dir", "", to_optional_path,
            "Where uploads wait for the worker (default: <sendit.var_dir>/uploads). Workers "
            "on other machines must see it at the same path."),
)
_DEFAULTS = {s.key: s for s in UPLOAD_SETTINGS}


def upload_setting(settings: dict[str, Any], key: str) -> Any:
    """A converted ``sendit.upload.*`` value, or its default when nobody declared it."""
    if key in settings and not isinstance(settings[key], str):
        return settings[key]
    spec = _DEFAULTS[key]
    here = Path(settings.get("sendit.here") or os.getcwd())
    return spec.convert(settings.get(key, spec.default), Context(here))


@dataclass(frozen=True)
class Limits:
    max_file: int
    max_request: int
    max_files: int

    @classmethod
    def of(cls, settings: dict[str, Any]) -> "Limits":
        return cls(upload_setting(settings, "sendit.upload.max_file_mb") * MB,
                   upload_setting(settings, "sendit.upload.max_request_mb") * MB,
                   upload_setting(settings, "sendit.upload.max_files"))


def staging_root(settings: dict[str, Any]) -> Path:
    """The folder uploads are staged in."""
    return upload_setting(settings, "sendit.upload.staging_dir") or Path(settings["sendit.var_dir"]) / "uploads"


class UploadError(Exception):
    """An upload was refused; nothing of it was kept.

    :param message: what went wrong, for people (``str(exc)``).
    :param status: the HTTP status to answer with: 400 (bad or empty request,
        CSRF), 404 (the batch was deleted meanwhile), 411 (no length), 413 (too
        large or too many files), 415 (not multipart/form-data), 500/503/507
        (the server could not store it: an error, a busy database, a full disk).
    """

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class UploadResult:
    """What :func:`receive_upload` recorded."""

    #: the batch the files went into (in the request's database session)
    batch: Batch
    #: the first (usually only) job of the submission
    job_id: int
    job_ids: list[int]
    #: ``(sanitized name, size in bytes)`` per staged file, in the order received
    files: list[tuple[str, int]]
    #: True when this upload created the batch
    created: bool = False
    #: the staging folder holding the files until they are imported
    folder: Path | None = None

    @property
    def bytes(self) -> int:
        return sum(size for _, size in self.files)


# -- file names -------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"^[A-Za-z]:$")


def safe_relpath(raw: str | None) -> str:
    """A relative path made from an uploaded file name that cannot leave its folder.

    Backslashes count as separators; ``..`` goes up but never above the start,
    empty and ``.`` components and a leading drive letter are dropped (so
    ``../x``, ``a/../../x`` and ``C:\\x`` all become ``x``, ``/etc/x`` becomes
    ``etc/x``); control characters (NUL included) become ``_``; components
    are cut to :data:`MAX_COMPONENT_BYTES` bytes (keeping the extension, with a
    short hash so different long names stay different), and only the last
    :data:`MAX_DEPTH` components, within :data:`MAX_PATH_BYTES`, are kept.
    Never empty (``unnamed``).
    """
    parts: list[str] = []
    for part in (raw or "").replace("\\", "/").split("/"):
        part = _CONTROL.sub("_", part).strip()
        if part == "..":
            if parts:
                parts.pop()
            continue
        if part in ("", ".") or (not parts and _DRIVE.match(part)):
            continue
        parts.append(_fit(part))
    parts = parts[-MAX_DEPTH:]
    while len(parts) > 1 and len("/".join(parts).encode("utf-8", "replace")) > MAX_PATH_BYTES:
        parts.pop(0)
    return "/".join(parts) or "unnamed"


def _fit(part: str) -> str:
    encoded = part.encode("utf-8", "surrogatepass")
    if len(encoded) <= MAX_COMPONENT_BYTES:
        return part.encode("utf-8", "replace").decode("utf-8") if _has_surrogates(part) else part
    stem, dot, ext = part.rpartition(".")
    if not dot or not stem or len(ext.encode()) > 16:
        stem, ext = part, ""
    ext = f".{ext}" if ext else ""
    digest = hashlib.sha1(encoded).hexdigest()[:10]
    room = MAX_COMPONENT_BYTES - len(ext.encode("utf-8", "replace")) - len(digest) - 1
    head = stem.encode("utf-8", "replace")[:room].decode("utf-8", "ignore")
    return f"{head}~{digest}{ext}"


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def _clean_batch_name(raw: str) -> str:
    name = " ".join(_CONTROL.sub(" ", raw).split())
    if len(name) > MAX_BATCH_NAME:
        raise UploadError(f"The batch name is too long ({len(name)} characters; at most "
                          f"{MAX_BATCH_NAME}).", 400)
    return name


def batch_folder_name(batch: Batch) -> str:
    """``<id>-<created, UTC seconds>``: a batch id SQLite gives out again after a
    deletion never matches the old batch's folder."""
    return f"{int(batch.id)}-{_stamp(batch.created_at)}"


def _stamp(moment: datetime | None) -> str:
    if moment is None:
        return "0"
    if moment.tzinfo is None:  # SQLite hands back naive UTC datetimes
        moment = moment.replace(tzinfo=timezone.utc)
    return str(int(moment.timestamp()))


# -- CSRF ---------------------------------------------------------------------------


class _Csrf:
    """Pyramid's configured CSRF check, done without parsing the body first:
    the header now, or the form field when it streams past (before any file)."""

    def __init__(self, request):
        from pyramid.csrf import check_csrf_origin
        from pyramid.interfaces import ICSRFStoragePolicy, IDefaultCSRFOptions

        self.request = request
        self.policy = request.registry.queryUtility(ICSRFStoragePolicy)
        options = request.registry.queryUtility(IDefaultCSRFOptions)
        self.pending = bool(options and options.require_csrf and self.policy is not None)
        if self.pending and options.callback is not None and not options.callback(request):
            self.pending = False
        if not self.pending:
            return
        self.field = options.token or "csrf_token"
        if options.check_origin and not check_csrf_origin(
                request, raises=False, allow_no_origin=options.allow_no_origin):
            raise UploadError("The upload came from another site, so it was refused.", 400)
        header = request.headers.get(options.header or "X-CSRF-Token", "") if options.header else ""
        if header:
            self.check(header)

    def check(self, supplied: str) -> None:
        if not supplied or not self.policy.check_csrf_token(self.request, supplied):
            raise UploadError(CSRF_MESSAGE, 400)
        self.pending = False


# -- receiving ------------------------------------------------------------------------


@dataclass
class _Part:
    segment: MultipartSegment
    is_file: bool
    name: str = ""
    temp: Path | None = None
    fd: int = -1
    size: int = 0
    text: bytearray = field(default_factory=bytearray)


class _Receiver:
    """Turns parser events into staged files and form values."""

    def __init__(self, folder: Path, limits: Limits, csrf: _Csrf, fsync: bool):
        self.folder = folder
        self.files_dir = folder / "files"
        self.limits = limits
        self.csrf = csrf
        self.fsync = fsync
        self.part: _Part | None = None
        self.files: list[tuple[str, int, Path]] = []
        self.batch_name = ""
        self.counter = 0

    def event(self, event) -> None:
        if isinstance(event, MultipartSegment):
            self.start(event)
        elif event is None:
            self.end()
        else:
            self.data(event)

    def start(self, segment: MultipartSegment) -> None:
        is_file = segment.filename is not None
        part = self.part = _Part(segment, is_file)
        if not is_file:
            return
        if self.csrf.pending:
            raise UploadError(CSRF_MESSAGE, 400)
        if segment.filename == "" and segment.name == FILES_FIELD:
            return  # an empty file input: opened only if bytes follow
        self._open(part)

    def _open(self, part: _Part) -> None:
        if len(self.files) >= self.limits.max_files:
            raise UploadError(f"More than {self.limits.max_files:,} files in one upload (the limit "
                              f"sendit.upload.max_files); send them in several uploads.", 413)
        part.name = safe_relpath(part.segment.filename)
        if not self.files:
            self.files_dir.mkdir(parents=True, exist_ok=True)
        self.counter += 1
        part.temp = self.folder / f"part-{self.counter}"
        part.fd = os.open(part.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                          0o640)

    def data(self, chunk: bytes) -> None:
        part = self.part
        if part.is_file:
            if part.fd < 0:
                self._open(part)
            part.size += len(chunk)
            if part.size > self.limits.max_file:
                raise UploadError(f"“{part.name}” is larger than the upload limit of "
                                  f"{self.limits.max_file // MB:,} MB per file "
                                  f"(sendit.upload.max_file_mb); nothing was uploaded.", 413)
            _write_all(part.fd, chunk)
        elif part.segment.name in (self.csrf_field, NAME_FIELD):
            part.text += chunk
            if len(part.text) > MAX_FIELD_BYTES:
                raise UploadError(f"The form field “{part.segment.name}” is too long.", 400)

    @property
    def csrf_field(self) -> str:
        return getattr(self.csrf, "field", "csrf_token")

    def end(self) -> None:
        part, self.part = self.part, None
        if part.is_file:
            if part.fd >= 0:
                self._finish(part)
            return
        value = part.text.decode("utf-8", "replace")
        if part.segment.name == self.csrf_field and self.csrf.pending:
            self.csrf.check(value.strip())
        elif part.segment.name == NAME_FIELD:
            self.batch_name = _clean_batch_name(value)

    def _finish(self, part: _Part) -> None:
        try:
            if self.fsync:
                os.fsync(part.fd)
        finally:
            os.close(part.fd)
            part.fd = -1
        target = self._place(part.name)
        os.rename(part.temp, target)
        name = target.relative_to(self.files_dir).as_posix()
        self.files.append((name, part.size, target))

    def _place(self, relpath: str) -> Path:
        """A free path for ``relpath`` inside the files folder (``x (2).dcm`` on a clash)."""
        target = self.files_dir / relpath
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):  # "a" is a file and "a/b" comes later
            target = self.files_dir / _fit(relpath.replace("/", "_"))
        stem, dot, ext = target.name.rpartition(".")
        if not dot or not stem:
            stem, ext = target.name, ""
        n = 1
        while target.exists() or target.is_symlink():
            n += 1
            target = target.with_name(f"{stem} ({n}){'.' + ext if ext else ''}")
        root = os.path.abspath(self.files_dir)
        if os.path.commonpath([root, os.path.abspath(target)]) != root:  # never: names are sanitized
            raise UploadError("A file name could not be made safe; nothing was uploaded.", 400)
        return target

    def abort(self) -> None:
        if self.part is not None and self.part.fd >= 0:
            os.close(self.part.fd)
            self.part.fd = -1


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _boundary(request) -> str:
    content_type, options = parse_options_header(request.headers.get("Content-Type", ""))
    if content_type != "multipart/form-data":
        shown = content_type or "no Content-Type"
        raise UploadError(f"Uploads must be sent as multipart/form-data (this request is {shown}), "
                          f"with the files in the field “{FILES_FIELD}”.", 415)
    boundary = options.get("boundary", "")
    if not boundary or len(boundary) > 200:
        raise UploadError("The multipart/form-data request has no valid boundary.", 400)
    return boundary


def _stream(request, parser: PushMultipartParser, receiver: _Receiver, length: int | None,
            limits: Limits) -> None:
    source = request.environ["wsgi.input"]
    received = 0
    while True:
        want = CHUNK if length is None else min(CHUNK, length - received)
        chunk = source.read(want) if want > 0 else b""
        if not chunk:
            break
        received += len(chunk)
        if received > limits.max_request:
            raise UploadError(_too_large(limits), 413)
        for event in parser.parse(chunk):
            receiver.event(event)
        if parser.closed:
            break
    if parser.closed:  # the final boundary came (anything after it is ignored)
        return
    if length is not None and received < length:
        raise UploadError(f"The upload was interrupted: {received:,} of {length:,} bytes arrived. "
                          f"Nothing was kept; try again.", 400)
    try:
        parser.close()
    except MultipartError:
        raise UploadError("The upload ended before it was complete (a dropped connection?). "
                          "Nothing was kept; try again.", 400) from None


def _too_large(limits: Limits) -> str:
    return (f"The upload is larger than the limit of {limits.max_request // MB:,} MB per request "
            f"(sendit.upload.max_request_mb); send fewer files at a time.")


def receive_upload(request, batch: Batch | None = None) -> UploadResult:
    """Stream the request's multipart body into staging and submit it for import.

    :param request: a Pyramid request whose body is ``multipart/form-data``,
        files in the (repeatable) field ``files``, and for a new batch an
        optional ``name`` field. Browser sessions prove themselves with the
        ``X-CSRF-Token`` header or a ``csrf_token`` field before the files.
    :param batch: an existing :class:`~sendit_core.models.Batch` of
        ``request.dbsession`` to add to; ``None`` creates a new batch (source
        ``upload``, named from ``name`` or ``upload-<date>-<time>``).
    :returns: an :class:`UploadResult` (``.batch``, ``.job_id``, ``.files``).
    :raises UploadError: with ``.status`` and a message for people; nothing of
        the upload is left in staging or in the database.
    """
    settings = request.registry.settings
    limits = Limits.of(settings)
    boundary = _boundary(request)
    length = request.content_length
    if length is not None and length > limits.max_request:
        raise UploadError(_too_large(limits), 413)
    if length is None and not request.environ.get("wsgi.input_terminated"):
        raise UploadError("The upload has no Content-Length; send one (or use chunked encoding "
                          "through a server that supports it).", 411)
    csrf = _Csrf(request)
    root = staging_root(settings)
    _maybe_sweep(settings, request.registry.get("dbsession_factory"))
    folder = _new_incoming(root)
    receiver = _Receiver(folder, limits, csrf, settings.get("sendit.storage.fsync", False))
    parser = PushMultipartParser(boundary, content_length=-1 if length is None else length,
                                 max_header_size=MAX_HEADER_BYTES)
    try:
        try:
            _stream(request, parser, receiver, length, limits)
        except ParserLimitReached as exc:
            raise UploadError(f"The upload's form data is malformed ({exc}).", 400) from None
        except MultipartError as exc:
            raise UploadError(f"The upload is not valid multipart/form-data ({exc}).", 400) from None
        except OSError as exc:
            raise _storage_error(exc) from None
        if csrf.pending:
            raise UploadError(CSRF_MESSAGE, 400)
        if not receiver.files:
            raise UploadError("No files were selected: choose one or more files or a folder "
                              f"(multipart field “{FILES_FIELD}”).", 400)
        return _submit(request, settings, root, folder, receiver, batch)
    except BaseException:
        receiver.abort()
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _storage_error(exc: OSError) -> UploadError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return UploadError("The server's disk is full, so the upload could not be stored. "
                           "Nothing was kept; ask the administrator to free some space.", 507)
    log.error("could not stage an upload: %s", exc)
    return UploadError(f"The server could not store the upload ({exc.strerror or exc}); nothing "
                       f"was kept. The details are in the server's log.", 500)


def _new_incoming(root: Path) -> Path:
    incoming = root / INCOMING
    try:
        incoming.mkdir(parents=True, exist_ok=True)
        folder = incoming / f"{utcnow():%Y%m%dT%H%M%S}-{secrets.token_hex(6)}"
        folder.mkdir()
    except OSError as exc:
        raise _storage_error(exc) from None
    return folder


def _submit(request, settings, root: Path, incoming: Path, receiver: _Receiver,
            batch: Batch | None) -> UploadResult:
    """Record the batch and the job in the request's transaction; publish after the commit."""
    from .pipeline import create_jobs

    db = request.dbsession
    created = batch is None
    try:
        if created:
            batch = Batch(name=receiver.batch_name or f"upload-{utcnow():%Y%m%d-%H%M%S}",
                          source="upload", status=BatchStatus.QUEUED, created_at=utcnow())
            db.add(batch)
            db.flush()
        else:
            # lock the row (PostgreSQL) / take the write lock (SQLite): the batch
            # cannot be deleted between this check and the job's rows
            touched = db.execute(update(Batch).where(Batch.id == batch.id)
                                 .values(updated_at=utcnow())).rowcount
            if touched != 1:
                raise UploadError(f"Batch {batch.id} was deleted while the files were uploading; "
                                  f"nothing was kept.", 404)
        final = _move_into_place(incoming, root / batch_folder_name(batch) / incoming.name)
        try:
            files = [(str(final / "files" / name), name) for name, _, _ in receiver.files]
            submission = create_jobs(db, settings, files, batch=batch, source="upload", delete_source=True)
            db.flush()
        except BaseException:
            shutil.rmtree(final, ignore_errors=True)
            raise
    except SQLAlchemyError as exc:
        log.exception("could not record an upload")
        request.tm.doom()
        raise UploadError("The database is busy or unavailable, so the upload was not recorded. "
                          "Nothing was kept; try again in a moment.", 503) from exc
    db.expire(batch)
    txn = request.tm.get()
    txn.addAfterCommitHook(_after_commit, args=(settings, submission.job_ids, final))
    txn.addAfterAbortHook(_after_commit, args=(False, settings, submission.job_ids, final))
    log.info("upload: %d file(s), %d bytes staged in %s for batch %s", len(receiver.files),
             sum(size for _, size, _ in receiver.files), final, batch.id)
    return UploadResult(batch=batch, job_id=submission.job_ids[0], job_ids=submission.job_ids,
                        files=[(name, size) for name, size, _ in receiver.files], created=created,
                        folder=final)


def _move_into_place(incoming: Path, final: Path) -> Path:
    """Rename the finished folder under its batch's folder (a concurrent prune of an
    empty batch folder may remove the parent between mkdir and rename: retry)."""
    for attempt in range(5):
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(incoming, final)
            return final
        except FileNotFoundError:
            if attempt == 4 or not incoming.exists():
                raise
        except OSError as exc:
            raise _storage_error(exc) from None
    return final  # pragma: no cover


def _after_commit(committed: bool, settings: dict[str, Any], job_ids: list[int], folder: Path) -> None:
    if committed:
        from .broker import publish_jobs

        publish_jobs(settings, job_ids)
    else:
        shutil.rmtree(folder, ignore_errors=True)
        prune_empty(folder.parent)


# -- after the import -------------------------------------------------------------------


def prune_empty(folder: Path) -> None:
    """Remove ``folder``'s empty sub-folders, and the folder itself if it ends up empty."""
    if not folder.is_dir():
        return
    for path, dirs, files in os.walk(folder, topdown=False):
        if not files:
            try:
                os.rmdir(path)
            except OSError:
                pass  # not empty (a sub-folder with a failed file), or gone


def prune_batch(settings: dict[str, Any], batch: Batch) -> None:
    """After a batch's import: the worker has deleted every imported upload;
    remove the folders that are left empty. Files that failed stay."""
    prune_empty(staging_root(settings) / batch_folder_name(batch))


def failed_uploads(settings: dict[str, Any], batch: Batch) -> Path | None:
    """The folder keeping a batch's uploaded files that failed, if there is one."""
    folder = staging_root(settings) / batch_folder_name(batch)
    return folder if folder.is_dir() else None


_last_sweep: dict[Path, float] = {}
_sweep_lock = threading.Lock()


def _maybe_sweep(settings: dict[str, Any], session_factory) -> None:
    if session_factory is None:
        return
    root = staging_root(settings)
    now = time.monotonic()
    with _sweep_lock:
        if now - _last_sweep.get(root, -SWEEP_EVERY_SECONDS) < SWEEP_EVERY_SECONDS:
            return
        _last_sweep[root] = now
    try:
        sweep_staging(settings, session_factory)
    except Exception:  # noqa: BLE001 - housekeeping must never fail an upload
        log.exception("could not sweep the upload staging folder %s", root)


def sweep_staging(settings: dict[str, Any], session_factory, *, now: float | None = None) -> list[Path]:
    """Remove staging folders nobody needs: those of deleted batches (their
    failed files go with the batch; left alone for :data:`FRESH_FOLDER_SECONDS`
    after their last change) and unfinished ones of requests that died
    (untouched for :data:`STALE_INCOMING_SECONDS`). Returns what was removed."""
    root = staging_root(settings)
    if not root.is_dir():
        return []
    now = time.time() if now is None else now
    removed: list[Path] = []
    folders: dict[int, list[Path]] = {}
    for entry in os.scandir(root):
        match = re.fullmatch(r"(\d+)-(\d+)", entry.name)
        if match and entry.is_dir(follow_symlinks=False):
            folders.setdefault(int(match.group(1)), []).append(Path(entry.path))
    if folders:
        with session_factory() as db:
            alive = {batch_folder_name(b) for b in db.scalars(
                select(Batch).where(Batch.id.in_(list(folders))))}
        for paths in folders.values():
            for path in paths:
                if path.name not in alive and now - _mtime(path) > FRESH_FOLDER_SECONDS:
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path)
    incoming = root / INCOMING
    if incoming.is_dir():
        for entry in os.scandir(incoming):
            path = Path(entry.path)
            if now - _newest_mtime(path) > STALE_INCOMING_SECONDS:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    if removed:
        log.info("removed %d staging folder(s) nobody needs: %s", len(removed),
                 ", ".join(p.name for p in removed))
    return removed


def _mtime(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except OSError:
        return 0.0


def _newest_mtime(path: Path) -> float:
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for folder, _, files in os.walk(path):
            for name in files:
                try:
                    newest = max(newest, os.lstat(os.path.join(folder, name)).st_mtime)
                except OSError:
                    pass
    return newest


# -- the web application ---------------------------------------------------------------


def is_streamed_upload(request) -> bool:
    """A POST with a multipart body: read by :func:`receive_upload` as it arrives."""
    return request.method == "POST" and request.content_type == "multipart/form-data"


def retry_attempts(request) -> int | None:
    """pyramid_retry's ``activate_hook``: a streamed upload is never retried, so its
    body is not copied before the view runs; other requests keep the default."""
    return 1 if is_streamed_upload(request) else None


def includeme(config) -> None:
    """Pyramid: leave streamed uploads out of pyramid_retry's retries (which make
    every request body seekable, i.e. copy it whole, before any view runs)."""
    from pyramid_retry import RetryableExecutionPolicy

    settings = config.get_settings()
    attempts = int(settings.get("retry.attempts") or 3)
    previous = config.maybe_dotted(settings.get("retry.activate_hook"))

    def activate(request):
        if is_streamed_upload(request):
            return 1
        return previous(request) if previous else None

    config.set_execution_policy(RetryableExecutionPolicy(attempts, activate_hook=activate))
