"""Ingest sources: what the ``sendit_ingest_sources`` hook returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class SourceStatus:
    """The state of a daemon-like source, as the dashboard and settings show it.

    :param active: True when the daemon is running.
    :param summary: one line for people ("watching /data since 10:02").
    :param since: when it started, if known.
    :param details: further key/value facts (pid, folder, log files, ...).
    """

    active: bool
    summary: str
    since: datetime | None = None
    details: dict[str, Any] = field(default_factory=dict)


class IngestSource:
    """Base class of an ingest source; passive sources only set the attributes.

    Daemon-like sources (the watcher) set ``daemon = True`` and override
    :meth:`start`, :meth:`stop` and :meth:`status`.
    """

    #: unique short name, also stored as the batch's ``source``
    name: str = ""
    #: one sentence for people
    description: str = ""
    #: True when the source runs as a daemon with start/stop/status
    daemon: bool = False

    def start(self, settings: dict[str, Any]) -> None:
        """Start the daemon (return once it runs); raise for a clear error."""
        raise NotImplementedError(f"{self.name} is not a daemon")

    def stop(self, settings: dict[str, Any]) -> None:
        """Stop the daemon; raise for a clear error (e.g. it is not running)."""
        raise NotImplementedError(f"{self.name} is not a daemon")

    def status(self, settings: dict[str, Any]) -> SourceStatus | None:
        """Report whether the daemon runs; ``None`` for passive sources."""
        return None


def ingest_sources(pm, settings: dict[str, Any]) -> list[IngestSource]:
    """All sources the loaded plugins declare, by name."""
    sources = [s for result in pm.hook.sendit_ingest_sources(settings=settings) if result
               for s in result]
    return sorted(sources, key=lambda s: s.name)
