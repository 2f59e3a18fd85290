"""The query console: off by default, read-only always.

The guarantees are proven twice on SQLite and on PostgreSQL: once through the
console as users meet it (the statement check refuses anything but a read),
and once with that check switched off, to show that the connection itself
refuses every write (``mode=ro`` + an authorizer on SQLite, a read-only
transaction on PostgreSQL); afterwards the database is exactly as it was.
"""
from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from webtest import TestApp

from sendit_core.models import Batch, BatchStatus, HeaderField, HeaderValue, Image, get_engine, get_session_factory
from sendit_core.settings import SettingsError
from sendit_core.testing import csrf_token, login
from sendit_search.readonly import ConsoleError, ReadOnlyDatabase, check_statement, READING_SQLITE
from test_query import fresh_database

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def database_url(request, tmp_path_factory):
    backend = getattr(request, "param", "sqlite")
    folder = tmp_path_factory.mktemp(f"console-{backend}")
    template = request.getfixturevalue("_sqlite_template") if backend == "sqlite" else None
    url, drop = fresh_database(backend, folder, template)
    request.addfinalizer(drop)
    engine = get_engine({"sqlalchemy.url": url})
    with get_session_factory(engine)() as db:
        batch = Batch(name="console batch", source="test", status=BatchStatus.DONE, image_count=3)
        db.add(batch)
        db.flush()
        field = HeaderField(tag_path="00100010", keyword_path="PatientName", tag=0x00100010, vr="PN")
        db.add(field)
        db.flush()
        for n in range(3):
            image = Image(batch_id=batch.id, sop_instance_uid=f"1.2.3.{n}", stored_path=f"x/{n}.dcm",
                          size=10 * n, modality="CT" if n else None)
            db.add(image)
            db.flush()
            db.add(HeaderValue(image_id=image.id, field_id=field.id, value_text=f"DOE^{n}"))
        db.commit()
    engine.dispose()
    return url


@pytest.fixture(scope="module")
def console(database_url):
    db = ReadOnlyDatabase(database_url, timeout=1.0, max_rows=2)
    yield db
    db.dispose()


