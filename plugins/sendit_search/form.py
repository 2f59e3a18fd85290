"""The form mode: rows of (field, operator, value) to query text and back.

People who would rather not type the language fill rows; the form builds the
query (quoting values that need it) and the page shows it, so the URL and the
query box always hold the real query. A query the form can show (one AND or
one OR of plain conditions) comes back as rows.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from sendit_core.query import And, Condition, Has, Not, Or, QueryError, parse, quote_value

#: The form's operators: value, label (in the order of the menu).
OPERATORS = (
    ("=", "is (* and ? are wildcards)"),
    ("exact", "is exactly"),
    ("!=", "is not"),
    ("~", "contains (any case)"),
    ("~=", "is, ignoring case"),
    ("<", "is less than / before"),
    ("<=", "is at most / on or before"),
    (">", "is more than / after"),
    (">=", "is at least / on or after"),
    ("has", "is present"),
    ("-has", "is absent"),
)
OPERATOR_VALUES = {value for value, _label in OPERATORS}
NO_VALUE = {"has", "-has"}
#: A value that can stand unquoted: no space, no ), no leading quote or operator.
_PLAIN = re.compile(r'[^\s)"=<>~!][^\s)]*')


@dataclass
class Row:
    field: str = ""
    op: str = "="
    value: str = ""

    @property
    def blank(self) -> bool:
        return not self.field.strip() and not self.value.strip()


def written(value: str, literal: bool = False) -> str:
    """A value as a condition writes it: plain when it can be, else quoted
    (``literal``: a ``*`` or ``?`` in it is no wildcard, so it is quoted too)."""
    if _PLAIN.fullmatch(value) and not (literal and ("*" in value or "?" in value)):
        return value
    return quote_value(value)


def condition_text(row: Row) -> str:
    field = row.field.strip()
    if row.op == "has":
        return f"has:{field}"
    if row.op == "-has":
        return f"-has:{field}"
    if row.op == "exact":
        return f"{field}={quote_value(row.value)}"
    return f"{field}{row.op}{written(row.value, literal=row.op not in ('=', '!=', '~='))}"


def to_query(rows: list[Row], join: str = "all") -> str:
    """The query for the form's rows (blank rows are skipped)."""
    parts = [condition_text(row) for row in rows if not row.blank]
    return (" OR " if join == "any" else " ").join(parts)


def from_query(q: str) -> tuple[list[Row], str] | None:
    """The rows and the join (``all``/``any``) of a query the form can show, or
    ``None`` (nested, negated, ...: edit it as text)."""
    try:
        tree = parse(q)
    except QueryError:
        return None
    if tree is None:
        return [], "all"
    join = "any" if isinstance(tree, Or) else "all"
    nodes = tree.nodes if isinstance(tree, (And, Or)) else (tree,)
    rows = [_row(node) for node in nodes]
    return None if any(row is None for row in rows) else (rows, join)


def _wild(value: str) -> bool:
    return "*" in value or "?" in value


def _row(node) -> Row | None:
    if isinstance(node, Has):
        return Row(node.field.text, "has", "")
    if isinstance(node, Not) and isinstance(node.node, Has):
        return Row(node.node.field.text, "-has", "")
    if isinstance(node, Not) and isinstance(node.node, Condition) and node.node.op == "=":
        inner = node.node
        if inner.quoted and _wild(inner.value):
            return None
        return Row(inner.field.text, "!=", inner.value)
    if isinstance(node, Condition):
        if node.op in ("=", "!=", "~=") and node.quoted and _wild(node.value):
            return Row(node.field.text, "exact", node.value) if node.op == "=" else None
        return Row(node.field.text, node.op, node.value)
    return None


def rows_from_params(params) -> tuple[list[Row], str]:
    """The rows a submitted form carries (``f``, ``op``, ``v`` repeated)."""
    fields, ops, values = params.getall("f"), params.getall("op"), params.getall("v")
    rows = []
    for index, field in enumerate(fields[:64]):
        op = ops[index] if index < len(ops) and ops[index] in OPERATOR_VALUES else "="
        value = values[index] if index < len(values) else ""
        rows.append(Row(field[:512], op, value[:1024]))
    join = "any" if params.get("join") == "any" else "all"
    return rows, join
