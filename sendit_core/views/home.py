"""The fallback home page, used only when no plugin (the dashboard) serves ``/``."""
from pyramid.view import view_config


@view_config(route_name="home", renderer="sendit_core:templates/home.jinja2")
def home(request):
    return {}
