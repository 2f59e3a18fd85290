"""pytest fixtures for sendit and its plugins (load with ``pytest_plugins``).

Factories, devpi-style, so each test picks exactly the plugins it loads:

- ``make_settings(**overrides)``: raw ini settings on temp folders and a fresh
  database (SQLite; PostgreSQL for the ``postgresql`` variant of ``database_url``);
- ``make_app(plugins=..., **overrides)``: a configured :class:`SenditApp`;
- ``app`` / ``testapp`` / ``anon_app``: the built-in plugins, WebTest clients
  logged in and not;
- ``live_server``: the app served by waitress on a free port;
- ``browser`` / ``page``: headless Chromium through Playwright, and
  :func:`save_screenshot`.

Environment:

- ``SENDIT_TEST_DATABASE_URL``: a PostgreSQL URL; database tests then also run
  against a fresh database created on that server;
- ``SENDIT_TEST_REQUIRE_SERVICES=1``: a missing PostgreSQL or Chromium fails
  the run instead of skipping (CI sets it).
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from .app import create_app, load_config
from .models import Base, get_engine, get_session_factory, upgrade_schema
from .plugins import DEFAULT_PLUGINS, get_plugin_manager

PASSWORD = "test-password-1234"
SECRET = "test-secret-" + "x" * 40
CHROMIUM = os.environ.get("SENDIT_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]


def services_required() -> bool:
    return os.environ.get("SENDIT_TEST_REQUIRE_SERVICES", "") not in ("", "0", "false")


def skip_or_fail(reason: str) -> None:
    """Skip (laptop) or fail (CI, ``SENDIT_TEST_REQUIRE_SERVICES=1``) for a missing service."""
    if services_required():
        pytest.fail(f"{reason} (SENDIT_TEST_REQUIRE_SERVICES is set)")
    pytest.skip(reason)


# -- databases --------------------------------------------------------------


def pytest_generate_tests(metafunc):
    """``database_url`` runs on SQLite, and on PostgreSQL when it is configured;
    ``broker_url`` on the embedded transport, and on ``SENDIT_TEST_BROKER_URL``'s.

    A test that takes both runs on the two set-ups sendit ships: the embedded
    default (SQLite + filesystem broker) and the production path (PostgreSQL +
    the external broker), plus the mixed pairs where it is marked
    ``@pytest.mark.service_matrix``.
    """
    backends = ["sqlite"] + (["postgresql"] if os.environ.get("SENDIT_TEST_DATABASE_URL") else [])
    brokers = ["embedded"] + (["external"] if os.environ.get("SENDIT_TEST_BROKER_URL") else [])
    names = metafunc.fixturenames
    if "database_url" in names and "broker_url" in names:
        if metafunc.definition.get_closest_marker("service_matrix"):
            pairs = [(db, broker) for db in backends for broker in brokers]
        else:
            pairs = [("sqlite", "embedded")]
            if "postgresql" in backends or "external" in brokers:
                pairs.append((backends[-1], brokers[-1]))
        metafunc.parametrize(("database_url", "broker_url"), pairs, indirect=True,
                             ids=[f"{db}-{broker}" for db, broker in pairs])
    elif "database_url" in names:
        metafunc.parametrize("database_url", backends, indirect=True)
    elif "broker_url" in names:
        metafunc.parametrize("broker_url", brokers, indirect=True)


@pytest.fixture
def broker_url(request) -> str:
    """``filesystem://`` (embedded), or ``SENDIT_TEST_BROKER_URL`` (RabbitMQ/Redis)."""
    if getattr(request, "param", "embedded") == "embedded":
        return "filesystem://"
    url = os.environ["SENDIT_TEST_BROKER_URL"]
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:  # noqa: BLE001
        skip_or_fail(f"the broker at {url} does not answer: {exc}")
    return url


def broker_settings(broker_url: str) -> dict[str, str]:
    """Settings for a test's own queue on ``broker_url``."""
    return {"sendit.broker_url": broker_url, "sendit.broker.queue": f"sendit.test.{uuid.uuid4().hex[:12]}"}


