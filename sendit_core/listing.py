"""Sorting and pagination of the pages' tables, driven by query parameters:
the public helpers every plugin's pages use (the dashboard's, the search page).

Every table works without JavaScript: ``?sort=name&order=asc`` sorts,
``?page=3`` pages, and the links that change one of them keep the others (and
the filters) as they are. A bad page number is a 404, never a 500.

The template side is ``sendit_core:templates/listing.jinja2``: the macros
``th(sort, key, title, class)`` (a sortable column header) and
``pager(page, what, id)`` (the page links), styled by the core's stylesheet::

    {% from "sendit_core:templates/listing.jinja2" import th, pager %}
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from pyramid.httpexceptions import HTTPNotFound

#: query parameters that never appear in generated links
TRANSIENT = ("partial",)


def number(value: int | None) -> str:
    """``12345`` as ``12,345``: the ``number`` template filter."""
    return f"{int(value or 0):,}"


def url_with(request, **changes: Any) -> str:
    """The current path and query with ``changes`` applied (``None`` removes a key)."""
    params = [(k, v) for k, v in request.GET.items() if k not in changes and k not in TRANSIENT]
    params += [(k, str(v)) for k, v in changes.items() if v is not None and v != ""]
    query = urlencode(params)
    return request.path + ("?" + query if query else "")


@dataclass(frozen=True)
class Column:
    """A sortable column: the SQL expressions it sorts by (ties broken by the last)."""

    key: str
    exprs: Sequence[Any]
    #: the first click sorts descending (dates, counts, sizes)
    descending_first: bool = False


@dataclass(frozen=True)
class Sort:
    """The sort a request asked for, with the links that change it."""

    request: Any
    columns: Mapping[str, Column]
    key: str
    descending: bool

    @classmethod
    def from_request(cls, request, columns: Sequence[Column], default: str) -> "Sort":
        by_key = {column.key: column for column in columns}
        key = request.GET.get("sort", default)
        if key not in by_key:  # a hand-edited URL: fall back, the page still works
            key = default
        order = request.GET.get("order")
        descending = order == "desc" if order in ("asc", "desc") else by_key[key].descending_first
        return cls(request, by_key, key, descending)

    def order_by(self) -> list[Any]:
        exprs = self.columns[self.key].exprs
        return [e.desc() if self.descending else e.asc() for e in exprs]

    def url(self, key: str) -> str:
        """Link for a column header: toggles the current column, else its first order."""
        descending = not self.descending if key == self.key else self.columns[key].descending_first
        return url_with(self.request, sort=key, order="desc" if descending else "asc", page=None)

    def aria(self, key: str) -> str | None:
        """``aria-sort`` for a column header (only the sorted column has one)."""
        if key != self.key:
            return None
        return "descending" if self.descending else "ascending"


@dataclass(frozen=True)
class Page:
    """One page of a table: ``number`` (1-based) of ``pages``, ``size`` rows each."""

    request: Any
    number: int
    size: int
    total: int

    @classmethod
    def from_request(cls, request, total: int, size: int | None = None) -> "Page":
        """Read ``?page=``; a malformed, zero, negative or too large number is a 404."""
        size = size or request.registry.settings["sendit.page_size"]
        raw = request.GET.get("page", "1")
        try:
            number = int(raw)
        except ValueError:
            raise HTTPNotFound(f"“{raw[:40]}” is not a page number.") from None
        page = cls(request, number, size, total)
        if number < 1 or number > page.pages:
            raise HTTPNotFound(f"There is no page {number}: there "
                               f"{'are' if page.pages != 1 else 'is'} {page.pages} "
                               f"page{'s' if page.pages != 1 else ''}.")
        return page

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.size))

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size

    @property
    def first_row(self) -> int:
        return min(self.total, self.offset + 1)

    @property
    def last_row(self) -> int:
        return min(self.total, self.offset + self.size)

    def url(self, number: int) -> str:
        return url_with(self.request, page=number if number > 1 else None)

    def window(self, around: int = 2) -> list[int | None]:
        """Page numbers to link: the first, the last and those near the current
        one; ``None`` marks a gap."""
        shown = {1, self.pages, *range(self.number - around, self.number + around + 1)}
        numbers = sorted(n for n in shown if 1 <= n <= self.pages)
        result: list[int | None] = []
        for n in numbers:
            if result and n - result[-1] > 1:
                result.append(None)
            result.append(n)
        return result
