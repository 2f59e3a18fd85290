"""Security headers on every response (a Pyramid tween).

Every response gets a Content Security Policy that allows only the app's own
scripts, styles, images and connections (no inline scripts, no inline style
attributes, no framing), ``X-Content-Type-Options: nosniff``, a same-origin
referrer policy, and, over HTTPS (``sendit.session.secure``), HSTS.
Responses other than static assets are not stored by browsers or proxies
(``Cache-Control: no-store``): pages and API answers carry patient data.

A view that needs another policy (a page embedding a third-party UI that
cannot do without something) sets its own ``Content-Security-Policy`` header
on its response; the tween leaves a header that is already there alone.
"""
from __future__ import annotations

from typing import Any

#: The default policy: everything from the app itself, nothing inline, no frames.
CSP = "; ".join((
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data: blob:",
    "font-src 'self'",
    "connect-src 'self'",
    "worker-src 'self' blob:",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))

HSTS = "max-age=31536000"


def security_headers_tween_factory(handler, registry):
    settings: dict[str, Any] = registry.settings
    fixed = {
        "Content-Security-Policy": settings.get("sendit.security.csp") or CSP,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "same-origin",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    }
    if settings.get("sendit.session.secure"):
        fixed["Strict-Transport-Security"] = HSTS
    fixed["Cache-Control"] = "no-store"
    added = [(name.lower(), (name, value)) for name, value in fixed.items()]

    def tween(request):
        response = handler(request)
        # added straight to the header list: webob's mapping scans the whole list
        # for each header it sets (10 us a response for these eight, against 1)
        headerlist = response.headerlist
        present = {name.lower() for name, _ in headerlist}
        headerlist.extend(header for name, header in added if name not in present)
        return response

    return tween


def includeme(config) -> None:
    config.add_tween("sendit_core.headers.security_headers_tween_factory")
