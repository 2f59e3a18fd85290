"""Built-in plugin: the dashboard, batch, image and settings pages."""
from sendit_core import NavItem, hookimpl


@hookimpl
def sendit_pyramid_configure(config):
    config.include("sendit_dashboard.views")


@hookimpl
def sendit_nav_items(request):
    return [
        NavItem("Dashboard", request.route_path("home"), order=10, name="dashboard"),
        NavItem("Settings", request.route_path("settings"), order=90, name="settings"),
    ]
