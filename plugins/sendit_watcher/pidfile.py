"""The pid file: who runs, truthfully, and one watcher per pid file.

The running watcher holds an exclusive ``flock`` on its pid file for its whole
life, so a second watcher on the same file refuses to start however the two
race, and a pid file left by a killed watcher is free to take over. Status
never trusts the number alone: the process must exist, not be a zombie, and
its ``/proc/<pid>/cmdline`` must be a sendit watcher's (pids are reused).
"""
from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path


class AlreadyRunning(Exception):
    """Another watcher holds the pid file."""

    def __init__(self, pid: int | None, path: Path):
        self.pid, self.path = pid, path
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"a watcher is already running ({who}, pid file {path}); "
                         f"stop it first with 'sendit watcher stop INI'")


@dataclass(frozen=True)
class PidState:
    """What the pid file says, checked against the running processes."""

    path: Path
    pid: int | None = None
    running: bool = False
    #: why a pid file that exists does not name a running watcher ("" if it does)
    stale: str = ""
    #: when the pid file was written (the watcher's start)
    since: datetime | None = None

    @property
    def exists(self) -> bool:
        return self.pid is not None or bool(self.stale)


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return int(text) if text.isdigit() else None


def is_watcher_cmdline(args: list[str]) -> bool:
    """``… sendit watcher run …`` or ``python -m sendit_watcher run …`` (what
    ``start`` runs): only ``run`` ever holds the pid file."""
    names = [os.path.basename(arg) for arg in args]
    for first, second, third in zip(names, names[1:], names[2:]):
        if third == "run" and ((first, second) == ("sendit", "watcher") or
                               (first, second) == ("-m", "sendit_watcher")):
            return True
    return False


def cmdline(pid: int) -> list[str] | None:
    """The process's arguments; ``None`` if there is no such (live) process."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            if handle.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return None  # a zombie: it has exited, nobody reaped it yet
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            raw = handle.read()
    except (OSError, IndexError):
        return None
    return [os.fsdecode(arg) for arg in raw.split(b"\0") if arg]


def is_alive(pid: int) -> bool:
    return cmdline(pid) is not None


def check(path: Path) -> PidState:
    """The truth about a pid file."""
    if not path.exists():
        return PidState(path)
    pid = read_pid(path)
    try:
        since = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
    except OSError:
        since = None
    if pid is None:
        return PidState(path, None, False, "the pid file holds no process id", since)
    args = cmdline(pid)
    if args is None:
        return PidState(path, pid, False, f"process {pid} is not running", since)
    if not is_watcher_cmdline(args):
        return PidState(path, pid, False, f"process {pid} is not a sendit watcher "
                                          f"({' '.join(args)[:80]})", since)
    return PidState(path, pid, True, "", since)


class PidFile:
    """The running watcher's hold on its pid file."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> PidState:
        """Lock the file and write our pid; returns what it said before (a stale
        watcher's pid, say). :raises AlreadyRunning: if a watcher holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            before = check(self.path)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise AlreadyRunning(read_pid(self.path), self.path) from None
            if self._is_current(fd):
                break
            os.close(fd)  # the holder removed it as we opened it: try the new file
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self.fd = fd
        return before

    def _is_current(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        """Remove the pid file (if it is still ours) and unlock it."""
        if self.fd is None:
            return
        try:
            if self._is_current(self.fd):
                os.unlink(self.path)
        finally:
            os.close(self.fd)
            self.fd = None
