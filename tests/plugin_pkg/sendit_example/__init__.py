"""sendit_example: a third-party plugin, installed from tests/plugin_pkg.

It uses only the public API (``sendit_core.hookimpl`` and the types exported
by ``sendit_core``): a view at ``/example``, a navigation entry, a parser for
``.example`` text files, a setting, a dashboard panel and a command.
"""
from __future__ import annotations

import time
from pathlib import Path

from markupsafe import Markup

from sendit_core.settings import to_int

from sendit_core import (
    HeaderElement, IngestSource, NavItem, Panel, ParsedFile, ParseError, Setting, SourceStatus, hookimpl,
)

MAGIC = b"SENDIT-EXAMPLE\n"


@hookimpl
def sendit_settings():
    return [
        Setting("sendit.example.greeting", "Hello from a plugin", help="What /example says."),
        Setting("sendit.example.delay_ms", "0", to_int, help="Parse slowly (tests kill workers mid-batch)."),
    ]


@hookimpl
def sendit_pyramid_configure(config):
    config.include("sendit_example.views")


@hookimpl
def sendit_nav_items(request):
    return [NavItem("Example", request.route_path("example"), order=900, name="example")]


@hookimpl
def sendit_dashboard_panels(request):
    greeting = request.registry.settings["sendit.example.greeting"]
    return [Panel("example", Markup("<p>{}</p>").format(greeting), title="Example panel", order=900)]


@hookimpl
def sendit_parse_file(path: Path, settings):
    """Accept files starting with MAGIC, followed by ``key=value`` lines."""
    with open(path, "rb") as handle:
        if handle.read(len(MAGIC)) != MAGIC:
            return None
        body = handle.read().decode("utf-8", "replace")
    if settings.get("sendit.example.delay_ms"):
        time.sleep(settings["sendit.example.delay_ms"] / 1000)
    fields = dict(line.split("=", 1) for line in body.splitlines() if "=" in line)
    if "uid" not in fields:
        raise ParseError("example file without a uid= line")
    elements = [HeaderElement(f"EXAMPLE{i:02d}", key, "LO", value)
                for i, (key, value) in enumerate(sorted(fields.items()))]
    return ParsedFile(sop_instance_uid=fields["uid"], modality="OT", elements=elements,
                      parser="sendit_example")


@hookimpl
def sendit_add_commands(subparsers):
    parser = subparsers.add_parser("example-hello", help="say hello (example plugin)")
    parser.add_argument("ini")
    parser.set_defaults(func=_hello)


def _hello(args) -> int:
    from sendit_core.cli import read_ini

    settings, _pm = read_ini(args.ini, setup_logging=False)
    print(settings["sendit.example.greeting"])
    return 0


#: Events received, for the tests: (hook name, object id)
EVENTS: list[tuple[str, int]] = []


@hookimpl
def sendit_image_imported(image):
    EVENTS.append(("image_imported", image.id))


@hookimpl
def sendit_batch_finished(batch):
    EVENTS.append(("batch_finished", batch.id))


@hookimpl
def sendit_batch_deleted(batch_id):
    EVENTS.append(("batch_deleted", batch_id))


class ExampleSource(IngestSource):
    """A daemon-like source whose state lives in a file, to show start/stop/status."""

    name = "example"
    description = "An example daemon that does nothing."
    daemon = True

    def _flag(self, settings) -> Path:
        return Path(settings["sendit.var_dir"]) / "example.running"

    def start(self, settings):
        self._flag(settings).write_text("on")

    def stop(self, settings):
        flag = self._flag(settings)
        if not flag.exists():
            raise RuntimeError("the example daemon is not running")
        flag.unlink()

    def status(self, settings):
        active = self._flag(settings).exists()
        return SourceStatus(active, "example daemon " + ("running" if active else "stopped"))


@hookimpl
def sendit_ingest_sources():
    return [ExampleSource()]


@hookimpl
def sendit_batch_panels(batch):
    return [Panel("example-batch", Markup("<p>Example batch panel for {}</p>").format(batch.name))]


@hookimpl
def sendit_image_panels(image):
    return [Panel("example-image", Markup("<p>Example image panel for {}</p>").format(image.sop_instance_uid))]


@hookimpl
def sendit_settings_panels():
    return [Panel("example-settings", Markup("<p>Example settings panel</p>"), title="Example")]
