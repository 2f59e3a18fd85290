"""Built-in plugin: the dashboard, batch, errors, image and settings pages."""
from sendit_core import NavItem, Setting, hookimpl
from sendit_core.settings import to_int


def _seconds(value, ctx) -> int:
    seconds = to_int(value, ctx)
    if seconds < 0:
        raise ValueError("expected a number of seconds, 0 or more (0 turns refreshing off)")
    return seconds


@hookimpl
def sendit_settings():
    return [
        Setting("sendit.dashboard.refresh_seconds", "10", _seconds,
                "How often the dashboard, a batch being imported, the errors and the "
                "settings pages fetch fresh data in place (0: never)."),
    ]


@hookimpl
def sendit_pyramid_configure(config):
    config.include("sendit_dashboard.views")


@hookimpl
def sendit_nav_items(request):
    return [
        NavItem("Dashboard", request.route_path("home"), order=10, name="dashboard"),
        NavItem("Errors", request.route_path("errors"), order=20, name="errors"),
        NavItem("Settings", request.route_path("settings"), order=90, name="settings"),
    ]
