"""Built-in plugin: the dashboard at ``/`` (batches, totals and other plugins' panels)."""
from sendit_core import NavItem, hookimpl


@hookimpl
def sendit_pyramid_configure(config):
    config.include("sendit_dashboard.views")


@hookimpl
def sendit_nav_items(request):
    return [NavItem("Dashboard", request.route_path("home"), order=10, name="dashboard")]
