"""Login and logout."""
from __future__ import annotations

from urllib.parse import urlsplit

from pyramid.httpexceptions import HTTPSeeOther
from pyramid.security import NO_PERMISSION_REQUIRED, forget, remember
from pyramid.view import view_config

from ..security import ADMIN, client_address


def safe_next(request, target: str | None) -> str:
    """Only local paths are followed after login (no open redirect)."""
    if target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and target.startswith("/") \
                and not target.startswith("//") and "\\" not in target:
            return target
    return request.route_path("home")


@view_config(route_name="login", request_method="GET", renderer="sendit_core:templates/login.jinja2",
             permission=NO_PERMISSION_REQUIRED)
def login_form(request):
    if request.sendit_identity == ADMIN:
        return HTTPSeeOther(safe_next(request, request.params.get("next")))
    return {"next": request.params.get("next", ""), "error": None}


@view_config(route_name="login", request_method="POST", renderer="sendit_core:templates/login.jinja2",
             permission=NO_PERMISSION_REQUIRED)
def login(request):
    lockdown = request.registry["sendit.lockdown"]
    next_url = request.POST.get("next", "")
    result = lockdown.attempt(request, request.POST.get("password", ""))
    if result:
        headers = remember(request, ADMIN)
        request.session.flash("You are logged in.", "success")
        return HTTPSeeOther(safe_next(request, next_url), headers=headers)
    if result is None:
        wait = lockdown.throttle.retry_after(client_address(request))
        request.response.status = 429
        request.response.headers["Retry-After"] = str(wait)
        error = (f"Too many failed attempts from your address. "
                 f"Try again in {max(1, round(wait / 60))} minute(s).")
    else:
        request.response.status = 401
        error = "That password is not right."
    return {"next": next_url, "error": error}


@view_config(route_name="logout", request_method="POST", permission=NO_PERMISSION_REQUIRED)
def logout(request):
    headers = forget(request)
    return HTTPSeeOther(request.route_path("login"), headers=headers)


@view_config(route_name="logout", request_method="GET", renderer="sendit_core:templates/logout.jinja2",
             permission=NO_PERMISSION_REQUIRED)
def logout_form(request):
    return {}
