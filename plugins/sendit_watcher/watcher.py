"""The watcher daemon: watchdog events in, settled folders out to the pipeline.

One thread (the caller's) owns every decision; watchdog's observer thread only
puts events on a queue. A finished folder waits in :attr:`Watcher.due` until it
has been quiet for ``sendit.watcher.settle_seconds`` and is then synced
(:func:`sendit_watcher.folders.sync_folder`). Each event and decision is one
line of the output log (logger ``sendit_watcher.events``).
"""
from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

from sqlalchemy.exc import SQLAlchemyError
from watchdog.events import (
    DirAttribEvent, DirCreatedEvent, DirDeletedEvent, DirModifiedEvent, DirMovedEvent, FileAttribEvent,
    FileClosedEvent, FileCreatedEvent, FileDeletedEvent, FileModifiedEvent, FileMovedEvent,
    FileSystemEvent, FileSystemEventHandler,
)

from . import folders

#: one line per event and decision
events_log = logging.getLogger("sendit_watcher.events")
log = logging.getLogger(__name__)

#: what the observer reports (not opens and reads: workers read the files)
EVENT_TYPES = [DirCreatedEvent, DirDeletedEvent, DirMovedEvent, DirModifiedEvent, DirAttribEvent,
               FileCreatedEvent, FileDeletedEvent, FileMovedEvent, FileModifiedEvent,
               FileClosedEvent, FileAttribEvent]
#: events inside a folder that mean "someone is still writing here"
ACTIVITY = (DirCreatedEvent, DirMovedEvent, DirAttribEvent, FileCreatedEvent, FileMovedEvent,
            FileModifiedEvent, FileClosedEvent, FileAttribEvent)
#: seconds before a folder whose sync failed (database away, ...) is tried again
RETRY_SECONDS = 10.0
#: how often the data folder itself is checked
CHECK_SECONDS = 2.0
#: events handled between two looks at the folders due for import
MAX_EVENTS_PER_TURN = 5000


class WatcherError(RuntimeError):
    """A clear reason the watcher cannot start or run."""


class _Enqueue(FileSystemEventHandler):
    def __init__(self, events: queue.Queue):
        self.events = events

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.events.put(event)


def check_data_dir(data_dir: Path) -> None:
    """:raises WatcherError: when the data folder cannot be watched."""
    key = "sendit.data_dir"
    if not data_dir.exists():
        raise WatcherError(f"the data folder {data_dir} does not exist ({key}); create it, "
                           f"mount it, or fix the setting")
    if not data_dir.is_dir():
        raise WatcherError(f"the data folder {data_dir} is not a folder ({key})")
    if not os.access(data_dir, os.R_OK | os.X_OK):
        raise WatcherError(f"the data folder {data_dir} cannot be read by this user "
                           f"(uid {os.getuid()}); fix its permissions ({key})")


def make_observer(polling: bool):
    if polling:
        from watchdog.observers.polling import PollingObserver

        return PollingObserver(timeout=1)
    from watchdog.observers import Observer

    return Observer()


