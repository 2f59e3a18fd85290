"""The core's own routes; plugins add theirs in ``sendit_pyramid_configure``."""
from pyramid.security import NO_PERMISSION_REQUIRED


def includeme(config) -> None:
    # The core's CSS and JS style the login form, so they are public.
    config.add_static_view("static", "sendit_core:static", cache_max_age=3600,
                           permission=NO_PERMISSION_REQUIRED)
    config.add_route("login", "/login")
    config.add_route("logout", "/logout")
    config.add_route("home", "/")
