"""Running the watcher: in the foreground, as a daemon, and asking how it is.

``run_watcher`` is the process itself (``sendit watcher run INI``, what systemd
starts); :class:`WatcherSource` starts it detached (a new session, stdout and
stderr into the error log), stops it with SIGTERM and reports its status from
the pid file (:mod:`sendit_watcher.pidfile`).
"""
from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import time
from logging.handlers import WatchedFileHandler
from pathlib import Path
from typing import Any, Callable

from sendit_core import IngestSource, SourceStatus
from sendit_core.models import SchemaError, check_schema, get_engine, get_session_factory

from . import pidfile
from .watcher import Watcher, WatcherError, check_data_dir, events_log

log = logging.getLogger(__name__)
#: why a start failed, for the error log only (the command prints it already)
startup_log = logging.getLogger("sendit_watcher.startup")
startup_log.propagate = False

OUTPUT_LOG = "watcher.log"
ERROR_LOG = "watcher-error.log"
#: seconds ``start`` waits for the new watcher to say it is watching
START_TIMEOUT = 60.0


def pid_path(settings: dict[str, Any]) -> Path:
    return Path(settings["sendit.watcher.pid_file"])


def log_paths(settings: dict[str, Any]) -> tuple[Path, Path]:
    """The output log (one line per event and decision) and the error log."""
    folder = Path(settings["sendit.watcher.log_dir"])
    return folder / OUTPUT_LOG, folder / ERROR_LOG


# -- the process itself --------------------------------------------------------------


def setup_logs(settings: dict[str, Any], console: bool) -> list[tuple[logging.Logger, logging.Handler]]:
    """Events to the output log, warnings and errors (of any library) to the
    error log, and events to stderr too when ``console`` and nothing else
    prints them. Returns what to remove again."""
    output_path, error_path = log_paths(settings)
    try:
        output_path.parent.mkdir(parents=True, exist_ok=True)
        output = WatchedFileHandler(output_path, encoding="utf-8")  # follows logrotate's renames
        errors = WatchedFileHandler(error_path, encoding="utf-8")
    except OSError as exc:
        raise WatcherError(f"cannot write the watcher's logs in {output_path.parent} "
                           f"(sendit.watcher.log_dir): {exc.strerror or exc}") from None
    root = logging.getLogger()
    added = []
    output.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    added.append((events_log, output))
    errors.setLevel(logging.WARNING)
    errors.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(name)s] %(message)s"))
    added.append((root, errors))
    added.append((startup_log, errors))
    if console and not root.handlers:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        added.append((logging.getLogger("sendit_watcher"), stream))
    for logger, handler in added:
        logger.addHandler(handler)
    logging.getLogger("sendit_watcher").setLevel(logging.INFO)
    if root.level > logging.WARNING or root.level == logging.NOTSET:
        root.setLevel(logging.WARNING)
    return added


def open_database(settings: dict[str, Any]):
    """A session factory on a database that has sendit's schema."""
    engine = settings.get("sendit.engine") or get_engine(settings)
    settings["sendit.engine"] = engine
    try:
        check_schema(engine)
    except SchemaError as exc:
        raise WatcherError(str(exc)) from None
    return get_session_factory(engine)


def run_watcher(settings: dict[str, Any], *, on_ready: Callable[[], None] | None = None,
                console: bool = True, signals: bool = True) -> int:
    """Watch until SIGTERM / SIGINT (or :meth:`Watcher.stop`); returns the exit
    code: 0 after a clean stop, 1 when the watcher had to stop by itself.

    :raises WatcherError: when it cannot start (nothing was changed then).
    """
    handlers = setup_logs(settings, console)  # before anything that could fail quietly
    try:
        check_data_dir(Path(settings["sendit.data_dir"]))
        factory = open_database(settings)
        return _run_holding_pid_file(settings, factory, on_ready, signals)
    except WatcherError as exc:
        startup_log.error("cannot start: %s", exc)
        raise
    finally:
        for logger, handler in handlers:
            logger.removeHandler(handler)
            handler.close()


def _run_holding_pid_file(settings, factory, on_ready, signals) -> int:
    held = pidfile.PidFile(pid_path(settings))
    try:
        before = held.acquire()
    except pidfile.AlreadyRunning as exc:
        raise WatcherError(str(exc)) from None
    except OSError as exc:
        raise WatcherError(f"cannot write the pid file {held.path} (sendit.watcher.pid_file): "
                           f"{exc.strerror or exc}") from None
    watcher = Watcher(settings, factory)
    try:
        if before.stale:
            events_log.info("STALE PID FILE: %s replaced (%s)", held.path, before.stale)
        if signals:
            watcher.install_signal_handlers()
        watcher.run(ready=on_ready)
    finally:
        held.release()
        events_log.info("STOPPED: pid %d%s", os.getpid(),
                        f" ({watcher.failure})" if watcher.failure else "")
    return 1 if watcher.failure else 0


# -- the daemon, seen from outside ---------------------------------------------------------