class Watcher:
    """Watches ``sendit.data_dir`` until :meth:`stop`."""

    def __init__(self, settings: dict[str, Any], session_factory):
        self.settings = settings
        self.session_factory = session_factory
        self.data_dir = Path(settings["sendit.data_dir"])
        self.settle = float(settings["sendit.watcher.settle_seconds"])
        self.events: queue.Queue = queue.Queue()
        #: finished folder -> monotonic time at which it is imported, unless it stirs
        self.due: dict[Path, float] = {}
        #: folder -> its sub-folders that could not be read at its last sync
        self.unreadable: dict[Path, set[Path]] = {}
        self.stopping = threading.Event()
        self.rescan_requested = threading.Event()
        #: the reason the watcher stopped by itself ("" after :meth:`stop`)
        self.failure = ""
        self.observer = None

    # -- life cycle

    def run(self, ready: Callable[[], None] | None = None) -> None:
        """Watch, catch up on folders that arrived while nobody watched, and
        import settled folders until :meth:`stop` (or the data folder goes)."""
        check_data_dir(self.data_dir)
        self.observer = self._start_observer()
        try:
            events_log.info("STARTED: watching %s (pid %d, settle %g s)", self.data_dir, os.getpid(),
                            self.settle)
            self.catch_up()
            if ready:
                ready()
            self._loop()
        finally:
            self.observer.stop()
            self.observer.join(10)
        if self.due:
            events_log.info("PENDING: %d folder(s) not imported yet, the next start imports them: %s",
                            len(self.due), ", ".join(sorted(p.name for p in self.due)))

    def _start_observer(self):
        observer = make_observer(self.settings["sendit.watcher.polling"])
        observer.schedule(_Enqueue(self.events), str(self.data_dir), recursive=True,
                          event_filter=EVENT_TYPES)
        try:
            observer.start()
        except OSError as exc:
            hint = ""
            if exc.errno in (24, 28):  # EMFILE, ENOSPC: inotify limits
                hint = ("; raise fs.inotify.max_user_watches / max_user_instances, or set "
                        "sendit.watcher.polling = true")
            raise WatcherError(f"cannot watch {self.data_dir}: {exc.strerror or exc}{hint}") from None
        return observer

    def stop(self) -> None:
        self.stopping.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM / SIGINT: clean shutdown; SIGHUP: look at every folder again."""
        def stop(signum, frame):
            events_log.info("SIGNAL: %s, stopping", signal.Signals(signum).name)
            self.stop()

        def rescan(signum, frame):
            self.rescan_requested.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, rescan)

    def _loop(self) -> None:
        tick = max(0.05, min(0.5, self.settle / 4))
        next_check = time.monotonic() + CHECK_SECONDS
        while not self.stopping.is_set():
            try:
                self.handle(self.events.get(timeout=tick))
                for _ in range(MAX_EVENTS_PER_TURN):  # then settled folders get their turn
                    self.handle(self.events.get_nowait())
            except queue.Empty:
                pass
            if self.rescan_requested.is_set():
                self.rescan_requested.clear()
                events_log.info("RESCAN: looking at every folder again (SIGHUP)")
                try:
                    self.catch_up(reason="rescan")
                except WatcherError as exc:
                    log.error("rescan failed: %s", exc)
            self.import_settled()
            if time.monotonic() >= next_check:
                self._check_health()
                next_check = time.monotonic() + CHECK_SECONDS

    def _check_health(self) -> None:
        try:
            check_data_dir(self.data_dir)
        except WatcherError as exc:
            self.fail(f"{exc}; stopping")
            return
        if not self.observer.is_alive():
            self.fail("the file-system observer stopped unexpectedly; stopping")

    def fail(self, reason: str) -> None:
        log.error("%s (folders not yet imported are picked up at the next start)", reason)
        events_log.info("FAILED: %s", reason)
        self.failure = reason
        self.stop()

    # -- finding folders

    def catch_up(self, reason: str = "start") -> None:
        """Queue every finished folder; those already imported are skipped when
        their turn comes (see :mod:`sendit_watcher.folders`)."""
        try:
            entries = sorted(os.scandir(self.data_dir), key=lambda e: e.name)
        except OSError as exc:
            raise WatcherError(f"cannot list the data folder {self.data_dir}: {exc.strerror or exc}") from None
        for entry in entries:
            path = Path(entry.path)
            if not entry.is_dir() or folders.is_hidden(entry.name):
                continue
            if folders.is_unfinished(entry.name):
                events_log.info("NOTFINISHED: %s (found at %s)", path, reason)
            elif path not in self.due:
                events_log.info("FOUND: %s (at %s; imported if it holds anything new)", path, reason)
                self.due[path] = time.monotonic() + self.settle

    # -- events

    def handle(self, event: FileSystemEvent) -> None:
        src = Path(os.fsdecode(event.src_path))
        if src == self.data_dir:
            if isinstance(event, DirDeletedEvent):
                self.fail(f"the data folder {self.data_dir} was deleted")
            return
        if isinstance(event, (DirMovedEvent, FileMovedEvent)):
            self._moved(event, src, Path(os.fsdecode(event.dest_path)))
            return
        top = self._top(src)
        if top is None:
            return
        if isinstance(event, (DirModifiedEvent, DirAttribEvent)) and src in self.unreadable.get(top, ()):
            self._stirred(top, src)  # e.g. its permissions were fixed
        elif src == top:
            self._top_level(event, src)
        elif isinstance(event, ACTIVITY):
            self._stirred(top, src)

    def _top(self, path: Path) -> Path | None:
        """The folder directly inside the data folder that ``path`` is in."""
        try:
            rel = path.relative_to(self.data_dir)
        except ValueError:
            return None
        return self.data_dir / rel.parts[0] if rel.parts else None

    def _top_level(self, event: FileSystemEvent, path: Path) -> None:
        if isinstance(event, DirCreatedEvent):
            events_log.info("CREATE EVENT: %s", path)
            self._arrived(path)
        elif isinstance(event, DirDeletedEvent):
            events_log.info("DELETE EVENT: %s", path)
            self._left(path, "deleted")
        elif isinstance(event, FileCreatedEvent) and not folders.is_hidden(path.name):
            events_log.info("IGNORED: %s (a file, not a folder: only folders become batches)", path)

    def _moved(self, event: FileSystemEvent, src: Path, dest: Path) -> None:
        src_top, dest_top = self._top(src), self._top(dest)
        src_is_top, dest_is_top = src == src_top, dest == dest_top
        if isinstance(event, DirMovedEvent) and (src_is_top or dest_is_top):
            events_log.info("MOVED EVENT: %s -> %s", src, dest)
        if src_is_top:
            self._left(src, f"renamed to {dest.name}" if dest_top is not None else "moved away")
        if dest_top is None:
            return
        if not dest_is_top:
            self._stirred(dest_top, dest)
        elif isinstance(event, DirMovedEvent):
            self._arrived(dest)
        elif not folders.is_hidden(dest.name):
            events_log.info("IGNORED: %s (a file, not a folder: only folders become batches)", dest)

    def _arrived(self, folder: Path) -> None:
        name = folder.name
        if folders.is_hidden(name):
            events_log.info("IGNORED: %s (hidden)", folder)
        elif folders.is_unfinished(name):
            events_log.info("NOTFINISHED: %s", folder)
        elif folder.is_dir():
            events_log.info("FINISHED: %s (imported once quiet for %g s)", folder, self.settle)
            self.due[folder] = time.monotonic() + self.settle

    def _left(self, folder: Path, how: str) -> None:
        self.unreadable.pop(folder, None)
        if self.due.pop(folder, None) is not None:
            events_log.info("GONE: %s (%s before it settled; nothing imported)", folder, how)

    def _stirred(self, folder: Path, path: Path) -> None:
        """Something was written inside a top-level folder."""
        if not folders.is_batch_name(folder.name):
            return
        if folder not in self.due:
            if not folder.is_dir():
                return
            events_log.info("CHANGED: %s (%s in a finished folder; imported once quiet for %g s)",
                            folder, path.relative_to(folder), self.settle)
        self.due[folder] = time.monotonic() + self.settle

    # -- importing

    def import_settled(self) -> None:
        now = time.monotonic()
        for folder in [f for f, due in self.due.items() if due <= now]:
            if self.stopping.is_set():
                return
            del self.due[folder]
            self.sync(folder)

    def sync(self, folder: Path) -> folders.Sync | None:
        if not folder.is_dir():
            events_log.info("GONE: %s (deleted before it settled; nothing imported)", folder)
            return None
        try:
            result = folders.sync_folder(self.session_factory, self.settings, folder)
        except (SQLAlchemyError, OSError) as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            log.error("could not import %s: %s; trying again in %g s", folder, reason, RETRY_SECONDS)
            events_log.info("RETRY: %s (%s)", folder, reason)
            self.due[folder] = time.monotonic() + RETRY_SECONDS
            return None
        self._report(result)
        return result

    def _report(self, result: folders.Sync) -> None:
        folder = result.folder
        for path, message in result.problems:
            log.warning("%s: %s (recorded as an error of batch %r; fix it and the watcher imports "
                        "the files when the folder changes, or at the next start)",
                        path, message, result.batch_name or folder.name)
            events_log.info("UNREADABLE: %s (%s)", path, message)
        self.unreadable[folder] = {path for path, _ in result.problems}
        if result.gone:
            events_log.info("GONE: %s (deleted while it was read; nothing imported)", folder)
        elif result.new_batch:
            events_log.info("IMPORTING: %s -> new batch %r (id %s): %d file(s) queued",
                            folder, result.batch_name, result.batch_id, result.submitted)
        elif result.submitted:
            events_log.info("IMPORTING: %s -> batch %r (id %s): %d new or changed file(s) queued",
                            folder, result.batch_name, result.batch_id, result.submitted)
        else:
            events_log.info("SKIPPED: %s (batch %r, id %s, already has every file)",
                            folder, result.batch_name, result.batch_id)