def write_ini(path: Path, raw: dict[str, Any]) -> Path:
    """Write raw settings as an ini file (for commands and worker processes)."""
    lines = ["[app:main]", "use = egg:sendit"]
    lines += [f"{key} = {str(value).replace('%', '%%')}" for key, value in raw.items() if key != "here"]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory) -> Path:
    """A migrated SQLite database, copied for each test (migrating is slower)."""
    path = tmp_path_factory.mktemp("template") / "template.sqlite"
    settings = {"sqlalchemy.url": f"sqlite:///{path}"}
    engine = get_engine(settings)
    upgrade_schema(settings, engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def _postgresql_database():
    """A fresh database on ``SENDIT_TEST_DATABASE_URL``'s server, migrated once."""
    base = os.environ.get("SENDIT_TEST_DATABASE_URL")
    if not base:
        skip_or_fail("SENDIT_TEST_DATABASE_URL is not set: PostgreSQL tests skipped")
    url = make_url(base)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    name = f"sendit_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - report any connection failure clearly
        admin.dispose()
        skip_or_fail(f"cannot create a test database on {url.render_as_string()}: {exc}")
    test_url = url.set(database=name).render_as_string(hide_password=False)
    settings = {"sqlalchemy.url": test_url}
    engine = get_engine(settings)
    upgrade_schema(settings, engine)
    engine.dispose()
    yield test_url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _truncate_postgresql(url: str) -> None:
    engine = create_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture
def database_url(request, tmp_path) -> str:
    """A migrated, empty database for this test: SQLite by default."""
    backend = getattr(request, "param", "sqlite")
    if backend == "postgresql":
        url = request.getfixturevalue("_postgresql_database")
        _truncate_postgresql(url)
        return url
    path = tmp_path / "sendit.sqlite"
    shutil.copyfile(request.getfixturevalue("_sqlite_template"), path)
    return f"sqlite:///{path}"


@pytest.fixture
def dbengine(database_url):
    engine = get_engine({"sqlalchemy.url": database_url})
    yield engine
    engine.dispose()


@pytest.fixture
def dbsession(dbengine):
    """A plain session on the test database (commit it yourself)."""
    session = get_session_factory(dbengine)()
    yield session
    session.close()


# -- apps ------------------------------------------------------------------


@pytest.fixture
def make_settings(tmp_path, database_url):
    """Return raw ini settings on temp folders and the test database:
    ``make_settings({"sendit.worker": "external"})``."""

    def factory(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        raw = {
            "sqlalchemy.url": database_url,
            "sendit.var_dir": str(tmp_path / "var"),
            "sendit.data_dir": str(tmp_path / "data"),
            "sendit.storage_dir": str(tmp_path / "storage"),
            "sendit.lockdown.password": PASSWORD,
            "sendit.session.secret": SECRET,
            "sendit.db.auto_create": "false",
            "here": str(tmp_path),
        }
        raw.update(overrides or {})
        return raw

    return factory


@dataclass
class SenditApp:
    """A built app with what tests need beside it."""

    wsgi: Any
    settings: dict[str, Any]
    pm: Any
    _engines: list = field(default_factory=list)

    @property
    def registry(self):
        return self.wsgi.registry

    def session(self):
        """A new database session on the app's engine (commit it yourself)."""
        return self.registry["dbsession_factory"]()

    def close(self) -> None:
        engine = self.settings.get("sendit.engine")
        if engine is not None:
            engine.dispose()


@pytest.fixture
def make_app(make_settings):
    """Build an app: ``make_app(plugins=[...], entrypoints=False, settings={...})``.

    :param builtins: built-in plugin module names (default: all of them).
    :param plugins: further plugin objects to register.
    :param entrypoints: also load installed ``sendit.plugins`` entry points.
    :param settings: raw ini overrides.
    """
    apps: list[SenditApp] = []

    def factory(*, builtins=DEFAULT_PLUGINS, plugins=(), entrypoints=False,
                settings: dict[str, Any] | None = None) -> SenditApp:
        raw = make_settings(settings)
        disabled = [p for p in raw.get("sendit.plugins.disabled", "").replace(",", " ").split() if p]
        pm = get_plugin_manager(load_entrypoints=entrypoints, builtins=builtins,
                                extra=plugins, disabled=disabled)
        converted, pm = load_config(raw, here=raw["here"], pm=pm)
        wsgi = create_app(converted, pm)
        app = SenditApp(wsgi, wsgi.registry.settings, pm)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.close()


@pytest.fixture
def app(make_app) -> SenditApp:
    """The app with every built-in plugin (no third-party entry points)."""
    return make_app()


def login(testapp, password: str = PASSWORD):
    """Log a WebTest client in through the real form; returns the response."""
    form = testapp.get("/login").forms[0]
    form["password"] = password
    return form.submit(expect_errors=True)


def csrf_token(testapp) -> str:
    """The session's CSRF token, read from a rendered form."""
    page = testapp.get("/logout")
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, "no csrf_token in the page"
    return match.group(1)


@pytest.fixture
def anon_app(app):
    """A WebTest client that has not logged in."""
    from webtest import TestApp

    return TestApp(app.wsgi)


@pytest.fixture
def testapp(app):
    """A WebTest client logged in through the login form."""
    from webtest import TestApp

    client = TestApp(app.wsgi)
    response = login(client)
    assert response.status_int == 303, response.text
    return client


# -- live server and browser ------------------------------------------------


@dataclass
class LiveServer:
    url: str
    app: SenditApp
    server: Any
    thread: threading.Thread

    def stop(self) -> None:
        self.server.close()
        self.thread.join(timeout=10)


def serve(app: SenditApp) -> LiveServer:
    """Serve the app with waitress on a free loopback port, in a thread."""
    from waitress.server import create_server

    server = create_server(app.wsgi, host="127.0.0.1", port=0, threads=4,
                           clear_untrusted_proxy_headers=True)
    thread = threading.Thread(target=server.run, name="live-server", daemon=True)
    thread.start()
    return LiveServer(f"http://127.0.0.1:{server.effective_port}", app, server, thread)


@pytest.fixture
def live_server(app):
    """The app served by waitress on a free port: ``live_server.url``."""
    server = serve(app)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser():
    """A headless Debian Chromium driven by Playwright, shared by the session."""
    if not Path(CHROMIUM).exists():
        skip_or_fail(f"{CHROMIUM} not found: install Debian's chromium for the browser tests")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("playwright is not installed: pip install -e '.[test]'")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh browser tab (own cookies) with a laptop-sized viewport; the test
    fails if a page it showed broke the Content Security Policy."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    violations: list[str] = []
    tab.on("console", lambda message: violations.append(message.text)
           if "Content Security Policy" in message.text else None)
    yield tab
    context.close()
    if violations:  # every browser test also proves its pages keep to the policy
        pytest.fail("the page broke the Content Security Policy (sendit_core/headers.py):\n"
                    + "\n".join(violations), pytrace=False)


def browser_login(page, base_url: str, password: str = PASSWORD) -> None:
    """Log in through the real login page."""
    page.goto(base_url + "/login")
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def save_screenshot(page, name: str, *, full_page: bool = True) -> Path:
    """Save a PNG of the page as ``docs/screenshots/<name>.png`` (or under
    ``SENDIT_SCREENSHOT_DIR``) and return its path."""
    folder = Path(os.environ.get("SENDIT_SCREENSHOT_DIR") or
                  Path(__file__).resolve().parent.parent / "docs" / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


class TcpProxy:
    """A loopback TCP proxy to a service, which a test can cut and restore to
    play a database or broker that goes away (``proxy.cut()``: every open
    connection is reset and new ones are refused until ``proxy.restore()``).

    ``proxy.port`` is the port to connect to instead of the service's.
    """

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._closed = False
        self._connections: list = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="tcp-proxy", daemon=True).start()

    def url_for(self, url: str) -> str:
        """``url`` (SQLAlchemy or kombu style) pointed at this proxy."""
        host, port = self.target
        return url.replace(f"{host}:{port}", f"127.0.0.1:{self.port}", 1)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._open.is_set():
                self._reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                self._reset(client)
                continue
            with self._lock:
                self._connections += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src, dst) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.close()
                except OSError:
                    pass

    @staticmethod
    def _reset(sock) -> None:
        try:  # RST rather than FIN: what a crashed server looks like
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        except OSError:
            pass

    def cut(self) -> None:
        self._open.clear()
        with self._lock:
            connections, self._connections = self._connections, []
        for sock in connections:
            try:  # wakes the thread blocked in recv(); close() alone would not
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._reset(sock)

    def restore(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()