def snapshot(url: str) -> dict:
    """Everything a write could change: row counts, names, the schema."""
    engine = get_engine({"sqlalchemy.url": url})
    with engine.connect() as conn:
        state = {
            "batches": conn.execute(select(Batch.id, Batch.name)).all(),
            "images": conn.execute(select(func.count()).select_from(Image)).scalar(),
            "values": conn.execute(select(HeaderValue.value_text).order_by(HeaderValue.value_text)).all(),
        }
        if conn.dialect.name == "sqlite":
            state["schema"] = conn.execute(text("SELECT type, name, sql FROM sqlite_master ORDER BY name")).all()
            state["user_version"] = conn.execute(text("PRAGMA user_version")).scalar()
            state["journal"] = conn.execute(text("PRAGMA journal_mode")).scalar()
        else:
            state["schema"] = conn.execute(text(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = 'public' ORDER BY 1, 2")).all()
            state["sequences"] = conn.execute(text(
                "SELECT sequencename, last_value FROM pg_sequences ORDER BY 1")).all()
            state["large objects"] = conn.execute(text(
                "SELECT count(*) FROM pg_largeobject_metadata")).scalar()
    engine.dispose()
    return state


# -- reading ----------------------------------------------------------------------------


def test_reading_statements_run_and_show_their_rows(console):
    result = console.run("SELECT id, modality, sop_instance_uid FROM image ORDER BY id;")
    assert result.columns == ["id", "modality", "sop_instance_uid"]
    assert result.rows[0][1] is None and result.rows[1][1:] == ("CT", "1.2.3.1")
    assert result.truncated  # 3 rows, at most 2 shown
    assert console.run("SELECT count(*) FROM header_value").rows == [("3",)]
    assert console.run("WITH t AS (SELECT 1 AS x) SELECT x FROM t").rows == [("1",)]
    assert console.run("VALUES (1, 'a')").rows[0][1] == "a"
    assert console.run("  -- a comment first\nSELECT 2").rows == [("2",)]
    assert console.run("SELECT ';' AS semicolon -- and ; in a comment").rows == [(";",)]
    assert console.run("EXPLAIN SELECT * FROM image").rows
    long = console.run("SELECT " + ("'" + "x" * 3000 + "'"))
    assert long.rows[0][0].endswith("… (3,000 characters)")
    if console.dialect == "sqlite":
        assert console.run("SELECT x'00ff'").rows == [("<2 bytes: 00 ff>",)]
        assert console.run("PRAGMA table_info(image)").rows[0][1] == "id"
        assert console.run("PRAGMA user_version").rows == [("0",)]
        assert console.run("SELECT sendit_lower('ÄÖ')").rows == [("äö",)]
    else:
        assert console.run("SELECT '\\x00ff'::bytea").rows == [("<2 bytes: 00 ff>",)]
        assert console.run("SHOW transaction_read_only").rows == [("on",)]
        assert console.run("TABLE batch").rows[0][1] == "console batch"


def test_the_schema_is_shown(console):
    tables = {t.name: t for t in console.schema()}
    assert {"batch", "image", "header_value", "header_field"} <= set(tables)
    assert "alembic_version" not in tables
    columns = {c.name: c for c in tables["header_value"].columns}
    assert columns["image_id"].primary_key and not columns["value_text"].primary_key
    assert any("ix_header_value_field_text" in ix for ix in tables["header_value"].indexes)


def test_slow_statements_are_stopped(console):
    slow = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
            if console.dialect == "sqlite" else "SELECT pg_sleep(5)")
    with pytest.raises(ConsoleError, match=r"Stopped after 1\.\d s: a console statement may run 1 s"):
        console.run(slow)
    assert console.run("SELECT 1").rows == [("1",)]  # and the next one runs


# -- never writing -----------------------------------------------------------------------

REFUSED_BY_CHECK = [
    ("INSERT INTO batch (name, status, source) VALUES ('x', 'DONE', 'x')", "INSERT statements are refused"),
    ("UPDATE batch SET name = 'x'", "UPDATE statements are refused"),
    ("DELETE FROM image", "DELETE statements are refused"),
    ("DROP TABLE image", "DROP statements are refused"),
    ("CREATE TABLE evil (x int)", "CREATE statements are refused"),
    ("ALTER TABLE batch ADD COLUMN evil int", "ALTER statements are refused"),
    ("ATTACH DATABASE 'evil.sqlite' AS evil", "ATTACH statements are refused"),
    ("DETACH DATABASE main", "DETACH statements are refused"),
    ("VACUUM", "VACUUM statements are refused"),
    ("REINDEX", "REINDEX statements are refused"),
    ("BEGIN", "BEGIN statements are refused"),
    ("SET default_transaction_read_only = off", "SET statements are refused"),
    ("COPY batch TO '/tmp/evil'", "COPY statements are refused"),
    ("GRANT ALL ON batch TO public", "GRANT statements are refused"),
    ("SELECT 1; DELETE FROM image", "One statement at a time"),
    ("SELECT 1;DROP TABLE image;", "One statement at a time"),
    ("SELECT ';'; DELETE FROM image", "One statement at a time"),
    ("SELECT 1 /* ; */; DELETE FROM image", "One statement at a time"),
    ("SELECT 1;\n-- then\nDELETE FROM image", "One statement at a time"),
    ("", "Write a statement first"),
    ("-- nothing but a comment", "Write a statement first"),
]


@pytest.mark.parametrize(("sql", "message"), REFUSED_BY_CHECK, ids=[s for s, _ in REFUSED_BY_CHECK])
def test_the_console_refuses_anything_but_one_read(console, sql, message):
    with pytest.raises(ConsoleError, match=re.escape(message)):
        console.run(sql)


def test_postgresql_quoting_cannot_hide_a_second_statement():
    pg = {"select", "with"}
    for sql in ("SELECT E'\\'' ; DELETE FROM image; --'", "SELECT $$;$$; DELETE FROM image",
                "SELECT $a$ $b$ ;$a$; DELETE FROM image"):
        with pytest.raises(ConsoleError, match="One statement at a time"):
            check_statement(sql, pg, "postgresql")
    assert check_statement("SELECT $a$;$a$, 'it''s;' ;", pg, "postgresql") == "SELECT $a$;$a$, 'it''s;'"
    assert check_statement("select [a;b] from t", READING_SQLITE, "sqlite") == "select [a;b] from t"


WRITES = ["INSERT INTO batch (name, status, source, image_count, error_count, pending_count, "
          "total_bytes, created_at, updated_at) VALUES ('evil', 'DONE', 'x', 0, 0, 0, 0, "
          "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
          "UPDATE batch SET name = 'evil'", "DELETE FROM header_value", "DROP TABLE image",
          "CREATE TABLE evil (x int)", "ALTER TABLE batch ADD COLUMN evil int",
          "CREATE INDEX evil ON image (size)", "SELECT 1; DELETE FROM image"]
SQLITE_WRITES = ["ATTACH DATABASE '{folder}/attached.sqlite' AS evil", "PRAGMA user_version = 7",
                 "PRAGMA journal_mode = DELETE", "VACUUM INTO '{folder}/copy.sqlite'",
                 "WITH x AS (SELECT 1) DELETE FROM image", "EXPLAIN QUERY PLAN DELETE FROM image",
                 "REINDEX", "DETACH DATABASE main", "PRAGMA writable_schema = ON",
                 "PRAGMA query_only = OFF"]
POSTGRESQL_WRITES = ["WITH d AS (DELETE FROM image RETURNING id) SELECT * FROM d",
                     "SELECT nextval('batch_id_seq')", "EXPLAIN ANALYZE DELETE FROM image",
                     "SET default_transaction_read_only = off",
                     "SELECT lo_create(0)", "TRUNCATE image"]


def test_the_connection_itself_refuses_every_write(console, database_url, tmp_path):
    """With the statement check off, each write still fails and changes nothing."""
    before = snapshot(database_url)
    extra = SQLITE_WRITES if console.dialect == "sqlite" else POSTGRESQL_WRITES
    for sql in WRITES + [s.format(folder=tmp_path) for s in extra]:
        try:
            console.run(sql, check=False)
        except ConsoleError as exc:
            assert "Refused" in str(exc) or "One statement" in str(exc) or \
                "multiple commands" in str(exc), (sql, str(exc))
        else:  # the few that "succeed" leave nothing behind: a session setting, and a
            # large object created in the transaction that is always rolled back
            assert sql.startswith(("SET ", "SELECT lo_create")), sql
    # a session setting never outlives its statement: each runs on a fresh connection
    if console.dialect == "postgresql":
        console.run("SELECT set_config('default_transaction_read_only', 'off', false)", check=False)
        with pytest.raises(ConsoleError, match="read-only transaction"):
            console.run("CREATE TABLE evil (x int)", check=False)
    else:
        with pytest.raises(ConsoleError, match="Refused"):
            console.run("PRAGMA query_only = OFF", check=False)
    assert snapshot(database_url) == before
    assert not list(tmp_path.iterdir())  # nothing attached, vacuumed into or copied


def test_through_the_console_nothing_changes_either(console, database_url):
    before = snapshot(database_url)
    for sql, _message in REFUSED_BY_CHECK:
        with pytest.raises(ConsoleError):
            console.run(sql)
    assert snapshot(database_url) == before


def test_only_file_databases(tmp_path):
    with pytest.raises(ConsoleError, match="needs a database file"):
        ReadOnlyDatabase("sqlite://", 1, 10)
    with pytest.raises(ConsoleError, match="supports SQLite and PostgreSQL"):
        ReadOnlyDatabase("mysql://x@localhost/db", 1, 10)
    missing = ReadOnlyDatabase(f"sqlite:///{tmp_path / 'missing.sqlite'}", 1, 10)
    with pytest.raises(ConsoleError, match="Cannot open the database read-only"):
        missing.run("SELECT 1")
    assert not (tmp_path / "missing.sqlite").exists()  # read-only: not even created


# -- the page -------------------------------------------------------------------------------


def test_off_by_default_and_in_production_ini(app, testapp):
    assert app.settings["sendit.console.enabled"] is False
    testapp.get("/console", status=404)
    assert ">Console<" not in testapp.get("/search").text
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "production.ini")
    assert parser["app:main"]["sendit.console.enabled"] == "false"


