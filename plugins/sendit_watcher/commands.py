"""``sendit watcher start|stop|status|run INI``."""
from __future__ import annotations

import argparse
import os

from sendit_core.cli import CommandError, read_ini

from .daemon import WatcherSource, log_paths, run_watcher, start_daemon, stop_daemon
from .watcher import WatcherError

#: exit code of ``status`` when the watcher is not running (as LSB init scripts do)
EXIT_INACTIVE = 3


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser(
        "watcher", help="start, stop or check the watcher daemon",
        description="The watcher imports each finished folder that appears in the data folder "
                    "(sendit.data_dir) as one batch. See docs/watcher.md.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    for name, func, text in (
        ("start", cmd_start, "start the watcher as a daemon (returns once it watches)"),
        ("stop", cmd_stop, "stop the running watcher (exit code 1 if it is not running)"),
        ("status", cmd_status, "say whether the watcher runs (exit code 0 if so, 3 if not)"),
        ("run", cmd_run, "run the watcher in the foreground (systemd, containers) until SIGTERM"),
    ):
        action = actions.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        action.add_argument("ini", help="the ini file, e.g. production.ini")
        action.set_defaults(func=func)
        if name == "run":
            action.add_argument("--detached", action="store_true", help=argparse.SUPPRESS)
            action.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)


def cmd_start(args: argparse.Namespace) -> int:
    settings, _pm = read_ini(args.ini, setup_logging=False)
    try:
        pid = start_daemon(settings, args.ini)
    except WatcherError as exc:
        raise CommandError(str(exc)) from None
    output_path, error_path = log_paths(settings)
    print(f"watcher started (pid {pid}), watching {settings['sendit.data_dir']}; "
          f"logs: {output_path}, {error_path}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    settings, _pm = read_ini(args.ini, setup_logging=False)
    try:
        pid = stop_daemon(settings)
    except WatcherError as exc:
        raise CommandError(str(exc)) from None
    print(f"watcher stopped (pid {pid})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    settings, _pm = read_ini(args.ini, setup_logging=False)
    status = WatcherSource().status(settings)
    print(f"watcher: {'active' if status.active else 'inactive'}: {status.summary}")
    for key, value in status.details.items():
        print(f"  {key}: {value}")
    return 0 if status.active else EXIT_INACTIVE


class ReadyPipe:
    """Tells ``watcher start`` (through an inherited pipe) that we watch, or why not."""

    def __init__(self, fd: int | None):
        self.fd = fd

    def say(self, line: str) -> None:
        if self.fd is None:
            return
        try:
            os.write(self.fd, (line.replace("\n", " ") + "\n").encode())
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def cmd_run(args: argparse.Namespace) -> int:
    ready = ReadyPipe(args.ready_fd)
    try:
        settings, _pm = read_ini(args.ini, setup_logging=not args.detached)
        return run_watcher(settings, on_ready=lambda: ready.say("ready"), console=not args.detached)
    except (WatcherError, CommandError) as exc:
        ready.say(f"error: {exc}")
        raise CommandError(str(exc)) from None
    finally:
        ready.close()
