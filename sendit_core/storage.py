"""Where imported files live: ``<storage_dir>/<batch id>/<study>/<series>/<sop>.dcm``.

Files are written atomically: copied to an unnamed file in the target folder,
then linked into place only if nothing is there yet, so a crash never leaves a
half-written file (or a leftover temporary one) and two writers never
overwrite each other.
"""
from __future__ import annotations

import filecmp
import hashlib
import os
import re
import tempfile
from enum import Enum
from pathlib import Path

from .parsing import ParsedFile

_SAFE_UID = re.compile(r"^[0-9][0-9.]{0,63}$")


def _component(uid: str | None, fallback: str) -> str:
    """A folder/file name for a UID: the UID itself when it is a proper one."""
    if uid and _SAFE_UID.match(uid) and ".." not in uid:
        return uid
    if not uid:
        return fallback
    return "x" + hashlib.sha1(uid.encode("utf-8", "surrogatepass")).hexdigest()


def stored_relpath(batch_id: int, parsed: ParsedFile) -> str:
    """The path, relative to the storage folder, a parsed file is stored at."""
    return "/".join((
        str(int(batch_id)),
        _component(parsed.study_instance_uid, "unknown-study"),
        _component(parsed.series_instance_uid, "unknown-series"),
        _component(parsed.sop_instance_uid, "unknown") + ".dcm",
    ))


class Stored(Enum):
    NEW = "new"              #: written now
    IDENTICAL = "identical"  #: the same bytes were already there
    CONFLICT = "conflict"    #: different bytes are already stored under that name


def store_file(source: Path, storage_dir: Path, relpath: str, *, fsync: bool = False) -> Stored:
    """Copy ``source`` to ``storage_dir/relpath`` atomically, never overwriting.

    The copy is written to an anonymous file (``O_TMPFILE``) in the target
    folder and linked into place complete, so a process killed mid-copy leaves
    nothing behind; where the file system has no anonymous files it goes
    through a ``.incoming-`` temporary name instead.
    """
    target = storage_dir / relpath
    if target.exists():
        return Stored.IDENTICAL if same_content(source, target) else Stored.CONFLICT
    fd = _anonymous_file(target.parent)
    if fd is not None:
        try:
            _fill(source, fd, fsync)
            try:
                _link_anonymous(fd, target)
            except FileExistsError:
                return Stored.IDENTICAL if same_content(source, target) else Stored.CONFLICT
            except OSError:  # no /proc: fall back to a named temporary file
                pass
            else:
                return Stored.NEW
        finally:
            os.close(fd)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".incoming-", dir=target.parent)
    try:
        try:
            _fill(source, fd, fsync)
        finally:
            os.close(fd)
        try:
            os.link(tmp, target)  # fails if the name exists: no overwrite
        except FileExistsError:
            return Stored.IDENTICAL if same_content(source, target) else Stored.CONFLICT
        return Stored.NEW
    finally:
        os.unlink(tmp)


def _anonymous_file(folder: Path) -> int | None:
    """An unnamed file open for writing in ``folder`` (made if missing), or
    ``None`` where unsupported.

    The folder is made only when the open says it is missing: most files go
    to a series folder an earlier file made, and a ``mkdir`` that fails, then
    a ``stat`` to check the folder is one, cost two system calls a file.
    """
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None:
        return None
    try:
        try:
            return os.open(folder, flag | os.O_WRONLY, 0o600)
        except FileNotFoundError:
            folder.mkdir(parents=True, exist_ok=True)
            return os.open(folder, flag | os.O_WRONLY, 0o600)
    except OSError:  # file systems without O_TMPFILE: EOPNOTSUPP, EISDIR on old kernels
        return None


def _link_anonymous(fd: int, target: Path) -> None:
    """Give the anonymous file ``fd`` the name ``target`` (fails if it exists).

    ``linkat(AT_FDCWD, "/proc/self/fd/N", dir, name, AT_SYMLINK_FOLLOW)``: the
    flag makes the kernel link the open file itself, not the ``/proc`` symlink.
    Python passes it only when a directory descriptor is given, so one is.
    """
    folder = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.link(f"/proc/self/fd/{fd}", target.name, dst_dir_fd=folder, follow_symlinks=True)
    finally:
        os.close(folder)


def _fill(source: Path, fd: int, fsync: bool) -> None:
    src = os.open(source, os.O_RDONLY)  # a bare descriptor: no buffered file object
    try:
        _copy(src, fd)
    finally:
        os.close(src)
    if fsync:
        os.fsync(fd)


def _copy(src: int, dst: int) -> None:
    """Copy between file descriptors inside the kernel when it can (no user-space buffers)."""
    try:
        while os.copy_file_range(src, dst, 1 << 30):
            pass
        return
    except OSError:  # another file system, or no support: copy through user space
        os.lseek(src, 0, os.SEEK_SET)
        os.lseek(dst, 0, os.SEEK_SET)
        os.ftruncate(dst, 0)
    while chunk := os.read(src, 1 << 20):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view):]


def same_content(a: Path, b: Path) -> bool:
    return filecmp.cmp(a, b, shallow=False)


def remove_stored(storage_dir: Path, relpath: str) -> None:
    """Remove a stored file and the folders it leaves empty (up to the storage root)."""
    path = storage_dir / relpath
    path.unlink(missing_ok=True)
    for parent in path.parents:
        if parent == storage_dir or storage_dir not in parent.parents:
            break
        try:
            parent.rmdir()
        except OSError:
            break
