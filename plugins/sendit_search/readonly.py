"""Running one SQL statement on a connection that cannot write.

Four walls, each enough on its own for what it covers:

1. the statement is checked before it is sent: exactly one statement (``;``
   outside strings and comments ends it), starting with SELECT, WITH, EXPLAIN,
   VALUES (TABLE and SHOW on PostgreSQL, PRAGMA on SQLite);
2. the connection is read-only: SQLite opens the file with ``mode=ro`` and
   ``PRAGMA query_only``; PostgreSQL runs the statement in a ``READ ONLY``
   transaction on a session whose ``default_transaction_read_only`` is on, and
   rolls back;
3. SQLite: an authorizer refuses every action but reading (no INSERT, UPDATE,
   DELETE, CREATE, DROP, ALTER, ATTACH, DETACH, writing PRAGMAs, VACUUM);
   PostgreSQL: the statement is prepared (extended protocol), which the server
   refuses for more than one command;
4. a time limit (SQLite: a progress handler; PostgreSQL: ``statement_timeout``)
   and a row limit (rows are fetched one page at a time, at most ``max_rows``;
   PostgreSQL reads SELECTs through a server-side cursor).

Each statement gets a fresh connection, closed afterwards, so nothing a
statement changes in its session outlives it.
"""
from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from sendit_core.query import register_sqlite_functions

#: Statements the console runs, by their first word.
READING = {"select", "with", "explain", "values"}
READING_SQLITE = READING | {"pragma"}
READING_POSTGRESQL = READING | {"table", "show"}
#: PRAGMAs that only read, even given an argument (table_info(image) ...).
PRAGMAS_WITH_ARGUMENT = {
    "table_info", "table_xinfo", "index_list", "index_info", "index_xinfo",
    "foreign_key_list", "foreign_key_check", "integrity_check", "quick_check",
}
#: PRAGMAs that read when given no value (and would write with one).
PRAGMAS_WITHOUT_VALUE = {
    "database_list", "compile_options", "page_count", "page_size", "freelist_count",
    "user_version", "schema_version", "application_id", "journal_mode", "encoding",
    "collation_list", "function_list", "pragma_list", "table_list", "module_list",
    "data_version", "auto_vacuum", "cache_size", "foreign_keys", "synchronous",
    "max_page_count", "mmap_size", "busy_timeout", "query_only", "read_uncommitted",
}
MAX_CELL = 2000


class ConsoleError(Exception):
    """A statement the console refused or that failed; ``str(exc)`` says why."""


@dataclass
class Result:
    columns: list[str]
    rows: list[tuple]
    #: more rows exist than were fetched (the row limit)
    truncated: bool
    seconds: float
    statement: str


@dataclass
class Column:
    name: str
    type: str
    primary_key: bool = False


@dataclass
class Table:
    name: str
    columns: list[Column] = field(default_factory=list)
    indexes: list[str] = field(default_factory=list)


# -- checking the text -----------------------------------------------------------

_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


def code_mask(sql: str, dialect: str = "sqlite") -> str:
    """``sql`` with its strings and quoted names as ``_`` and its comments as
    spaces (same length, so positions match): what is left is the code.

    SQLite quotes with ' " ` and [ ]; PostgreSQL with ' " , E'..' (backslash
    escapes) and $tag$..$tag$.
    """
    quotes = "'\"`[" if dialect == "sqlite" else "'\""
    out, i, n = list(sql), 0, len(sql)
    while i < n:
        c = sql[i]
        end = None
        if c in quotes:
            close = "]" if c == "[" else c
            backslash = (dialect != "sqlite" and c == "'" and i > 0 and sql[i - 1] in "eE"
                         and (i < 2 or not (sql[i - 2].isalnum() or sql[i - 2] == "_")))
            j = i + 1
            while j < n:
                if backslash and sql[j] == "\\":
                    j += 2
                    continue
                if sql[j] == close:
                    if close != "]" and j + 1 < n and sql[j + 1] == close:  # '' inside
                        j += 2
                        continue
                    break
                j += 1
            end = j + 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            end = n if j < 0 else j + 1
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            end = n if j < 0 else j + 2
        elif c == "$" and dialect != "sqlite":
            match = _DOLLAR.match(sql, i)
            if match and not (i > 0 and (sql[i - 1].isalnum() or sql[i - 1] == "_")):
                j = sql.find(match.group(), match.end())
                end = n if j < 0 else j + len(match.group())
        if end is None:
            i += 1
            continue
        end = min(end, n)
        out[i:end] = (" " if sql.startswith(("--", "/*"), i) else "_") * (end - i)
        i = end
    return "".join(out)


