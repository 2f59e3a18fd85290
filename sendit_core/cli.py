"""The ``sendit`` command: ``sendit SUBCOMMAND INI [options]``.

Each subcommand takes the ini file first. Exit codes: 0 success, 1 the command
failed (the message says why), 2 bad usage (argparse's convention).
Plugins add subcommands through the ``sendit_add_commands`` hook.
"""
from __future__ import annotations

import argparse
import configparser
import gc
import logging
import os
import sys
from pathlib import Path
from typing import Any

import pluggy

from .plugins import get_plugin_manager
from .settings import SettingsError, load_config

log = logging.getLogger(__name__)


class CommandError(Exception):
    """A failure to report to the user in one clear sentence (exit code 1)."""


def read_ini(path: str, *, setup_logging: bool = True) -> tuple[dict[str, Any], pluggy.PluginManager]:
    """Load an ini file's ``[app:main]`` settings and build the plugin manager.

    :raises CommandError: naming the problem (missing file, syntax, bad value).
    """
    # PasteDeploy's loader itself, as pyramid.paster would pick it, without
    # pyramid.paster's imports (Pyramid whole) or plaster's search through every
    # installed distribution's entry points: ~0.35 s of every command together
    import plaster
    import plaster_pastedeploy

    ini = Path(path)
    if not ini.exists():
        raise CommandError(f"the ini file {path} does not exist")
    if not ini.is_file():
        raise CommandError(f"{path} is not a file (expected an ini file such as development.ini)")
    loader = plaster_pastedeploy.Loader(plaster.parse_uri(str(ini.resolve())))
    try:
        raw = dict(loader.get_wsgi_app_settings())
    except configparser.Error as exc:
        message = str(exc).replace("\n", " ")
        raise CommandError(f"cannot read {path}: {message}") from None
    except LookupError as exc:
        raise CommandError(f"cannot read {path}: {exc} (is there an [app:main] section?)") from None
    except (OSError, ValueError, ImportError) as exc:
        raise CommandError(f"cannot read {path}: {exc}") from None
    try:
        loaded = load_config(raw, here=raw.get("here") or ini.resolve().parent)
    except SettingsError as exc:
        raise CommandError(f"{path}: {exc}") from None
    if setup_logging:
        try:
            loader.setup_logging()
        except (configparser.Error, OSError, ValueError, ImportError, KeyError) as exc:
            cause = exc.__cause__ or exc  # fileConfig wraps a handler's error in ValueError
            raise CommandError(f"cannot set up logging from {path}: {cause} (check the "
                               f"[handler_*] sections; a log folder must exist and be "
                               f"writable)") from None
    return loaded


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


#: exit code of ``sendit import`` when it finished but some files became error rows
EXIT_FILE_ERRORS = 3


def _session_factory(settings: dict[str, Any]):
    from .models import get_engine, get_session_factory

    engine = get_engine(settings)
    settings["sendit.engine"] = engine
    return get_session_factory(engine)


def _check_schema(settings: dict[str, Any], ini: str) -> None:
    from .models import SchemaError, check_schema

    try:
        check_schema(settings["sendit.engine"], ini)
    except SchemaError as exc:
        raise CommandError(str(exc)) from None


def cmd_import(args: argparse.Namespace) -> int:
    """Import files and folders as one batch, in-process (--now) or through the workers."""
    import time

    from tqdm import tqdm

    from .pipeline import Ingestor, import_now, import_parallel, iter_files, submit, wait_for_batch

    settings, pm = read_ini(args.ini)
    missing = [p for p in args.paths if not Path(p).exists() and not Path(p).is_symlink()]
    if missing:
        raise CommandError("no such file or folder: " + ", ".join(missing))
    session_factory = _session_factory(settings)
    _check_schema(settings, args.ini)
    started = time.monotonic()
    files = iter_files(args.paths)
    delete = True if args.delete_source else None
    try:
        submission = submit(session_factory, settings, files, batch_id=args.batch_id,
                            batch_name=args.batch or _default_batch_name(args.paths),
                            source="cli", delete_source=delete, publish=not args.now)
    except LookupError as exc:
        raise CommandError(str(exc)) from None
    quiet = args.quiet
    if not args.now:
        print(f"queued {submission.file_count} file(s) in batch {submission.batch_id} "
              f"({len(submission.job_ids)} job(s))")
        if not args.wait:
            if settings["sendit.worker"] == "thread":
                print("the web server's worker imports them (is pserve running?)")
            return 0
        bar = tqdm(total=submission.file_count, unit="file", disable=quiet, desc="importing")

        def follow(batch):
            bar.n = submission.file_count - max(batch.pending_count, 0)
            bar.refresh()

        batch = wait_for_batch(session_factory, submission.batch_id, progress=follow)
        bar.close()
        return _summary(session_factory, submission, started, batch.image_count, batch.error_count)
    processes = args.processes if args.processes is not None else _default_processes()
    bar = tqdm(total=submission.file_count, unit="file", disable=quiet, desc="importing")
    try:
        if processes > 1 and len(submission.job_ids) > 1:
            def advance(done):
                bar.n = done
                bar.refresh()

            # quiet, nobody watches: no count of the files done every quarter second
            result = import_parallel(settings, pm, submission, processes,
                                     progress=None if quiet else advance)
        else:
            ingestor = Ingestor(settings, pm, session_factory)
            ingestor.on_chunk = lambda chunk_result, n: bar.update(n)
            result = import_now(ingestor, submission)
    except RuntimeError as exc:
        raise CommandError(str(exc)) from None
    finally:
        bar.close()
    return _summary(session_factory, submission, started, result.imported, result.errors,
                    result.duplicates, result.bytes)


