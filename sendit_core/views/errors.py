"""Error pages in the product's look, and JSON errors under /api/."""
from __future__ import annotations

import logging

from pyramid.exceptions import BadCSRFOrigin, BadCSRFToken
from pyramid.httpexceptions import HTTPError, HTTPSeeOther, HTTPUnauthorized
from pyramid.renderers import render_to_response
from pyramid.view import exception_view_config, forbidden_view_config, notfound_view_config

from ..security import ADMIN, is_api_request

log = logging.getLogger(__name__)


def json_error(request, status: int, title: str, message: str, **extra):
    response = request.response
    response.status = status
    response.content_type = "application/json"
    response.json_body = {"status": status, "error": title, "message": message, **extra}
    return response


def error_page(request, status: int, title: str, message: str):
    response = render_to_response(
        "sendit_core:templates/error.jinja2",
        {"status": status, "title": title, "message": message},
        request=request,
    )
    response.status = status
    return response


def login_required(request):
    """Anonymous: HTML goes to the login form, the API gets a JSON 401."""
    if is_api_request(request):
        if request.environ.get("sendit.auth_failure") == "throttled":
            return json_error(request, 429, "Too Many Requests",
                              "Too many failed attempts; wait and try again.")
        response = json_error(
            request, 401, "Unauthorized",
            "Authentication required: send HTTP Basic credentials with the lockdown "
            "password (any user name), or log in through /login.",
        )
        response.headers["WWW-Authenticate"] = 'Basic realm="sendit"'
        return response
    login = request.route_url("login", _query={"next": request.path_qs})
    return HTTPSeeOther(login)


@forbidden_view_config()
def forbidden(exc, request):
    if request.sendit_identity != ADMIN:
        return login_required(request)
    reason = "The request was refused (a missing or expired form token, perhaps: reload and try again)."
    if is_api_request(request):
        return json_error(request, 403, "Forbidden", reason)
    return error_page(request, 403, "Forbidden", reason)


@notfound_view_config()
def notfound(exc, request):
    if request.sendit_identity != ADMIN:  # reveal nothing to strangers
        return login_required(request)
    detail = getattr(exc, "detail", None)
    message = f"There is nothing at {request.path}."
    if isinstance(detail, str) and detail not in (exc.explanation, request.path, request.path_info):
        message = detail  # a view's own explanation ("No batch 12.")
    if is_api_request(request):
        return json_error(request, 404, "Not Found", str(message))
    return error_page(request, 404, "Not found", str(message))


@exception_view_config(HTTPError)
def http_error(exc, request):
    if isinstance(exc, HTTPUnauthorized):
        return login_required(request)
    message = exc.detail or exc.explanation
    if isinstance(exc, (BadCSRFToken, BadCSRFOrigin)):
        message = ("The form's security token (CSRF) is missing or has expired, so nothing "
                   "was changed. Reload the page and try again.")
    if is_api_request(request):
        response = json_error(request, exc.code, exc.title, str(message))
    else:
        response = error_page(request, exc.code, exc.title, str(message))
    for header in ("Retry-After", "Allow"):
        if header in exc.headers:
            response.headers[header] = exc.headers[header]
    return response


@exception_view_config(Exception)
def server_error(exc, request):
    log.exception("unexpected error on %s %s", request.method, request.path)
    message = "Something went wrong on the server; the details are in its log."
    if is_api_request(request):
        return json_error(request, 500, "Internal Server Error", message)
    return error_page(request, 500, "Server error", message)
