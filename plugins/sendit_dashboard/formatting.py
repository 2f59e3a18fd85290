"""Jinja2 filters the pages use: sizes, counts and times for people."""
from __future__ import annotations

from datetime import datetime, timezone

from markupsafe import Markup, escape

UNITS = ("bytes", "KB", "MB", "GB", "TB", "PB")


def filesize(size: int | None) -> str:
    """``1536`` -> ``"1.5 KB"`` (powers of 1024, one decimal below 10)."""
    size = int(size or 0)
    if size < 1024:
        return f"{size} byte{'s' if size != 1 else ''}"
    value = float(size)
    for unit in UNITS[1:]:
        value /= 1024
        if value < 1024 or unit == UNITS[-1]:
            return f"{value:.1f} {unit}" if value < 10 else f"{value:,.0f} {unit}"
    raise AssertionError("unreachable")


def as_utc(moment: datetime | None) -> datetime | None:
    """Timestamps are stored in UTC; SQLite hands them back without a zone."""
    if moment is None:
        return None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def iso(moment: datetime | None) -> str:
    """Machine-readable UTC time for ``<time datetime>`` (the script shows it in local time)."""
    moment = as_utc(moment)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else ""


def when(moment: datetime | None, seconds: bool = False) -> str:
    """Short UTC time for people: ``2024-05-01 10:02``."""
    moment = as_utc(moment)
    if moment is None:
        return "—"
    return moment.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def breakable(path: str | None) -> Markup:
    """A file path that may wrap after its slashes (``<wbr>``), escaped."""
    return Markup("/<wbr>").join(escape(part) for part in (path or "").split("/"))


FILTERS = {"filesize": filesize, "iso": iso, "when": when, "breakable": breakable}