def _default_processes() -> int:
    """Import processes for ``import --now``: one per CPU."""
    import os

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cpus


def _default_batch_name(paths: list[str]) -> str:
    if len(paths) == 1:
        return Path(paths[0]).absolute().name or "import"
    return "import"


def _summary(session_factory, submission, started: float, imported: int, errors: int,
             duplicates: int | None = None, nbytes: int | None = None) -> int:
    """Print the closing line of ``sendit import``; return its exit code."""
    import time

    from .models import Batch

    elapsed = max(time.monotonic() - started, 1e-6)
    with session_factory() as db:
        batch = db.get(Batch, submission.batch_id)
    line = f"imported {imported}"
    if duplicates is not None:
        line += f", duplicates {duplicates}"
    line += f", errors {errors} in {elapsed:.1f} s ({submission.file_count / elapsed:.1f} files/s"
    if nbytes is not None:
        line += f", {nbytes / 2**20 / elapsed:.1f} MB/s"
    print(line + f"); batch {batch.name!r} (id {batch.id}) is {batch.status.value}")
    if errors:
        print(f"{errors} file(s) could not be imported: the batch page lists each with its "
              f"reason", file=sys.stderr)
        return EXIT_FILE_ERRORS
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run a worker in the foreground until SIGTERM or Ctrl-C."""
    import signal

    from .pipeline import gc_tuned_for_ingest
    from .worker import Worker

    settings, pm = read_ini(args.ini)
    session_factory = _session_factory(settings)
    _check_schema(settings, args.ini)
    worker = Worker(settings, pm, session_factory)

    def stop(signum, frame):
        log.info("signal %s: stopping after the current chunk", signum)
        worker.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"worker {worker.identity} started; stop it with Ctrl-C or SIGTERM", flush=True)
    with gc_tuned_for_ingest():
        worker.run()
    print(f"worker {worker.identity} stopped after {worker.jobs_done} job(s)")
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

    imp = subparsers.add_parser(
        "import", help="import DICOM files or folders as one batch",
        description="Import files and folders (recursively) as one batch. By default the "
                    "files are queued for the workers; --now imports them in this process. "
                    "Exit codes: 0 every file imported (or already there), 1 the command "
                    "failed, 3 some files became error rows.",
    )
    imp.add_argument("ini", help="the ini file, e.g. development.ini")
    imp.add_argument("paths", nargs="+", metavar="PATH", help="files or folders to import")
    imp.add_argument("--batch", metavar="NAME", help="name of the new batch (default: the folder's name)")
    imp.add_argument("--batch-id", type=int, metavar="ID", help="add to this existing batch")
    imp.add_argument("--now", action="store_true", help="import in this process, without workers")
    imp.add_argument("--wait", action="store_true", help="queue for the workers and follow until done")
    imp.add_argument("--delete-source", action="store_true",
                     help="delete each file once imported (default: sendit.import.delete_source)")
    imp.add_argument("--processes", type=int, metavar="N",
                     help="with --now: import processes working side by side "
                          "(default: one per CPU)")
    imp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    imp.set_defaults(func=cmd_import)

    worker = subparsers.add_parser(
        "worker", help="run an ingest worker in the foreground",
        description="Consume import jobs until SIGTERM or Ctrl-C. Run as many as you like.",
    )
    worker.add_argument("ini", help="the ini file, e.g. production.ini")
    worker.set_defaults(func=cmd_worker)
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


def run() -> None:
    """The ``sendit`` console script: :func:`main`, then exit without the
    interpreter's last full garbage collection.

    That sweep walks every object the command made (its modules, mappers,
    plugins, a run's leftovers) only to free memory the process gives back to
    the system at once anyway: 0.1-0.25 s of every command. Nothing depends on
    it: the system closes the process's files, logging flushes its handlers at
    exit, and every engine closes its database connections then too
    (:func:`sendit_core.models.get_engine`), which is when SQLite writes its
    WAL back into the database file.

    Before anything imports numpy (pydicom does), OpenBLAS is told to start
    no thread pool of its own unless the user says otherwise: no command
    multiplies matrices, yet its threads spin on the other cores after they
    start, ~0.1 s of CPU time a command that a parallel import wants.
    """
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    code = main()
    gc.freeze()
    sys.exit(code)


def pshell_setup(env: dict[str, Any]) -> None:
    """``pshell development.ini``: a ``dbsession`` and the ``models`` module at hand."""
    from . import models

    request = env["request"]
    env["tm"] = request.tm
    env["dbsession"] = request.dbsession
    env["models"] = models


