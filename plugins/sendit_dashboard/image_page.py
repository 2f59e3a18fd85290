"""An image's page: its panels (the viewer is one) and the table of its header fields.

The table lists every indexed element in file order: tag, keyword and name,
VR, value. Sequences are shown nested (the sequence, then "Item 1", "Item 2"
... with their elements indented below), private elements with their private
creator, multi-valued elements as one row, long values folded. Each value links
to a search for images with the same value, when a search page exists. A filter
(``?filter=text``, applied as one types when scripts run) keeps the rows whose
tag, keyword, name, VR, creator or value contains the text, with the sequences
and items they sit in.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from pydicom.datadict import dictionary_description, private_dictionary_description
from pyramid.interfaces import IRoutesMapper
from pyramid.view import view_config
from sqlalchemy import and_, func, or_, select

from sendit_core.models import Batch, HeaderField, HeaderValue, Image

from .views import TEMPLATES, get_or_404, panels

#: Values longer than this are folded (the first part shown, the rest on demand).
FOLD = 160
#: Longest filter text taken from the query string.
MAX_FILTER = 200
#: Stand-in for a missing instance number when ordering a series.
NO_NUMBER = -(2**31)


@dataclass
class Entry:
    """One row of the header table: an element, or an item of a sequence."""

    id: str
    kind: str                       # "element" or "item"
    depth: int
    tag_path: str = ""
    keyword_path: str = ""
    vr: str = ""
    values: list = field(default_factory=list)   # value texts (None: empty)
    items: int | None = None        # a sequence's number of items
    private_creator: str | None = None
    label: str = ""                 # "Item 1"
    parents: list = field(default_factory=list)  # ids of the enclosing sequences and items
    links: list = field(default_factory=list)    # search URL per value (or None)

    @property
    def tag(self) -> str:
        last = self.tag_path.rsplit(".", 1)[-1]
        return f"({last[:4]},{last[4:]})" if len(last) == 8 else last

    @property
    def tag_number(self) -> int | None:
        try:
            return int(self.tag_path.rsplit(".", 1)[-1], 16)
        except ValueError:
            return None

    @property
    def private(self) -> bool:
        number = self.tag_number
        return number is not None and (number >> 16) % 2 == 1

    @property
    def keyword(self) -> str:
        return self.keyword_path.rsplit(".", 1)[-1]

    @property
    def name(self) -> str:
        return element_name(self.tag_number, self.private_creator)

    @property
    def reserved_block(self) -> str | None:
        """For a private creator element, the block it reserves: ``(0009,10xx)``."""
        number = self.tag_number
        if number is None or not self.private or not 0x10 <= number & 0xFFFF <= 0xFF:
            return None
        return f"({number >> 16:04X},{number & 0xFF:02X}xx)"

    @property
    def folded(self) -> bool:
        return any(v is not None and len(v) > FOLD for v in self.values)

    def text(self) -> str:
        """Everything the filter looks at, in lower case."""
        if self.kind == "item":
            return self.label.casefold()
        parts = [self.tag, self.tag_path, self.keyword_path, self.name, self.vr, self.private_creator or "",
                 self.label, *(v for v in self.values if v is not None)]
        return " ".join(parts).casefold()


@lru_cache(maxsize=4096)
def element_name(tag: int | None, creator: str | None) -> str:
    """The data dictionary's name of an element ("Patient's Name"), or ""."""
    if tag is None:
        return ""
    group, element = tag >> 16, tag & 0xFFFF
    if group % 2 == 1:
        if 0x0010 <= element <= 0x00FF:
            return "Private Creator"
        if creator:
            try:
                return private_dictionary_description(tag, creator)
            except KeyError:
                return ""
        return ""
    try:
        return dictionary_description(tag)
    except KeyError:
        return ""


def _sort_key(row) -> tuple:
    """File order: tags interleaved with the item indexes of the enclosing sequences."""
    tags = row.tag_path.split(".")
    items = [int(i) for i in row.item.split(".")] if row.item else []
    key: list = []
    for level, tag in enumerate(tags):
        key.append(tag)
        if level < len(tags) - 1:
            key.append(items[level] if level < len(items) else 0)
    key.append(row.position)
    return tuple(key)


