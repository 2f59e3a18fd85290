"""A batch as a zip, written while it is sent: nothing is built in memory.

:func:`zip_batch` is a WSGI ``app_iter``: :mod:`zipfile` writes into a small
non-seekable sink that is drained after every chunk it reads from a stored
file, so memory stays at about one chunk whatever the batch's size. Entries are
stored as they are (``ZIP_STORED``: DICOM pixel data does not compress much,
and the CPU stays free); sizes and CRCs follow each entry in a data descriptor
because the stream cannot seek back.

Names inside the zip are the files' original names, made safe (no absolute
paths, no ``..``, no drive letters or control characters) and unique
(case-insensitively, ``-2``, ``-3`` ... before the extension), under one folder
named after the batch.
"""
from __future__ import annotations

import os
import posixpath
import re
import unicodedata
import zipfile
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import select

from sendit_core.models import Image

#: bytes read from a stored file at a time (and so at most buffered)
CHUNK = 1 << 20
#: image rows read per query (each query in its own short session)
ROWS = 500
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"|?*]')
MAX_COMPONENT = 120


class _Sink:
    """The write-only, non-seekable file zipfile writes into."""

    def __init__(self):
        self._parts: list[bytes] = []

    def write(self, data) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def drain(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def safe_component(name: str | None, fallback: str) -> str:
    """One safe path component (a folder or file name) for ``name``."""
    name = unicodedata.normalize("NFC", name or "")
    cleaned = _UNSAFE.sub("_", name.replace("/", "_").replace("\\", "_")).strip().strip(".").strip()
    return cleaned[:MAX_COMPONENT] or fallback


def safe_path(name: str | None, fallback: str) -> str:
    """A relative path made of safe components; ``..``, ``.`` and roots are dropped."""
    parts = [p for p in re.split(r"[\\/]+", name or "") if p not in ("", ".", "..")]
    cleaned = [safe_component(p, "") for p in parts]
    return "/".join(p for p in cleaned if p) or fallback


def ascii_name(name: str) -> str:
    """An ASCII stand-in for ``Content-Disposition``'s plain ``filename``."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r'[^A-Za-z0-9._ -]', "_", text).strip() or "batch"


class UniqueNames:
    """Hands out member names no earlier member (or folder) has taken, ignoring
    case: ``x.dcm``, ``x-2.dcm``, ...; a folder never takes a file's name."""

    def __init__(self):
        self._files: set[str] = set()
        self._folders: set[str] = set()

    def _folder_path(self, parts: list[str]) -> list[str]:
        """The folders of a name, each renamed if an earlier file has its name."""
        for i in range(len(parts)):
            base, n = parts[i], 1
            while "/".join(parts[:i + 1]).casefold() in self._files:
                n += 1
                parts[i] = f"{base}-{n}"
        return parts

    def take(self, name: str) -> str:
        *folders, leaf = name.split("/")
        folders = self._folder_path(folders)
        stem, ext = posixpath.splitext("/".join([*folders, leaf]))
        candidate, n = stem + ext, 1
        while candidate.casefold() in self._files or candidate.casefold() in self._folders:
            n += 1
            candidate = f"{stem}-{n}{ext}"
        self._files.add(candidate.casefold())
        self._folders.update("/".join(folders[:i]).casefold() for i in range(1, len(folders) + 1))
        return candidate


def _images(session_factory, batch_id: int) -> Iterator:
    """The batch's images in id order, read a few hundred rows at a time."""
    last = 0
    while True:
        with session_factory() as db:
            rows = db.execute(
                select(Image.id, Image.stored_path, Image.original_name, Image.sop_instance_uid,
                       Image.created_at)
                .where(Image.batch_id == batch_id, Image.id > last).order_by(Image.id).limit(ROWS)
            ).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].id


def _entry(name: str, row, size: int) -> zipfile.ZipInfo:
    moment = row.created_at
    info = zipfile.ZipInfo(name, date_time=moment.timetuple()[:6] if moment else (1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    info.file_size = size  # tells zipfile whether the entry needs ZIP64
    info.external_attr = 0o644 << 16
    return info


def zip_batch(session_factory, storage_dir: Path, batch_id: int, folder: str) -> Iterator[bytes]:
    """Yield a zip of the batch's stored files, chunk by chunk (never an empty one)."""
    return (chunk for chunk in _zip_chunks(session_factory, storage_dir, batch_id, folder) if chunk)


def _zip_chunks(session_factory, storage_dir: Path, batch_id: int, folder: str) -> Iterator[bytes]:
    sink, names, missing = _Sink(), UniqueNames(), []
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for row in _images(session_factory, batch_id):
            fallback = safe_component(row.sop_instance_uid, f"image-{row.id}") + ".dcm"
            name = names.take(f"{folder}/{safe_path(row.original_name, fallback)}")
            try:
                source = open(storage_dir / row.stored_path, "rb")
            except OSError as exc:
                missing.append(f"{name}: {exc.strerror or exc}")
                continue
            with source:
                size = os.fstat(source.fileno()).st_size
                with archive.open(_entry(name, row, size), "w") as member:
                    while chunk := source.read(CHUNK):
                        member.write(chunk)
                        yield sink.drain()
            yield sink.drain()
        if missing:
            note = "These images are in the database but their stored files could not be read:\n"
            archive.writestr(names.take(f"{folder}/MISSING.txt"), note + "\n".join(missing) + "\n")
    yield sink.drain()
