"""The lockdown: every route needs the password, except the login form and its static."""
import base64
import re

import pytest
from pyramid.interfaces import IRoutesMapper
from webtest import TestApp

from sendit_core.testing import PASSWORD, csrf_token, login

PUBLIC_ROUTES = {"login", "logout", "__static/"}


def fill(pattern: str) -> str:
    """A concrete path for a route pattern: every placeholder becomes 1."""
    path = re.sub(r"\{[^}]+\}", "1", pattern)
    path = path.replace("*subpath", "sendit.css").replace("*traverse", "")
    return path if path.startswith("/") else "/" + path


def routes_of(app):
    return app.registry.getUtility(IRoutesMapper).get_routes()


@pytest.fixture
def full_app(make_app):
    """Every built-in plugin and every installed third-party plugin."""
    return make_app(entrypoints=True)


def test_every_route_refuses_anonymous_requests(full_app):
    client = TestApp(full_app.wsgi)
    routes = routes_of(full_app)
    assert any(r.name == "example" for r in routes), "the third-party plugin's route is walked too"
    checked = 0
    for route in routes:
        if route.name in PUBLIC_ROUTES:
            continue
        path = fill(route.pattern)
        for method in ("GET", "POST"):
            response = client.request(path, method=method, expect_errors=True)
            if path.startswith("/api/"):
                assert response.status_int == 401, (method, path, response.status)
                assert response.json["error"] == "Unauthorized"
                assert response.headers["WWW-Authenticate"].startswith("Basic")
            else:
                assert response.status_int == 303, (method, path, response.status)
                assert "/login?next=" in response.location
            checked += 1
    assert checked >= 8


def test_unknown_paths_reveal_nothing_to_strangers(anon_app):
    assert "/login" in anon_app.get("/no/such/page", status=303).location
    assert anon_app.get("/api/no/such", status=401).json["status"] == 401


def test_the_login_form_and_its_stylesheet_are_public(anon_app):
    page = anon_app.get("/login")
    assert 'name="password"' in page
    css = re.search(r'href="([^"]+sendit\.css)"', page.text).group(1)
    assert anon_app.get(css).content_type == "text/css"


def test_login_with_the_right_password_reaches_the_page_asked_for(anon_app):
    start = anon_app.get("/settings", status=303)
    form = anon_app.get(start.location).forms[0]
    form["password"] = PASSWORD
    response = form.submit(status=303)
    assert response.location.endswith("/settings")
    assert response.follow().status_int == 200
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie


def test_wrong_password_fails(anon_app):
    response = login(anon_app, "wrong")
    assert response.status_int == 401
    assert "That password is not right." in response
    anon_app.get("/", status=303)


def test_repeated_failures_are_throttled_even_for_the_right_password(anon_app):
    for _ in range(5):
        assert login(anon_app, "wrong").status_int == 401
    response = login(anon_app, PASSWORD)
    assert response.status_int == 429
    assert "Too many failed attempts" in response
    assert int(response.headers["Retry-After"]) > 0
    anon_app.get("/", status=303)


def test_throttling_is_per_client(anon_app, app):
    for _ in range(5):
        login(anon_app, "wrong")
    other = TestApp(app.wsgi, extra_environ={"REMOTE_ADDR": "10.0.0.2"})
    assert login(other).status_int == 303


def test_behind_a_local_proxy_the_client_is_the_address_the_proxy_added(app):
    """nginx on this machine appends the address it saw to X-Forwarded-For: that
    one is the client. What the client wrote there itself is never believed, and
    from a peer that is not a local proxy the header is ignored altogether."""
    def through(peer, forwarded):
        return TestApp(app.wsgi, extra_environ={"REMOTE_ADDR": peer,
                                                "HTTP_X_FORWARDED_FOR": forwarded})

    for _ in range(5):  # the attacker claims a new address in every request
        assert login(through("127.0.0.1", f"10.9.9.{_}, 203.0.113.7"), "wrong").status_int == 401
    assert login(through("127.0.0.1", "10.9.9.99, 203.0.113.7")).status_int == 429
    assert login(through("127.0.0.1", "203.0.113.8")).status_int == 303  # someone else
    for _ in range(5):  # a remote peer's own header: its address is what counts
        login(through("198.51.100.1", f"10.8.8.{_}"), "wrong")
    assert login(through("198.51.100.1", "10.8.8.99")).status_int == 429
    assert login(through("198.51.100.2", "198.51.100.1")).status_int == 303


def test_the_throttle_forgets_after_its_window():
    from sendit_core.security import LoginThrottle

    now = [1000.0]
    throttle = LoginThrottle(max_failures=2, window=60, clock=lambda: now[0])
    throttle.failed("c")
    throttle.failed("c")
    assert 0 < throttle.retry_after("c") <= 60
    now[0] += 61
    assert throttle.retry_after("c") == 0


def test_logout_ends_the_session(testapp):
    testapp.get("/", status=200)
    testapp.post("/logout", {"csrf_token": csrf_token(testapp)}, status=303)
    testapp.get("/", status=303)


def test_a_form_post_without_the_csrf_token_is_refused(testapp):
    response = testapp.post("/logout", {}, status=400)
    assert "Bad CSRF" in response.text or "CSRF" in response.text
    testapp.get("/", status=200)  # still logged in: nothing happened


def test_login_itself_needs_the_csrf_token(anon_app):
    anon_app.post("/login", {"password": PASSWORD}, status=400)


def test_next_never_leaves_the_site(anon_app):
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        form = anon_app.get("/login", {"next": target}).forms[0]
        form["password"] = PASSWORD
        assert form.submit(status=303).location == "http://localhost/"
        anon_app.reset()


def basic(password, user="anyone"):
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_api_clients_use_http_basic_with_the_lockdown_password(anon_app):
    response = anon_app.get("/api/nothing-here", headers=basic(PASSWORD), status=404)
    assert response.json["error"] == "Not Found"
    response = anon_app.get("/api/nothing-here", headers=basic("wrong"), status=401)
    assert response.content_type == "application/json"


def test_basic_failures_are_throttled_too(anon_app):
    for _ in range(5):
        anon_app.get("/api/x", headers=basic("wrong"), status=401)
    assert anon_app.get("/api/x", headers=basic(PASSWORD), status=429).json["status"] == 429


def test_malformed_authorization_headers_are_just_unauthenticated(anon_app):
    for header in ("Basic !!!", "Basic", "Bearer abc", "Basic " + base64.b64encode(b"\xff\xfe").decode()):
        anon_app.get("/api/x", headers={"Authorization": header}, status=401)


def test_changing_the_password_ends_existing_sessions(make_app):
    first = make_app()
    client = TestApp(first.wsgi)
    login(client)
    cookie = client.cookies["sendit_session"]
    second = make_app(settings={"sendit.lockdown.password": "a-new-password"})
    other = TestApp(second.wsgi)
    other.set_cookie("sendit_session", cookie)
    other.get("/", status=303)


def test_secure_cookies_when_configured(make_app):
    client = TestApp(make_app(settings={"sendit.session.secure": "true"}).wsgi)
    response = login(client)
    assert "secure" in response.headers["Set-Cookie"].lower()


def test_disabling_the_lockdown_opens_everything_and_warns(make_app, caplog):
    app = make_app(settings={"sendit.lockdown.enabled": "false"})
    assert "THE LOCKDOWN IS DISABLED" in caplog.text
    TestApp(app.wsgi).get("/", status=200)
