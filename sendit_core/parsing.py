"""What parser plugins return, and the core's call to the parser hook."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ParseError(Exception):
    """A parser understood the file but cannot import it; the message says why."""


@dataclass(slots=True)
class HeaderElement:
    """One indexed value of one data element.

    :param tag_path: tag per level as 8 hex digits joined by ``.``.
    :param keyword_path: keywords (or ``(gggg,eeee)`` for private/unknown tags)
        joined by ``.``.
    :param vr: the value representation.
    :param value_text: the value as text (``None`` for an empty element).
    :param value_num: the value as a number, for numeric VRs.
    :param item: sequence item indexes along the path (``"0.2"``), "" at top level.
    :param position: index among the values of a multi-valued element.
    :param private_creator: the private creator, for private elements.
    """

    tag_path: str
    keyword_path: str
    vr: str
    value_text: str | None
    value_num: float | None = None
    item: str = ""
    position: int = 0
    private_creator: str | None = None


@dataclass
class ParsedFile:
    """What a parser makes of one file: the image record and its header elements."""

    sop_instance_uid: str
    sop_class_uid: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    modality: str | None = None
    instance_number: int | None = None
    transfer_syntax_uid: str | None = None
    elements: list[HeaderElement] = field(default_factory=list)
    #: which parser produced it (the plugin's name), for the record
    parser: str = ""


def parse_file(pm, path: Path, settings: dict[str, Any]) -> ParsedFile | None:
    """Ask the parser plugins for ``path``; ``None`` when every parser declined.

    :raises ParseError: when the accepting parser found the file broken.
    """
    return pm.hook.sendit_parse_file(path=Path(path), settings=settings)