@pytest.fixture
def console_app(make_app):
    app = make_app(settings={"sendit.console.enabled": "true", "sendit.console.max_rows": "2"})
    client = TestApp(app.wsgi)
    assert login(client).status_int == 303
    return app, client


def test_the_console_page_runs_reads_and_shows_the_schema(console_app):
    app, client = console_app
    page = client.get("/console")
    assert ">Console<" in page.text and "Schema" in page.text and "header_value" in page.text
    assert "Read-only" in page.text and "Images per modality" in page.text
    superuser = "a superuser: nothing can be written to the database" in page.text
    assert superuser == app.settings["sqlalchemy.url"].startswith("postgresql")  # tests run as postgres
    prefilled = client.get("/console", params={"sql": "SELECT 42"})
    assert ">SELECT 42</textarea>" in prefilled.text and 'id="result-title"' not in prefilled.text
    form = page.forms["console-form"]
    form["sql"] = "SELECT name FROM batch WHERE name LIKE 'console%'"
    result = form.submit()
    assert result.status_int == 200 and "<td>console batch</td>" in result.text
    assert "1 row <span" in result.text
    form = result.forms["console-form"]
    form["sql"] = "SELECT id, modality FROM image ORDER BY id"
    more = form.submit()
    assert "2 rows (the first 2; there are more)" in more.text and '<td class="null">NULL</td>' in more.text


def test_the_console_page_refuses_writes_with_a_message(console_app):
    app, client = console_app
    with app.session() as db:
        batches = db.scalar(select(func.count()).select_from(Batch))
    page = client.get("/console")
    form = page.forms["console-form"]
    form["sql"] = "DELETE FROM batch"
    refused = form.submit(status=400)
    assert "DELETE statements are refused" in refused.text and 'role="alert"' in refused.text
    assert ">DELETE FROM batch</textarea>" in refused.text  # the text is kept to edit
    no_token = client.post("/console", {"sql": "SELECT 1"}, status=400)
    assert "security token (CSRF) is missing" in no_token.text
    token = csrf_token(client)
    assert client.post("/console", {"sql": "x" * 20_001, "csrf_token": token}, status=400)
    with app.session() as db:
        assert db.scalar(select(func.count()).select_from(Batch)) == batches > 0


def test_the_console_is_behind_the_lockdown(console_app):
    app, _client = console_app
    stranger = TestApp(app.wsgi)
    for method in ("GET", "POST"):
        response = stranger.request("/console", method=method, expect_errors=True)
        assert response.status_int == 303 and "/login" in response.location


def test_console_settings_are_checked(make_app):
    for key, value in (("sendit.console.enabled", "maybe"), ("sendit.console.timeout_seconds", "0"),
                       ("sendit.console.max_rows", "-1")):
        with pytest.raises(SettingsError, match=re.escape(key)):
            make_app(settings={key: value})