def start_daemon(settings: dict[str, Any], ini: str | os.PathLike | None) -> int:
    """Start ``sendit watcher run INI`` detached; return its pid once it watches.

    :raises WatcherError: already running, no data folder, or it failed at start.
    """
    if ini is None:
        raise WatcherError("the watcher is started from its ini file: run 'sendit watcher start INI'")
    state = pidfile.check(pid_path(settings))
    if state.running:
        raise WatcherError(f"the watcher is already running (pid {state.pid}, pid file {state.path})")
    check_data_dir(Path(settings["sendit.data_dir"]))
    _, error_path = log_paths(settings)
    try:
        error_path.parent.mkdir(parents=True, exist_ok=True)
        errors = open(error_path, "ab")
    except OSError as exc:
        raise WatcherError(f"cannot write the watcher's logs in {error_path.parent} "
                           f"(sendit.watcher.log_dir): {exc.strerror or exc}") from None
    read_end, write_end = os.pipe()
    try:
        with errors:
            process = subprocess.Popen(
                [sys.executable, "-m", "sendit_watcher", "run", "--detached", "--ready-fd",
                 str(write_end), str(Path(ini).resolve())],
                stdin=subprocess.DEVNULL, stdout=errors, stderr=errors, pass_fds=(write_end,),
                start_new_session=True, cwd="/",
            )
    finally:
        os.close(write_end)
    try:
        message = _read_ready(read_end, START_TIMEOUT)
    finally:
        os.close(read_end)
    if message == "ready":
        return process.pid
    if message.startswith("error: "):
        raise WatcherError(message[len("error: "):])
    code = process.poll()
    if code is None:
        raise WatcherError(f"the watcher (pid {process.pid}) did not report within {START_TIMEOUT:g} s "
                           f"that it watches; see {error_path}")
    raise WatcherError(f"the watcher exited while starting (exit code {code}); see {error_path}")


def _read_ready(fd: int, timeout: float) -> str:
    """The first line the new process writes to its ready pipe ("" at EOF or timeout)."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode("utf-8", "replace").split("\n", 1)[0].strip()


def stop_daemon(settings: dict[str, Any]) -> int:
    """SIGTERM the running watcher and wait until it has gone; returns its pid.

    :raises WatcherError: it is not running (the message says why), or it did
        not stop within ``sendit.watcher.stop_seconds``.
    """
    state = pidfile.check(pid_path(settings))
    if not state.running:
        raise WatcherError(not_running(state))
    try:
        os.kill(state.pid, signal.SIGTERM)
    except ProcessLookupError:
        return state.pid
    timeout = settings["sendit.watcher.stop_seconds"]
    deadline = time.monotonic() + timeout
    while pidfile.is_alive(state.pid):
        if time.monotonic() > deadline:
            raise WatcherError(f"the watcher (pid {state.pid}) is still running {timeout} s after "
                               f"SIGTERM; if it hangs, 'kill -9 {state.pid}' loses nothing (the next "
                               f"start picks up where it stopped)")
        time.sleep(0.05)
    return state.pid


def not_running(state: pidfile.PidState) -> str:
    if state.stale:
        return (f"the watcher is not running: its pid file {state.path} is stale ({state.stale}); "
                f"the next start replaces it")
    return f"the watcher is not running (there is no pid file {state.path})"


def watcher_status(settings: dict[str, Any]) -> SourceStatus:
    """Active or not, truthfully, with since-when and the watched folder."""
    state = pidfile.check(pid_path(settings))
    data_dir = settings["sendit.data_dir"]
    output_path, error_path = log_paths(settings)
    details: dict[str, Any] = {}
    if state.running:
        since = state.since.astimezone().strftime("%Y-%m-%d %H:%M:%S") if state.since else "?"
        summary = f"watching {data_dir} since {since} (pid {state.pid})"
        details["Process"] = state.pid
    elif state.stale:
        summary = f"not running; stale pid file ({state.stale}), replaced at the next start"
        details["Stale pid file"] = state.stale
    else:
        summary = "not running"
    details.update({"Watched folder": str(data_dir), "Pid file": str(state.path),
                    "Output log": str(output_path), "Error log": str(error_path),
                    "Settle time": f"{settings['sendit.watcher.settle_seconds']:g} s"})
    return SourceStatus(state.running, summary, state.since if state.running else None, details)


class WatcherSource(IngestSource):
    """The watched data folder, as an ingest source with start / stop / status."""

    name = "watcher"
    description = ("Imports each finished folder that appears in the data folder "
                   "(sendit.data_dir) as one batch.")
    daemon = True

    def start(self, settings: dict[str, Any], ini: str | os.PathLike | None = None) -> None:
        """Start the daemon from ``ini`` (the file the settings came from)."""
        start_daemon(settings, ini)

    def stop(self, settings: dict[str, Any]) -> None:
        stop_daemon(settings)

    def status(self, settings: dict[str, Any]) -> SourceStatus:
        return watcher_status(settings)
