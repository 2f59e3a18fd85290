"""What interface hooks return: navigation entries and page panels."""
from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup


@dataclass(frozen=True)
class NavItem:
    """One entry of the navigation bar.

    :param title: the link text.
    :param url: where it goes (use ``request.route_url``).
    :param order: smaller comes first; the core's own entries use 10, 20, ...
    :param name: a stable identifier, used to mark the current page.
    """

    title: str
    url: str
    order: int = 100
    name: str = ""


@dataclass(frozen=True)
class Panel:
    """A piece of HTML a plugin adds to a page.

    :param name: a stable identifier (used as the element id ``panel-<name>``).
    :param html: the rendered HTML, as :class:`markupsafe.Markup` (render a
        template with ``pyramid.renderers.render``; never pass untrusted text).
    :param title: a heading shown above the panel ("" for none).
    :param order: smaller comes first.
    :param slot: where on the page: ``"main"`` (the default), ``"side"`` or
        ``"actions"`` (buttons at the top of the page).
    """

    name: str
    html: Markup
    title: str = ""
    order: int = 100
    slot: str = "main"


def collect(results: list[list | None]) -> list:
    """Flatten a list-returning hook's results, dropping ``None``, sorted by order/title."""
    items = [item for result in results if result for item in result]
    return sorted(items, key=lambda item: (item.order, getattr(item, "title", "")))
