"""Pagination and counting for the API's lists.

Every list answers ``{"count", "count_exact", "page", "page_size", "next",
"previous", "results"}``; ``next`` and ``previous`` are absolute URLs (or
``null``) that keep the request's other parameters.

Counting must stay cheap at hundreds of thousands of images, so a count is
taken the cheapest exact way there is:

- **counters**: the batch rows carry their image and error counts (updated in
  the same transaction as the rows they count), so "all images", "images of
  batch B" and "errors of batch B" are read, not counted;
- **cache**: any other count (filters, ``?q=``, header values) is counted once
  and kept, per process, until the data changes. The data's version is a
  *stamp* read from the small batch table (number of batches, their newest
  update, the summed counters): every import, upload and deletion changes it;
- **estimate**: only the header values of very many images without a field
  or image filter (``/api/headers`` alone, or of one big batch) are estimated
  from a sample of images: ``count_exact`` is then ``false``.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import bindparam, func, select

from sendit_core.models import Batch

from . import MAX_PAGE_SIZE, PAGE_SIZE
from .params import ApiError

#: counts kept per process (one per distinct filter)
CACHE_SIZE = 1024


@dataclass(frozen=True)
class Stamp:
    """The data's version: how many batches, the newest update, the newest id.

    Every import commit updates its batch's ``updated_at`` (to now), a new batch
    raises the newest id or update, a deletion lowers the count. Each part is
    one index lookup (the count: one narrow index scan of the batch table).
    """

    batches: int
    newest: str
    last_id: int

    @property
    def key(self) -> tuple:
        return (self.batches, self.newest, self.last_id)


#: the stamp's query: separate subqueries, each answered by an index
_STAMP = select(select(func.count()).select_from(Batch).scalar_subquery(),
                select(func.max(Batch.updated_at)).scalar_subquery(),
                select(func.max(Batch.id)).scalar_subquery())


def stamp(request) -> Stamp:
    """Read once per request (``request.sendit_api_stamp``)."""
    row = request.dbconnection.execute(_STAMP).one()
    return Stamp(int(row[0]), str(row[1]), int(row[2] or 0))


_TOTALS = select(func.coalesce(func.sum(Batch.image_count), 0),
                 func.coalesce(func.sum(Batch.error_count), 0))


@dataclass(frozen=True)
class Totals:
    images: int
    errors: int


def totals(request) -> Totals:
    """Every image and error, summed from the batch counters (once per data version)."""
    cache: CountCache = request.registry["sendit_api.counts"]

    def compute() -> tuple[int, int]:
        row = request.dbconnection.execute(_TOTALS).one()
        return int(row[0]), int(row[1])

    return Totals(*cache.get(("totals",), request.sendit_api_stamp.key, compute))


class CountCache:
    """Counts by (what, filters), valid while the stamp is the same. Thread-safe LRU."""

    def __init__(self, size: int = CACHE_SIZE):
        self.size = size
        self._data: OrderedDict[Hashable, tuple[tuple, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable, version: tuple, compute: Callable[[], Any]) -> Any:
        with self._lock:
            found = self._data.get(key)
            if found is not None and found[0] == version:
                self._data.move_to_end(key)
                self.hits += 1
                return found[1]
            self.misses += 1
        value = compute()
        with self._lock:
            self._data[key] = (version, value)
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)
        return value


def cached_count(request, key: Hashable, stmt, counter=None,
                 params: dict[str, Any] | None = None) -> int:
    """How many rows ``stmt`` selects, counted once per data version (by ``counter``,
    a statement giving that number a cheaper way, when there is one); ``params``
    are the values of the statements' bind parameters."""
    cache: CountCache = request.registry["sendit_api.counts"]
    version = request.sendit_api_stamp.key
    if counter is None:
        counter = select(func.count()).select_from(stmt.order_by(None).subquery())

    def compute() -> int:
        return int(request.dbconnection.execute(counter, params or {}).scalar_one())

    return cache.get(key, version, compute)


#: statements by shape (see :func:`statement`); cleared if it ever grows this big
_STATEMENTS: dict[Hashable, Any] = {}
STATEMENTS_MAX = 1024


