"""Wiring: Cornice, the services, the OpenAPI document and the Swagger page.

- Cornice is included with its own exception views off (``handle_exceptions``):
  the core's error views already answer JSON under ``/api/``.
- Cornice answers a wrong method with a fallback view that needs no
  permission; :func:`guard` makes every ``sendit_api`` route refuse strangers
  first (a JSON 401), so nothing under ``/api/`` answers without the password.
- ``/api/openapi.json`` is built once per app and path prefix (:mod:`.openapi`).
- ``/api`` is the Swagger UI page: the UI's files come from the
  ``swagger-ui-bundle`` package (served by the app, nothing from a CDN), and
  ``static/explorer.js`` starts it, sending the session's CSRF token with the
  calls that change something.
"""
from __future__ import annotations

import json
import threading

from pyramid.events import ContextFound
from pyramid.httpexceptions import HTTPForbidden, HTTPMethodNotAllowed, HTTPSeeOther
from pyramid.response import Response
from pyramid.security import NO_PERMISSION_REQUIRED
from swagger_ui_bundle import swagger_ui_path

from sendit_core.security import ADMIN

from . import MAX_PAGE_SIZE, openapi
from .params import ApiError, error_response

TEMPLATES = "sendit_api:templates/"


def guard(event: ContextFound) -> None:
    """Strangers get the login's 401 on every API route, whatever the method."""
    request = event.request
    route = request.matched_route
    if route is not None and route.name.startswith("sendit_api.") and request.sendit_identity != ADMIN:
        raise HTTPForbidden()


def api_error(exc: ApiError, request) -> Response:
    return error_response(request, exc.status, exc.message, exc.errors)


def method_not_allowed(exc, request) -> Response:
    """Cornice's fallback refused the method: say which ones the resource takes."""
    allowed = ", ".join(m for m in (exc.allow or ()) if m != "HEAD") or "none"
    response = error_response(request, 405, f"{request.method} is not allowed on {request.path}; "
                                            f"this resource takes: {allowed}.")
    response.allow = exc.allow
    return response


def openapi_document(request) -> Response:
    """The OpenAPI 3.0 document (JSON), built once per app and path prefix."""
    cache: dict = request.registry["sendit_api.openapi"]
    key = request.script_name
    body = cache.get(key)
    if body is None:
        with request.registry["sendit_api.openapi_lock"]:
            document = openapi.build(request.registry, request.registry.settings, request.script_name)
            body = cache[key] = json.dumps(document, indent=1).encode()
    return Response(body=body, content_type="application/json", charset="utf-8")


def explorer(request) -> dict:
    """The Swagger UI page."""
    return {"spec_url": request.route_url("sendit_api.openapi"), "swagger_ui": str(swagger_ui_path),
            "max_page_size": request.registry.settings[MAX_PAGE_SIZE], "active_nav": "api"}


def explorer_slash(request):
    return HTTPSeeOther(request.route_url("sendit_api.explorer"))


def includeme(config) -> None:
    settings = config.get_settings()
    # the core's exception views answer JSON under /api/: Cornice must not replace them
    settings.setdefault("handle_exceptions", False)
    config.include("cornice")
    config.include("sendit_core.uploads")  # streamed uploads stay out of pyramid_retry's copies
    config.include(".paging")
    config.registry["sendit_api.openapi"] = {}
    config.registry["sendit_api.openapi_lock"] = threading.Lock()
    from .resources import SERVICES

    for service in SERVICES:
        config.add_cornice_service(service)
    config.add_subscriber(guard, ContextFound)
    config.add_view(api_error, context=ApiError, permission=NO_PERMISSION_REQUIRED)
    config.add_view(method_not_allowed, context=HTTPMethodNotAllowed, path_info=r"^/api/",
                    permission=NO_PERMISSION_REQUIRED)
    config.add_route("sendit_api.openapi", "/api/openapi.json")
    config.add_view(openapi_document, route_name="sendit_api.openapi", request_method="GET")
    config.add_route("sendit_api.explorer", "/api")
    config.add_route("sendit_api.explorer_slash", "/api/")
    config.add_view(explorer, route_name="sendit_api.explorer", request_method="GET",
                    renderer=TEMPLATES + "explorer.jinja2")
    config.add_view(explorer_slash, route_name="sendit_api.explorer_slash", request_method="GET")
    config.add_static_view("static-api", "sendit_api:static", cache_max_age=3600, permission="view")
    config.add_static_view("static-swagger-ui", str(swagger_ui_path), cache_max_age=3600,
                           permission="view")
