"""sendit: a local DICOM ingest-and-browse server built from pluggy plugins.

Plugin authors import :data:`hookimpl` (and the public types) from here::

    from sendit_core import hookimpl, NavItem
"""
import pluggy

hookimpl = pluggy.HookimplMarker("sendit")

from .app import create_app, load_config, main  # noqa: E402
from .ingest import IngestSource, SourceStatus  # noqa: E402
from .parsing import HeaderElement, ParsedFile, ParseError  # noqa: E402
from .settings import Setting, SettingsError  # noqa: E402
from .ui import NavItem, Panel  # noqa: E402

__all__ = [
    "HeaderElement", "IngestSource", "NavItem", "Panel", "ParseError", "ParsedFile",
    "Setting", "SettingsError", "SourceStatus", "create_app", "hookimpl", "load_config", "main",
]
