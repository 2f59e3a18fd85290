"""The data model, the engine and the per-request session.

Public functions other modules and plugins use: :func:`get_engine`,
:func:`get_session_factory`, :func:`get_tm_session`, :func:`upgrade_schema` and
:func:`check_schema`.
"""
from __future__ import annotations

import atexit
import os
import weakref
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, configure_mappers, sessionmaker

from .batch import Batch, BatchStatus
from .error import IngestError
from .header import MAX_VALUE_LENGTH, HeaderField, HeaderValue
from .image import Image
from .job import FileOutcome, Job, JobFile, JobStatus
from .meta import Base, utcnow

__all__ = [
    "Base", "Batch", "BatchStatus", "FileOutcome", "HeaderField", "HeaderValue", "Image",
    "IngestError", "Job", "JobFile", "JobStatus",
    "MAX_VALUE_LENGTH", "SCHEMA_REVISION", "SchemaError", "check_schema", "get_engine",
    "get_session_factory", "get_tm_session", "upgrade_schema", "utcnow",
]

#: the newest migration in ``sendit_core/migrations/versions`` (a test keeps the
#: two equal): the schema this code reads and writes. Revisions are numbered
#: ``0001``, ``0002``... so that they sort in the order they were made.
SCHEMA_REVISION = "0004"

configure_mappers()


def get_engine(settings: dict[str, Any], prefix: str = "sqlalchemy.") -> Engine:
    """Create the engine from ``sqlalchemy.*`` settings (SQLite gets WAL and pragmas)."""
    url = settings[prefix + "url"]
    if url.startswith("sqlite"):
        database = url.split("///", 1)[-1]
        if database and not database.startswith(":memory:") and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    _dispose_after_fork_and_at_exit(engine)
    return engine


def _dispose_after_fork_and_at_exit(engine: Engine) -> None:
    """Give a forked child an empty pool, and close the pool at exit.

    After a fork (a server process of production.ini's gunicorn, which loads
    the app before it forks) the child forgets the parent's connections
    without closing them: a connection shared by two processes corrupts both
    sides' conversations, and closing would end it for the parent too (and
    drop SQLite's locks the parent holds): ``dispose(close=False)``.

    At exit the pooled connections are closed. Left to the garbage collector,
    they close only if its last sweep runs (the ``sendit`` command skips it)
    and in no set order; closed here, SQLite folds its write-ahead log back
    into the database file and removes it, so the ``.sqlite`` file alone holds
    everything once a command or the server has stopped.
    """
    ref = weakref.ref(engine)

    def dispose(close: bool) -> None:
        found = ref()
        if found is not None:
            found.dispose(close=close)

    os.register_at_fork(after_in_child=lambda: dispose(False))
    atexit.register(dispose, True)


def _sqlite_pragmas(dbapi_connection, connection_record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA cache_size=-65536")  # 64 MB: index inserts stay in memory longer
    # temporary tables (the ingest's staged header values, sendit_core/bulk.py)
    # and sorts in memory: on disk, each chunk's staging was journaled and
    # written to a file, ~15,000 writes a 2,000-file import
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.close()


def get_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def get_tm_session(session_factory: sessionmaker[Session], transaction_manager, request=None) -> Session:
    """A session joined to ``transaction_manager`` (pyramid_tm's or a script's)."""
    import zope.sqlalchemy  # here: it imports psycopg, a tenth of a command's start-up

    dbsession = session_factory(info={"request": request})
    zope.sqlalchemy.register(dbsession, transaction_manager=transaction_manager)
    return dbsession


def alembic_config(settings: dict[str, Any], engine: Engine | None = None):
    """An alembic Config for sendit's migrations, bound to the settings' database."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", "sendit_core:migrations")
    cfg.set_main_option("sqlalchemy.url", settings["sqlalchemy.url"].replace("%", "%%"))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade_schema(settings: dict[str, Any], engine: Engine | None = None) -> str | None:
    """Create or upgrade the schema to the newest migration; return the revision."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    engine = engine or get_engine(settings)
    command.upgrade(alembic_config(settings, engine), "head")
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


class SchemaError(RuntimeError):
    """The database has no sendit schema, or not the one this code needs."""


def check_schema(engine: Engine, ini: str = "INI") -> None:
    """Raise :class:`SchemaError`, saying what to run (``sendit initdb`` on the
    ini file ``ini``), unless the database's schema is :data:`SCHEMA_REVISION`.

    Every program that does not create the schema itself (the web app with
    ``sendit.db.auto_create = false``, workers, the watcher, imports) checks it
    before it starts: a database never initialised, or one left behind by an
    upgrade of the code, would otherwise fail on every request or file with a
    missing table or column. One query; alembic is not imported.
    """
    from sqlalchemy import inspect
    from sqlalchemy.exc import SQLAlchemyError

    where = engine.url.render_as_string(hide_password=True)
    try:
        with engine.connect() as conn:
            found = (conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
                     if inspect(conn).has_table("alembic_version") else None)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise SchemaError(f"cannot read the database {where} ({reason})") from None
    if found is None:
        raise SchemaError(f"the database {where} has no sendit tables yet; "
                          f"run 'sendit initdb {ini}' first")
    if found > SCHEMA_REVISION:
        raise SchemaError(f"the database {where} is at schema revision {found}, made by a newer "
                          f"sendit than this one (which knows revisions up to {SCHEMA_REVISION}); "
                          f"run that newer version, or restore the backup taken before upgrading")
    if found != SCHEMA_REVISION:
        raise SchemaError(f"the database {where} is at schema revision {found} and this sendit "
                          f"needs {SCHEMA_REVISION}; run 'sendit initdb {ini}' to upgrade it "
                          f"(back it up first: docs/deploy.md)")


def includeme(config) -> None:
    """Pyramid: add ``request.dbsession`` (the ORM session, joined to pyramid_tm's
    transaction) and ``request.dbconnection`` (a plain connection, for views that
    only read)."""
    settings = config.get_settings()
    settings["tm.manager_hook"] = "pyramid_tm.explicit_manager"
    config.include("pyramid_tm")
    config.include("pyramid_retry")
    engine = settings.get("sendit.engine") or get_engine(settings)
    settings["sendit.engine"] = engine
    session_factory = get_session_factory(engine)
    config.registry["dbsession_factory"] = session_factory

    def dbsession(request):
        return get_tm_session(session_factory, request.tm, request=request)

    config.add_request_method(dbsession, reify=True)

    def dbconnection(request) -> Connection:
        """A connection for reading only, back in the pool when the request ends.

        No ORM session and no join to the transaction manager: a session costs
        a third of a small API request (its listeners, its transaction, its
        close). Whatever it reads is committed data; anything a view writes
        goes through ``request.dbsession``, so it commits or rolls back with
        the request.
        """
        connection = engine.connect()
        request.add_finished_callback(lambda _request: connection.close())
        return connection

    config.add_request_method(dbconnection, reify=True)
