"""sendit: a local DICOM ingest-and-browse server built from pluggy plugins.

Plugin authors import :data:`hookimpl` (and the public types) from here::

    from sendit_core import hookimpl, NavItem
"""
import pluggy

hookimpl = pluggy.HookimplMarker("sendit")

from .ingest import IngestSource, SourceStatus  # noqa: E402
from .parsing import HeaderElement, ParsedFile, ParseError  # noqa: E402
from .settings import Setting, SettingsError, load_config  # noqa: E402
from .ui import NavItem, Panel  # noqa: E402


def main(global_config, **raw_settings):
    """The ``paste.app_factory`` of ``use = egg:sendit``: :func:`sendit_core.app.main`.

    Pyramid is imported only when an app is made: every ``sendit`` command
    reads its ini file through PasteDeploy, which loads this entry point, and
    needs no web framework (importing it took ~0.2 s of every command).
    """
    from .app import main as make_app

    return make_app(global_config, **raw_settings)


def __getattr__(name: str):
    """``sendit_core.create_app``, imported on first use (it needs Pyramid)."""
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "HeaderElement", "IngestSource", "NavItem", "Panel", "ParseError", "ParsedFile",
    "Setting", "SettingsError", "SourceStatus", "create_app", "hookimpl", "load_config", "main",
]