def header_entries(rows) -> list[Entry]:
    """The table's rows, nested, from the header index's rows of one image."""
    entries: list[Entry] = []
    sequences: dict[tuple, str] = {}      # (tag path, item path of its parent) -> entry id
    open_items: list[tuple] = []           # per level: (tag path prefix, item path prefix)
    open_ids: list[str] = []
    last: Entry | None = None
    last_key = None
    for row in sorted(rows, key=_sort_key):
        tags = row.tag_path.split(".")
        items = row.item.split(".") if row.item else []
        key = (row.tag_path, row.item)
        if last is not None and key == last_key:  # another value of a multi-valued element
            last.values.append(row.value_text)
            continue
        parents = []
        for level in range(min(len(items), len(tags) - 1)):
            ident = (".".join(tags[:level + 1]), ".".join(items[:level + 1]))
            sequence_id = sequences.get((ident[0], ".".join(items[:level])))
            if sequence_id:
                parents.append(sequence_id)
            if level >= len(open_items) or open_items[level] != ident:
                del open_items[level:], open_ids[level:]
                entry = Entry(f"h{len(entries)}", "item", level + 1, tag_path=ident[0],
                              label=f"Item {int(items[level]) + 1}", parents=list(parents))
                entries.append(entry)
                open_items.append(ident)
                open_ids.append(entry.id)
            parents.append(open_ids[level])
        entry = Entry(f"h{len(entries)}", "element", len(tags) - 1, tag_path=row.tag_path,
                      keyword_path=row.keyword_path, vr=row.vr, private_creator=row.private_creator,
                      parents=parents)
        if row.vr == "SQ":
            entry.items = int(row.value_num or 0)
            sequences[(row.tag_path, row.item)] = entry.id
        else:
            entry.values.append(row.value_text)
        entries.append(entry)
        last, last_key = entry, key
    return entries


def filter_entries(entries: list[Entry], text: str) -> set[str]:
    """The ids of the entries matching ``text``, and of the sequences and items around them."""
    needle = text.casefold()
    keep = set()
    for entry in entries:
        if needle in entry.text():
            keep.add(entry.id)
            keep.update(entry.parents)
    return keep


def search_links(request, entries: list[Entry]) -> None:
    """Give each value a link to a search for it (when a search page exists)."""
    mapper = request.registry.queryUtility(IRoutesMapper)
    if mapper is None or mapper.get_route("search") is None:
        return
    try:
        from sendit_core.query import quote_value
    except ImportError:  # pragma: no cover - the query engine ships with the core
        return
    for entry in entries:
        entry.links = [request.route_path("search", _query={"q": f"{entry.keyword_path}={quote_value(v)}"})
                       if v is not None and v != "" else None for v in entry.values]


def neighbours(db, image: Image) -> dict:
    """Previous and next image of the series in the batch (by instance number), and
    where this one stands."""
    if not image.series_instance_uid:
        return {"previous": None, "next": None, "position": 1, "total": 1}
    same = (Image.batch_id == image.batch_id, Image.series_instance_uid == image.series_instance_uid)
    number = func.coalesce(Image.instance_number, NO_NUMBER)
    mine = image.instance_number if image.instance_number is not None else NO_NUMBER
    before = or_(number < mine, and_(number == mine, Image.id < image.id))
    after = or_(number > mine, and_(number == mine, Image.id > image.id))
    previous = db.scalar(select(Image.id).where(*same, before).order_by(number.desc(), Image.id.desc()).limit(1))
    following = db.scalar(select(Image.id).where(*same, after).order_by(number, Image.id).limit(1))
    position = db.scalar(select(func.count()).select_from(Image).where(*same, before)) + 1
    total = db.scalar(select(func.count()).select_from(Image).where(*same))
    return {"previous": previous, "next": following, "position": position, "total": total}


@view_config(route_name="image", renderer=TEMPLATES + "image.jinja2")
def image_page(request):
    image = get_or_404(request, Image, "image")
    db = request.dbsession
    rows = db.execute(
        select(HeaderField.tag_path, HeaderField.keyword_path, HeaderField.vr, HeaderField.private_creator,
               HeaderValue.item, HeaderValue.position, HeaderValue.value_text, HeaderValue.value_num)
        .join(HeaderValue, HeaderValue.field_id == HeaderField.id)
        .where(HeaderValue.image_id == image.id)
    ).all()
    entries = header_entries(rows)
    text = request.GET.get("filter", "").strip()[:MAX_FILTER]
    # every row is rendered (the script filters as one types); rows the filter
    # leaves out are hidden, which also works without scripts
    shown = filter_entries(entries, text) if text else {e.id for e in entries}
    search_links(request, entries)
    return {"image": image, "batch": db.get(Batch, image.batch_id), "entries": entries, "shown": shown,
            "total": sum(1 for e in entries if e.kind == "element"),
            "matching": sum(1 for e in entries if e.kind == "element" and e.id in shown
                            and text.casefold() in e.text()),
            "filter": text, "fold": FOLD, "series": neighbours(db, image), "active_nav": "dashboard",
            "panels": panels(request, "sendit_image_panels", image=image)}
