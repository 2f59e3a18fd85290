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

from sqlalchemy import func, select

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


def stamp(request) -> Stamp:
    """Read once per request (``request.sendit_api_stamp``)."""
    row = request.dbsession.connection().execute(select(  # separate subqueries: each uses an index
        select(func.count()).select_from(Batch).scalar_subquery(),
        select(func.max(Batch.updated_at)).scalar_subquery(),
        select(func.max(Batch.id)).scalar_subquery())).one()
    return Stamp(int(row[0]), str(row[1]), int(row[2] or 0))


@dataclass(frozen=True)
class Totals:
    images: int
    errors: int


def totals(request) -> Totals:
    """Every image and error, summed from the batch counters (once per data version)."""
    cache: CountCache = request.registry["sendit_api.counts"]

    def compute() -> tuple[int, int]:
        row = request.dbsession.connection().execute(select(
            func.coalesce(func.sum(Batch.image_count), 0),
            func.coalesce(func.sum(Batch.error_count), 0))).one()
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


def cached_count(request, key: Hashable, stmt, counter=None) -> int:
    """How many rows ``stmt`` selects, counted once per data version (by ``counter``,
    a statement giving that number a cheaper way, when there is one)."""
    cache: CountCache = request.registry["sendit_api.counts"]
    version = request.sendit_api_stamp.key
    if counter is None:
        counter = select(func.count()).select_from(stmt.order_by(None).subquery())

    def compute() -> int:
        return int(request.dbsession.connection().execute(counter).scalar_one())

    return cache.get(key, version, compute)


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
             prepare: Callable[[list], None] | None = None,
             seek: Callable[[int], Any] | None = None) -> dict[str, Any]:
    """One page of ``stmt`` (an ordered select) as the list envelope.

    Reads one row more than the page holds, so ``next`` is right even when the
    count is an estimate. A page beyond the last is a 404 naming the last one.
    ``seek(offset)``, when given, turns the offset into a condition that finds
    the page's first row through an index (instead of stepping over the rows
    before it); ``prepare(rows)`` reads what the page's rows need, once.
    """
    pager = Pager.from_request(request)
    pages = max(1, -(-count.value // pager.size))
    rows: list = []
    if not (count.exact and pager.number > pages):
        # Core, not the ORM: plain rows are all a page needs, and cost less
        page = stmt.where(seek(pager.offset)) if seek else stmt.offset(pager.offset)
        rows = request.dbsession.connection().execute(page.limit(pager.size + 1)).all()
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
