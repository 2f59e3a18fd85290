"""Security headers: on every response, pages, API, errors and assets alike."""
import types

import pytest
from webtest import TestApp

from sendit_core import hookimpl
from sendit_core.headers import CSP
from sendit_core.testing import browser_login, login

SAME_EVERYWHERE = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def assert_secure(response, cache="no-store"):
    for name, value in SAME_EVERYWHERE.items():
        assert response.headers.get(name) == value, (name, response.request.path)
    if cache:
        assert response.headers["Cache-Control"] == cache


def test_the_policy_allows_nothing_inline_and_no_framing():
    directives = dict(part.split(" ", 1) for part in CSP.split("; "))
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert "unsafe" not in CSP
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"


@pytest.mark.parametrize("path, status", [
    ("/", 200), ("/settings", 200), ("/errors", 200), ("/no/such/page", 404),
    ("/batches/999999", 404), ("/api/no-such-thing", 404),
])
def test_logged_in_pages_and_errors_carry_the_headers_and_are_not_stored(testapp, path, status):
    assert_secure(testapp.get(path, status=status))


@pytest.mark.parametrize("path", ["/login", "/", "/api/batches"])
def test_anonymous_answers_carry_them_too(anon_app, path):
    assert_secure(anon_app.get(path, expect_errors=True))


def test_static_assets_keep_their_own_caching(anon_app, testapp):
    for client in (anon_app, testapp):
        response = client.get("/static/sendit.css")
        assert_secure(response, cache=None)
        assert "max-age" in response.headers["Cache-Control"]


def test_hsts_only_over_https(make_app):
    plain = TestApp(make_app().wsgi)
    assert "Strict-Transport-Security" not in plain.get("/login").headers
    secure = TestApp(make_app(settings={"sendit.session.secure": "true"}).wsgi)
    assert secure.get("/login").headers["Strict-Transport-Security"].startswith("max-age=")


def test_the_policy_is_configurable_and_a_view_may_set_its_own(make_app):
    custom = "default-src 'self'; frame-ancestors 'none'"
    client = TestApp(make_app(settings={"sendit.security.csp": custom}).wsgi)
    assert client.get("/login").headers["Content-Security-Policy"] == custom

    @hookimpl
    def sendit_pyramid_configure(config):
        def view(request):
            request.response.headers["Content-Security-Policy"] = "default-src 'none'"
            request.response.text = "own"
            return request.response

        config.add_route("own_policy", "/own-policy")
        config.add_view(view, route_name="own_policy")

    own_policy = types.SimpleNamespace(sendit_pyramid_configure=sendit_pyramid_configure)
    client = TestApp(make_app(plugins=[own_policy]).wsgi)
    login(client)
    response = client.get("/own-policy")
    assert response.headers["Content-Security-Policy"] == "default-src 'none'"
    assert response.headers["X-Frame-Options"] == "DENY"


def test_the_session_cookie_is_httponly_samesite_and_secure_when_asked(make_app):
    for secure in ("false", "true"):
        client = TestApp(make_app(settings={"sendit.session.secure": secure}).wsgi)
        response = login(client)
        cookie = response.headers["Set-Cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie
        assert ("; secure" in cookie) == (secure == "true")


@pytest.mark.browser
def test_the_pages_keep_to_the_policy_in_a_browser(live_server, page):
    """The ``page`` fixture fails a test whose pages break the policy; walk them."""
    browser_login(page, live_server.url)
    for path in ("/", "/errors", "/settings", "/no/such/page"):
        page.goto(live_server.url + path)
        page.wait_for_load_state("networkidle")