def check_statement(sql: str, allowed: set[str], dialect: str = "sqlite") -> str:
    """The one statement in ``sql``, without a trailing ``;``.

    :raises ConsoleError: empty, several statements, or not a reading statement.
    """
    if not sql or not sql.strip():
        raise ConsoleError("Write a statement first, e.g. SELECT count(*) FROM image")
    if "\x00" in sql:
        raise ConsoleError("The statement contains a NUL character.")
    code = code_mask(sql, dialect)
    body = code.rstrip()
    if body.endswith(";"):
        body = body[:-1].rstrip()
    if ";" in body:
        raise ConsoleError("One statement at a time: the console runs a single statement "
                           "(a ; ends it), so nothing can ride along behind a SELECT.")
    if not body.strip():
        raise ConsoleError("Write a statement first: this is only a comment.")
    word = re.match(r"[\s(]*([A-Za-z]+)", body)
    first = word.group(1).lower() if word else ""
    if first not in allowed:
        shown = first.upper() or "this"
        verbs = ", ".join(sorted(w.upper() for w in allowed))
        raise ConsoleError(f"The console only reads: {shown} statements are refused. "
                           f"It runs {verbs}.")
    return sql[:len(body)]


def display(value: Any) -> Any:
    """A value as the result table shows it (``None`` stays ``None``)."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        hexed = data[:32].hex(" ")
        return f"<{len(data)} bytes: {hexed}{' …' if len(data) > 32 else ''}>"
    text = str(value)
    return text if len(text) <= MAX_CELL else text[:MAX_CELL] + f"… ({len(text):,} characters)"


# -- the databases ---------------------------------------------------------------------


class ReadOnlyDatabase:
    """Runs single reading statements on ``url`` within ``timeout`` seconds,
    returning at most ``max_rows`` rows."""

    def __init__(self, url: str, timeout: float, max_rows: int):
        self.url = make_url(url)
        self.timeout = timeout
        self.max_rows = max_rows
        self.dialect = "sqlite" if self.url.get_backend_name() == "sqlite" else \
            self.url.get_backend_name()
        self.allowed = READING_SQLITE if self.dialect == "sqlite" else READING_POSTGRESQL
        if self.dialect == "sqlite":
            database = self.url.database or ""
            if not database or database == ":memory:" or database.startswith("file::memory:"):
                raise ConsoleError("The console needs a database file (this app runs on an "
                                   "in-memory database).")
            self.path = database
            self.engine = create_engine("sqlite://", creator=self._sqlite_connect,
                                        poolclass=NullPool)
        elif self.dialect == "postgresql":
            options = (f"-c default_transaction_read_only=on "
                       f"-c statement_timeout={int(timeout * 1000)} "
                       f"-c idle_in_transaction_session_timeout={int(timeout * 2000) + 1000}")
            url_ = self.url
            if url_.drivername == "postgresql":
                url_ = url_.set(drivername="postgresql+psycopg")
            self.engine = create_engine(url_, poolclass=NullPool,
                                        connect_args={"options": options, "connect_timeout": 10})
        else:
            raise ConsoleError(f"The console supports SQLite and PostgreSQL, not {self.dialect}.")

    def dispose(self) -> None:
        self.engine.dispose()

    # -- SQLite

    def _sqlite_connect(self) -> sqlite3.Connection:
        uri = f"file:{quote(self.path)}?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=5, check_same_thread=False)
            conn.execute("PRAGMA query_only = ON")
        except sqlite3.Error as exc:
            raise ConsoleError(f"Cannot open the database read-only: {exc}") from None
        register_sqlite_functions(conn)
        conn.set_authorizer(_sqlite_authorizer)
        return conn

    def _run_sqlite(self, sql: str) -> Result:
        conn = self._sqlite_connect()
        started = time.monotonic()
        deadline = started + self.timeout
        conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 2000)
        try:
            cursor = conn.execute(sql)
            rows = cursor.fetchmany(self.max_rows + 1)
            columns = [d[0] for d in cursor.description or ()]
        except sqlite3.Error as exc:
            raise self._sqlite_error(exc, started) from None
        finally:
            conn.close()
        return self._result(columns, rows, started, sql)

    def _sqlite_error(self, exc: sqlite3.Error, started: float) -> ConsoleError:
        message = str(exc)
        if "interrupted" in message:
            return ConsoleError(f"Stopped after {time.monotonic() - started:.1f} s: a console "
                                f"statement may run {self.timeout:g} s at most "
                                "(sendit.console.timeout_seconds).")
        if "authoriz" in message or "readonly" in message or "read-only" in message:
            return ConsoleError(f"Refused: the console cannot change the database ({message}).")
        if "one statement at a time" in message.lower():
            return ConsoleError("One statement at a time: the console runs a single statement.")
        return ConsoleError(f"The database says: {message}")

    # -- PostgreSQL

    def _run_postgresql(self, sql: str, first: str) -> Result:
        import psycopg

        started = time.monotonic()
        try:
            with self.engine.connect() as conn:
                raw = conn.connection.dbapi_connection
                with raw.cursor() as setup:
                    # psycopg has begun a transaction: make it read-only first thing
                    setup.execute("SET TRANSACTION READ ONLY")
                    setup.execute(f"SET LOCAL statement_timeout = {int(self.timeout * 1000)}")
                try:
                    if first in ("select", "with", "values", "table"):
                        cursor = raw.cursor(name="sendit_console")  # rows stay on the server
                        cursor.execute(sql)
                    else:
                        cursor = raw.cursor()
                        cursor.execute(sql, prepare=True)  # one command, or the server refuses
                    rows = cursor.fetchmany(self.max_rows + 1) if cursor.description else []
                    columns = [d.name for d in cursor.description or ()]
                    cursor.close()
                finally:
                    raw.rollback()
        except psycopg.errors.QueryCanceled:
            raise ConsoleError(f"Stopped after {time.monotonic() - started:.1f} s: a console "
                               f"statement may run {self.timeout:g} s at most "
                               "(sendit.console.timeout_seconds).") from None
        except psycopg.errors.ReadOnlySqlTransaction as exc:
            raise ConsoleError("Refused: the console cannot change the database "
                               f"({_first_line(exc)}).") from None
        except psycopg.Error as exc:
            if "data-modifying" in str(exc):
                raise ConsoleError("Refused: the console cannot change the database "
                                   f"({_first_line(exc)}).") from None
            raise ConsoleError(f"The database says: {_first_line(exc)}") from None
        except ConsoleError:
            raise
        except Exception as exc:  # noqa: BLE001 - a connection problem, say
            orig = getattr(exc, "orig", None) or exc
            raise ConsoleError(f"Cannot reach the database: {_first_line(orig)}") from None
        return self._result(columns, rows, started, sql)

    # -- both

    def run(self, sql: str, *, check: bool = True) -> Result:
        """Run one reading statement.

        :param check: check the text first (tests turn it off to prove that the
            connection itself refuses to write).
        :raises ConsoleError: refused, failed or too slow; the message says which.
        """
        text = check_statement(sql, self.allowed, self.dialect) if check else sql
        first = re.match(r"[\s(]*([A-Za-z]*)", text).group(1).lower()
        if self.dialect == "sqlite":
            return self._run_sqlite(text)
        return self._run_postgresql(text, first)

    def _result(self, columns, rows, started, sql) -> Result:
        truncated = len(rows) > self.max_rows
        shown = [tuple(display(v) for v in row) for row in rows[: self.max_rows]]
        return Result(columns, shown, truncated, time.monotonic() - started, sql)

    def warning(self) -> str | None:
        """Why this connection is riskier than it need be, if it is (a superuser)."""
        if self.dialect != "postgresql":
            return None
        try:
            with self.engine.connect() as conn:
                role, superuser = conn.execute(text(
                    "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user")).one()
        except Exception:  # noqa: BLE001 - the schema panel reports connection problems
            return None
        if not superuser:
            return None
        return (f"The console connects as {role}, a superuser: nothing can be written to the "
                "database, but a superuser's SELECT can read the server's files. Point "
                "sendit.console.database_url at a role that may only SELECT.")

    def schema(self) -> list[Table]:
        """The tables, their columns and indexes, read through the same kind of connection."""
        tables = []
        try:
            inspector = inspect(self.engine)
            for name in sorted(inspector.get_table_names()):
                if name == "alembic_version":
                    continue
                table = Table(name)
                pk = set(inspector.get_pk_constraint(name).get("constrained_columns") or ())
                for column in inspector.get_columns(name):
                    table.columns.append(Column(column["name"], str(column["type"]),
                                                column["name"] in pk))
                table.indexes = [f"{ix['name']} ({', '.join(c for c in ix['column_names'] if c)})"
                                 for ix in inspector.get_indexes(name)]
                tables.append(table)
        except ConsoleError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ConsoleError(f"Cannot read the schema: {_first_line(getattr(exc, 'orig', exc))}") \
                from None
        return tables


def _first_line(exc) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _sqlite_authorizer(action, arg1, arg2, database, trigger):
    """Allow reading only (sqlite3's authorizer callback)."""
    if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                  sqlite3.SQLITE_RECURSIVE):
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA:
        name = (arg1 or "").lower()
        if name in PRAGMAS_WITH_ARGUMENT or (name in PRAGMAS_WITHOUT_VALUE and arg2 is None):
            return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY
