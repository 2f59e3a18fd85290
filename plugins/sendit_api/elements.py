"""An image's header rows back into a tree: sequences hold their items, items their elements.

The index stores one row per value, sequences flattened (see
``sendit_pydicom.elements``): an element inside item *i* of sequence ``S`` has
the tag path ``S.E`` and the item ``"i"`` (``"i.j"`` one level deeper), and
the sequence itself has a row of VR ``SQ`` whose number is its item count.
"""
from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple


class Row(NamedTuple):
    """The columns :func:`nest` reads, in this order."""

    tag_path: str
    keyword_path: str
    vr: str
    private_creator: str | None
    item: str
    position: int
    value_text: str | None
    value_num: float | None


def _node(tag_path: str, keyword_path: str, vr: str, private_creator: str | None,
          value_num: float | None) -> dict[str, Any]:
    node: dict[str, Any] = {
        "tag": tag_path.rpartition(".")[2],
        "keyword": keyword_path.rpartition(".")[2],
        "vr": vr,
        "tag_path": tag_path,
        "keyword_path": keyword_path,
        "private_creator": private_creator,
    }
    if vr == "SQ":
        count = value_num if value_num and value_num > 0 else 0
        node["items"] = [[] for _ in range(min(int(count), 100_000))]
    else:
        node["values"] = []
    return node


def nest(rows: Iterable[Sequence]) -> list[dict[str, Any]]:
    """The elements of one image, in tag order, each sequence with its items.

    ``rows`` are tuples (or database rows) in the order of :class:`Row`'s
    fields, read by position: an image has a hundred or more of them, and
    unpacking costs less than making a named tuple of each. A non-sequence
    element has ``values`` (its values in order, an empty list for an empty
    element); a sequence has ``items``, each a list of elements.
    """
    top: list[dict[str, Any]] = []
    nodes: dict[tuple[str, str], dict[str, Any]] = {}

    def attach(node: dict[str, Any], tag_path: str, item: str) -> None:
        if "." not in tag_path:
            top.append(node)
            return
        parent_path = tag_path.rpartition(".")[0]
        parent_item, _, index = item.rpartition(".")
        parent = nodes.get((parent_path, parent_item))
        if parent is None:  # a sequence row that was never stored: make its place
            parent = _node(parent_path, parent_path, "SQ", None, 0)
            nodes[(parent_path, parent_item)] = parent
            attach(parent, parent_path, parent_item)
        items = parent.setdefault("items", [])
        slot = int(index) if index.isdigit() else len(items)
        while len(items) <= slot:
            items.append([])
        items[slot].append(node)

    # tag order within each item and value order within each element is all that
    # matters: an element lands in its item's slot whatever order items come in
    for tag_path, keyword_path, vr, creator, item, _, text, number in sorted(rows, key=_ORDER):
        key = (tag_path, item)
        node = nodes.get(key)
        if node is None:
            if vr == "SQ" or "." in tag_path:
                node = _node(tag_path, keyword_path, vr, creator, number)
                attach(node, tag_path, item)
            else:  # most elements: top level, not a sequence (built inline: the hot path)
                node = {"tag": tag_path, "keyword": keyword_path, "vr": vr, "tag_path": tag_path,
                        "keyword_path": keyword_path, "private_creator": creator, "values": []}
                top.append(node)
            nodes[key] = node
        if text is not None and vr != "SQ":
            node["values"].append(text)
    return top


_ORDER = operator.itemgetter(0, 5)  # (tag_path, position)
