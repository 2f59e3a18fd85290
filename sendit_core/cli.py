"""The ``sendit`` command: ``sendit SUBCOMMAND INI [options]``.

Each subcommand takes the ini file first. Exit codes: 0 success, 1 the command
failed (the message says why), 2 bad usage (argparse's convention).
Plugins add subcommands through the ``sendit_add_commands`` hook.
"""
from __future__ import annotations

import argparse
import configparser
import logging
import sys
from pathlib import Path
from typing import Any

import pluggy

from .app import load_config
from .plugins import get_plugin_manager
from .settings import SettingsError

log = logging.getLogger(__name__)


class CommandError(Exception):
    """A failure to report to the user in one clear sentence (exit code 1)."""


def read_ini(path: str, *, setup_logging: bool = True) -> tuple[dict[str, Any], pluggy.PluginManager]:
    """Load an ini file's ``[app:main]`` settings and build the plugin manager.

    :raises CommandError: naming the problem (missing file, syntax, bad value).
    """
    from pyramid.paster import get_appsettings
    from pyramid.paster import setup_logging as paster_setup_logging

    ini = Path(path)
    if not ini.exists():
        raise CommandError(f"the ini file {path} does not exist")
    if not ini.is_file():
        raise CommandError(f"{path} is not a file (expected an ini file such as development.ini)")
    try:
        raw = dict(get_appsettings(str(ini.resolve())))
        if setup_logging:
            paster_setup_logging(str(ini.resolve()))
    except configparser.Error as exc:
        message = str(exc).replace("\n", " ")
        raise CommandError(f"cannot read {path}: {message}") from None
    except LookupError as exc:
        raise CommandError(f"cannot read {path}: {exc} (is there an [app:main] section?)") from None
    except (OSError, ValueError, ImportError) as exc:
        raise CommandError(f"cannot read {path}: {exc}") from None
    try:
        return load_config(raw, here=raw.get("here") or ini.resolve().parent)
    except SettingsError as exc:
        raise CommandError(f"{path}: {exc}") from None


def cmd_initdb(args: argparse.Namespace) -> int:
    """Create the database schema, or upgrade it to the newest version."""
    from sqlalchemy.exc import SQLAlchemyError

    from .models import get_engine, upgrade_schema

    settings, _pm = read_ini(args.ini)
    try:
        revision = upgrade_schema(settings, get_engine(settings))
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise CommandError(f"cannot reach or upgrade the database: {reason}") from None
    print(f"database ready at schema revision {revision}")
    return 0


def build_parser(pm: pluggy.PluginManager) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sendit",
        description="sendit: a local DICOM ingest-and-browse server.",
        epilog="Run 'sendit COMMAND --help' for a command's options.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    initdb = subparsers.add_parser(
        "initdb", help="create or upgrade the database schema",
        description="Create the database schema, or upgrade it to the newest version.",
    )
    initdb.add_argument("ini", help="the ini file, e.g. development.ini")
    initdb.set_defaults(func=cmd_initdb)
    pm.hook.sendit_add_commands(subparsers=subparsers)
    return parser


def main(argv: list[str] | None = None, pm: pluggy.PluginManager | None = None) -> int:
    """Entry point of the ``sendit`` console script; returns the exit code."""
    pm = pm or get_plugin_manager()
    parser = build_parser(pm)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CommandError as exc:
        print(f"sendit {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"sendit {args.command}: interrupted", file=sys.stderr)
        return 130


def pshell_setup(env: dict[str, Any]) -> None:
    """``pshell development.ini``: a ``dbsession`` and the ``models`` module at hand."""
    from . import models

    request = env["request"]
    env["tm"] = request.tm
    env["dbsession"] = request.dbsession
    env["models"] = models


