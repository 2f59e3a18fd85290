"""An image's header rows back into a tree: sequences hold their items, items their elements.

The index stores one row per value, sequences flattened (see
``sendit_pydicom.elements``): an element inside item *i* of sequence ``S`` has
the tag path ``S.E`` and the item ``"i"`` (``"i.j"`` one level deeper), and
the sequence itself has a row of VR ``SQ`` whose number is its item count.
"""
from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Any, NamedTuple


class Row(NamedTuple):
    tag_path: str
    keyword_path: str
    vr: str
    private_creator: str | None
    item: str
    position: int
    value_text: str | None
    value_num: float | None


def _node(row: Row) -> dict[str, Any]:
    node: dict[str, Any] = {
        "tag": row.tag_path.rpartition(".")[2],
        "keyword": row.keyword_path.rpartition(".")[2],
        "vr": row.vr,
        "tag_path": row.tag_path,
        "keyword_path": row.keyword_path,
        "private_creator": row.private_creator,
    }
    if row.vr == "SQ":
        count = row.value_num if row.value_num and row.value_num > 0 else 0
        node["items"] = [[] for _ in range(min(int(count), 100_000))]
    else:
        node["values"] = []
    return node


def nest(rows: Iterable[Row]) -> list[dict[str, Any]]:
    """The elements of one image, in tag order, each sequence with its items.

    A non-sequence element has ``values`` (its values in order, an empty list
    for an empty element); a sequence has ``items``, each a list of elements.
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
            parent = _node(Row(parent_path, parent_path, "SQ", None, parent_item, 0, None, 0))
            nodes[(parent_path, parent_item)] = parent
            attach(parent, parent_path, parent_item)
        items = parent.setdefault("items", [])
        slot = int(index) if index.isdigit() else len(items)
        while len(items) <= slot:
            items.append([])
        items[slot].append(node)

    # tag order within each item and value order within each element is all that
    # matters: an element lands in its item's slot whatever order items come in
    for row in sorted(rows, key=_ORDER):
        key = (row.tag_path, row.item)
        node = nodes.get(key)
        if node is None:
            node = nodes[key] = _node(row)
            attach(node, row.tag_path, row.item)
        if row.vr != "SQ" and row.value_text is not None:
            node.setdefault("values", []).append(row.value_text)
    return top


_ORDER = operator.itemgetter(0, 5)  # (tag_path, position)