def statement(shape: Hashable, build: Callable[[], Any]) -> Any:
    """The SQL statement ``build()`` makes, built once per ``shape`` and reused.

    A shape names a statement's form (which filters, which order) but not its
    values: those are bind parameters (``bindparam("name")``), given when it
    runs. Building a select and handing SQLAlchemy a new object costs more than
    running a small query (0.2–0.5 ms: the object, its cache key, the cached
    result columns adapted to it); the same object reused skips all of that.
    """
    found = _STATEMENTS.get(shape)
    if found is None:
        if len(_STATEMENTS) >= STATEMENTS_MAX:
            _STATEMENTS.clear()
        found = _STATEMENTS[shape] = build()
    return found


@dataclass(frozen=True)
class Count:
    value: int
    exact: bool = True


@dataclass(frozen=True)
class Pager:
    """The page a request asked for."""

    number: int
    size: int

    @classmethod
    def from_request(cls, request) -> "Pager":
        settings = request.registry.settings
        largest = settings[MAX_PAGE_SIZE]
        size = request.validated.get("page_size", settings[PAGE_SIZE])
        if size > largest:
            raise ApiError(400, f"{size} is more than the maximum {largest} ({MAX_PAGE_SIZE})",
                           name="page_size")
        return cls(request.validated.get("page", 1), size)

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size


def page_url(request, number: int | None) -> str | None:
    """The request's absolute URL on page ``number`` (its other parameters kept)."""
    if number is None:
        return None
    params = [(k, v) for k, v in request.GET.items() if k != "page"]
    if number > 1:
        params.append(("page", str(number)))
    query = urlencode(params)
    return request.application_url + request.path_info + ("?" + query if query else "")


def paginate(request, stmt, count: Count, serialize: Callable[[Any], dict],
             prepare: Callable[[list], None] | None = None, seek: tuple[Any, int] | None = None,
             *, shape: Hashable | None = None, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """One page of ``stmt`` (an ordered select) as the list envelope.

    Reads one row more than the page holds, so ``next`` is right even when the
    count is an estimate. A page beyond the last is a 404 naming the last one.

    ``seek = (column, first)``, when given, says the rows are ordered by
    ``column`` and its values run without a gap from ``first``: the page then
    starts at ``column >= first + offset``, found through an index instead of
    stepping over the rows before it. ``shape`` (see :func:`statement`) names
    ``stmt``'s form, so its page statement is built once; ``params`` are the
    values of its bind parameters. ``prepare(rows)`` reads what the page's
    rows need, once.
    """
    pager = Pager.from_request(request)
    pages = max(1, -(-count.value // pager.size))
    rows: list = []
    if not (count.exact and pager.number > pages):
        # Core, not the ORM: plain rows are all a page needs, and cost less
        def build():
            page = (stmt.where(seek[0] >= bindparam("_page_first")) if seek is not None
                    else stmt.offset(bindparam("_page_offset")))
            return page.limit(bindparam("_page_limit"))

        page = build() if shape is None else statement(("page", shape, seek is not None), build)
        values = dict(params or (), _page_limit=pager.size + 1)
        if seek is not None:
            values["_page_first"] = seek[1] + pager.offset
        else:
            values["_page_offset"] = pager.offset
        rows = request.dbconnection.execute(page, values).all()
    if pager.number > 1 and not rows:
        raise ApiError(404, f"There is no page {pager.number}: with page_size {pager.size} "
                       f"the last page is {pages} ({count.value:,} results).", name="page")
    more = len(rows) > pager.size
    rows = rows[:pager.size]
    if prepare is not None:
        prepare(rows)
    return {
        "count": count.value,
        "count_exact": count.exact,
        "page": pager.number,
        "page_size": pager.size,
        "next": page_url(request, pager.number + 1 if more else None),
        "previous": page_url(request, pager.number - 1 if pager.number > 1 else None),
        "results": [serialize(row) for row in rows],
    }


def list_etag(request, *parts: Any) -> None:
    """A weak ETag for a list answer: the data's stamp and the exact request."""
    digest = hashlib.sha1(repr((request.sendit_api_stamp.key, request.path_qs, parts)).encode())
    request.response.etag = (digest.hexdigest()[:24], False)
    request.response.conditional_response = True


def includeme(config) -> None:
    config.registry["sendit_api.counts"] = CountCache()
    config.add_request_method(stamp, "sendit_api_stamp", reify=True)
    config.add_request_method(totals, "sendit_api_totals", reify=True)
