"""Security review, as tests: no internals in answers, CSRF on every state
change, static files only from package folders, secrets never shown or logged.
(The lockdown, throttling and headers have their own files: test_lockdown.py,
test_security_headers.py.)"""
import logging
import re
import types

import pytest
from pyramid.interfaces import IRoutesMapper
from sqlalchemy import text
from webtest import TestApp

from sendit_core import hookimpl
from sendit_core.models import Batch, Image
from sendit_core.testing import PASSWORD, login

SECRET = "a-session-secret-that-must-never-show-" + "x" * 10


def broken_plugin():
    @hookimpl
    def sendit_pyramid_configure(config):
        def crash(request):  # a real database error, with its SQL in the message
            request.dbsession.execute(text("SELECT secret_column FROM no_such_table"))

        config.add_route("crash_page", "/crash")
        config.add_view(crash, route_name="crash_page")
        config.add_route("crash_api", "/api/crash")
        config.add_view(crash, route_name="crash_api")

    return types.SimpleNamespace(sendit_pyramid_configure=sendit_pyramid_configure)


@pytest.mark.parametrize("path", ["/crash", "/api/crash"])
def test_a_crash_shows_no_traceback_sql_or_exception_text(make_app, path, caplog):
    client = TestApp(make_app(plugins=[broken_plugin()]).wsgi)
    login(client)
    with caplog.at_level(logging.ERROR):
        response = client.get(path, status=500)
    for leak in ("Traceback", "no_such_table", "secret_column", "SELECT", "sqlalchemy", "File \""):
        assert leak not in response.text, leak
    if path.startswith("/api/"):
        assert response.content_type == "application/json" and response.json["status"] == 500
    else:
        assert response.content_type == "text/html" and "the details are in its log" in response.text
    assert "no_such_table" in caplog.text, "the details go to the server log"


def state_changing_views(app):
    """(route name, method, path) of every view that accepts a state-changing method."""
    introspector = app.registry.introspector
    found = set()
    for intr in introspector.get_category("views"):
        view = intr["introspectable"]
        route_name = view["route_name"]
        methods = view["request_methods"]
        if not route_name or route_name in ("login", "logout") or route_name.startswith("__"):
            continue  # static views answer GET and HEAD only
        if methods is None:
            methods = ("POST", "PUT", "PATCH", "DELETE")
        elif isinstance(methods, str):
            methods = (methods,)
        for method in methods:
            if method in ("POST", "PUT", "PATCH", "DELETE"):
                found.add((route_name, method))
    routes = {r.name: r for r in app.registry.getUtility(IRoutesMapper).get_routes()}
    return sorted((name, method, re.sub(r"\{[^}]+\}", "1", routes[name].pattern))
                  for name, method in found if name in routes)


def test_every_state_changing_view_needs_the_csrf_token_in_a_browser_session(make_app):
    app = make_app(entrypoints=True)
    with app.session() as db:  # so that /batches/1 and /images/1 exist: CSRF, not 404
        batch = Batch(name="b1", source="test")
        db.add(batch)
        db.flush()
        db.add(Image(batch_id=batch.id, sop_instance_uid="1.2.3", stored_path="x/1.dcm", size=1))
        db.commit()
    client = TestApp(app.wsgi)
    login(client)
    views = state_changing_views(app)
    assert any(name == "batch_delete" for name, _, _ in views), views
    for name, method, path in views:
        response = client.request(path, method=method, expect_errors=True,
                                  content_type="multipart/form-data; boundary=x", body=b"--x--\r\n")
        if response.status_int == 405:  # the method is not served there at all
            continue
        assert response.status_int in (400, 403), (name, method, path, response.status)
        assert "CSRF" in response.text or "csrf" in response.text, (name, response.text[:300])


def test_api_basic_auth_from_another_site_needs_the_token_too(anon_app):
    import base64

    auth = "Basic " + base64.b64encode(f"x:{PASSWORD}".encode()).decode()
    cross = anon_app.request("/api/batches", method="POST", expect_errors=True,
                             content_type="multipart/form-data; boundary=x", body=b"--x--\r\n",
                             headers={"Authorization": auth, "Sec-Fetch-Site": "cross-site"})
    assert cross.status_int in (400, 403), cross.status


@pytest.mark.parametrize("path", [
    "/static/../development.ini", "/static/%2e%2e/%2e%2e/setup.cfg", "/static/..%2f..%2fsetup.cfg",
    "/static//etc/passwd", "/static/../__init__.py", "/static/../models/__init__.py",
])
def test_static_files_come_only_from_the_package_folders(testapp, path):
    response = testapp.get(path, expect_errors=True)
    assert response.status_int == 404, (path, response.status)
    assert "sqlalchemy" not in response.text and "root:" not in response.text


def test_secrets_are_never_logged_or_shown(make_app, caplog, capsys):
    with caplog.at_level(logging.DEBUG):
        app = make_app(settings={"sendit.session.secret": SECRET})
        client = TestApp(app.wsgi)
        form = client.get("/login").forms[0]
        form["password"] = "wrong " + PASSWORD
        form.submit(expect_errors=True)
        login(client)
        pages = [client.get(p).text for p in ("/", "/settings", "/settings?partial=1")]
    shown = "\n".join(pages) + caplog.text + "".join(capsys.readouterr())
    assert PASSWORD not in shown and SECRET not in shown


def test_command_errors_hide_the_database_password(tmp_path, capsys):
    from sendit_core.cli import main
    from sendit_core.testing import write_ini

    ini = write_ini(tmp_path / "app.ini", {
        "sqlalchemy.url": "postgresql+psycopg://sendit:s3cret-pw@127.0.0.1:1/none?connect_timeout=2",
        "sendit.var_dir": str(tmp_path / "var"), "sendit.lockdown.password": "x"})
    assert main(["initdb", str(ini)]) == 1
    err = capsys.readouterr().err
    assert "cannot reach" in err and "s3cret-pw" not in err
