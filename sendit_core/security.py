"""The lockdown: one password from the ini file protects every page and API call.

Browsers log in through ``/login`` and keep a signed session cookie; API
clients send HTTP Basic with the same password (any user name). Failed
attempts are throttled per client, comparisons are constant-time, and every
state-changing form needs the session's CSRF token.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import threading
import time
from collections import deque
from typing import Any

from pyramid.security import Allowed, Denied
from pyramid.csrf import new_csrf_token
from pyramid.session import SignedCookieSessionFactory

log = logging.getLogger(__name__)

#: The only principal: whoever knows the lockdown password.
ADMIN = "admin"
#: The permission every protected view requires (the app's default permission).
VIEW = "view"
SESSION_KEY = "sendit.auth"


#: peers whose X-Forwarded-For is believed: a reverse proxy on this machine
LOCAL_PROXIES = frozenset({"127.0.0.1", "::1"})


def client_address(request) -> str:
    """Who is asking, as the login throttle counts clients.

    The peer's address; but when the peer is a proxy on this machine, the
    address that proxy added last to ``X-Forwarded-For`` (the one it saw:
    entries before it are whatever the client claimed, so never trusted).
    """
    peer = request.remote_addr or "unknown"
    forwarded = request.headers.get("X-Forwarded-For", "")
    if peer in LOCAL_PROXIES and forwarded.strip():
        return forwarded.rpartition(",")[2].strip() or peer
    return peer


def is_api_request(request) -> bool:
    """True for requests under ``/api/`` (JSON errors, HTTP Basic)."""
    return request.path_info.startswith("/api/")


class LoginThrottle:
    """Counts failed logins per client; after too many, the client waits.

    A client with ``max_failures`` failures within ``window`` seconds is locked
    out until ``window`` seconds after its latest failure. Kept in memory, per
    web process.
    """

    def __init__(self, max_failures: int, window: int, clock=time.monotonic):
        self.max_failures = max_failures
        self.window = window
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        failures = self._failures.get(client, deque())
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        return failures

    def retry_after(self, client: str) -> int:
        """Seconds the client must wait before trying again (0: it may try now)."""
        with self._lock:
            now = self.clock()
            failures = self._recent(client, now)
            if len(failures) < self.max_failures:
                return 0
            return max(1, int(failures[-1] + self.window - now + 0.999))

    def failed(self, client: str) -> None:
        with self._lock:
            now = self.clock()
            failures = self._recent(client, now)
            failures.append(now)
            self._failures[client] = failures
            if len(self._failures) > 10_000:  # forget clients that went quiet
                for key in [k for k, v in self._failures.items() if not self._recent(k, now)]:
                    del self._failures[key]

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)


class Lockdown:
    """The password check, shared by the login form and HTTP Basic."""

    def __init__(self, settings: dict[str, Any]):
        self.enabled: bool = settings["sendit.lockdown.enabled"]
        self._password = settings["sendit.lockdown.password"].encode()
        secret = settings["sendit.session.secret"].encode()
        # Stored in the session: changing the password ends every session.
        self.fingerprint = hmac.new(secret, self._password, hashlib.sha256).hexdigest()[:32]
        self.throttle = LoginThrottle(
            settings["sendit.lockdown.max_failures"], settings["sendit.lockdown.failure_window"]
        )

    def check_password(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode(), self._password)

    def attempt(self, request, candidate: str) -> bool | None:
        """Check a password for this client: True, False, or None when throttled."""
        client = client_address(request)
        if self.throttle.retry_after(client):
            return None
        if self.check_password(candidate):
            self.throttle.succeeded(client)
            return True
        self.throttle.failed(client)
        log.warning("failed login from %s", client)
        return False


def basic_password(request) -> str | None:
    """The password of an HTTP Basic ``Authorization`` header, if any."""
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[2]


class LockdownSecurityPolicy:
    """Pyramid security policy: the session or HTTP Basic identify the admin."""

    def __init__(self, lockdown: Lockdown):
        self.lockdown = lockdown

    def identity(self, request) -> str | None:
        return request.sendit_identity

    def authenticated_userid(self, request) -> str | None:
        return self.identity(request)

    def permits(self, request, context, permission):
        if self.identity(request) == ADMIN:
            return Allowed("logged in")
        return Denied("the lockdown password is needed")

    def remember(self, request, userid, **kw):
        request.session.invalidate()  # a new session on login: no fixation
        request.session[SESSION_KEY] = self.lockdown.fingerprint
        new_csrf_token(request)
        return []

    def forget(self, request, **kw):
        request.session.invalidate()
        return []


def _identify(request) -> str | None:
    """Work out (once per request) who is asking; cached as ``request.sendit_identity``."""
    lockdown: Lockdown = request.registry["sendit.lockdown"]
    if not lockdown.enabled:
        return ADMIN
    if hmac.compare_digest(str(request.session.get(SESSION_KEY, "")), lockdown.fingerprint):
        return ADMIN
    password = basic_password(request)
    if password is not None:
        result = lockdown.attempt(request, password)
        if result:
            request.environ["sendit.basic_auth"] = True
            return ADMIN
        request.environ["sendit.auth_failure"] = "throttled" if result is None else "wrong"
    return None


def _csrf_applies(request) -> bool:
    """CSRF tokens protect cookie sessions; same-site HTTP Basic API calls need none."""
    if request.environ.get("sendit.basic_auth") and is_api_request(request):
        return request.headers.get("Sec-Fetch-Site", "same-origin") == "cross-site"
    return True


def includeme(config) -> None:
    settings = config.get_settings()
    lockdown = Lockdown(settings)
    config.registry["sendit.lockdown"] = lockdown
    config.set_session_factory(
        SignedCookieSessionFactory(
            settings["sendit.session.secret"],
            cookie_name="sendit_session",
            httponly=True,
            samesite="Lax",
            secure=settings["sendit.session.secure"],
            timeout=settings["sendit.session.timeout"],
            reissue_time=min(600, settings["sendit.session.timeout"] // 10),
        )
    )
    config.add_request_method(_identify, "sendit_identity", reify=True)
    config.set_security_policy(LockdownSecurityPolicy(lockdown))
    config.set_default_permission(VIEW)
    config.set_default_csrf_options(require_csrf=True, callback=_csrf_applies)
    if not lockdown.enabled:
        log.warning(
            "!!! THE LOCKDOWN IS DISABLED (sendit.lockdown.enabled = false): anyone who "
            "can reach this server can read and change every image !!!"
        )
