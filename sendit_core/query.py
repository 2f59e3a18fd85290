"""The search language and its engine, shared by the web page, the API and the command line.

::

    from sendit_core.query import QueryError, image_filter, quote_value

    cond = image_filter('Modality=CT StudyDate>=20200101 PatientName=DOE*')
    images = db.scalars(select(Image).where(cond).order_by(Image.id).limit(50))

The language (``docs/search.md`` has the whole story, with examples):

- a condition is ``FIELD OP VALUE``; FIELD is a keyword (``PatientID``), a tag
  (``(0010,0020)`` or ``00100020``) or a sequence path joined by dots
  (``ReferencedImageSequence.ReferencedSOPInstanceUID``, ``00081140.00081155``);
- OP is ``=`` (equals; unquoted ``*`` and ``?`` are DICOM wildcards, and on
  date and time fields ``A-B`` is a DICOM range), ``!=`` (not equal), ``~``
  (contains, ignoring case), ``~=`` (equals ignoring case, wildcards allowed),
  ``<``, ``<=``, ``>``, ``>=`` (numbers, dates, times; text alphabetically);
- ``has:FIELD`` (the element has a value), ``batch:ID`` (images of a batch);
- conditions separated by spaces must all hold (``AND`` may be written),
  ``OR`` between them, ``NOT`` or ``-`` before one, parentheses group;
- a value in double quotes is taken literally (``\\"`` and ``\\\\`` inside);
  :func:`quote_value` writes one.

How it runs: each condition becomes index range scans on ``header_value``
(``(field_id, value_text, image_id)`` for text, ``(field_id, value_num)``
carrying ``image_id`` for numbers, dates and times). An AND selects the image ids of the
condition likely to match the fewest images and checks the others per candidate
with one index seek each; OR is a UNION, NOT a NOT IN / NOT EXISTS. The whole
query is one condition on ``image.id``. The field's id is looked up by its
unique tag path inside the statement, so building the clause needs no database
access. See "the engine" below.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import lru_cache

from pydicom.datadict import RepeatersDictionary, dictionary_VR, keyword_dict
from sqlalchemy import ColumnElement, and_, event, exists, or_, select, true, union
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import aliased
from sqlalchemy.pool import Pool
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.sql.selectable import CompoundSelect

from .models import HeaderField, HeaderValue, Image

__all__ = ["QueryError", "image_filter", "quote_value", "parse", "resolve_field", "field_text",
           "present_fields", "suggest_values", "register_sqlite_functions", "MAX_QUERY_LENGTH"]

#: Longest query accepted (characters) and most conditions in one query.
MAX_QUERY_LENGTH = 4000
MAX_CONDITIONS = 64
#: Deepest nesting of parentheses and negations.
MAX_DEPTH = 32

OPERATORS = ("=", "!=", "~", "~=", "<", "<=", ">", ">=")
#: VRs whose values are numbers (``value_num``), ranges compare them as such.
NUMBER_VRS = frozenset({"DS", "IS", "US", "SS", "UL", "SL", "FL", "FD", "UV", "SV",
                        "US or SS", "US or SS or OW", "US or OW"})
#: VRs never indexed (binary values): nothing to search.
BINARY_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN", "OB or OW"})
#: The bulk elements the parser never indexes, whatever their VR.
BULK_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010, 0x54001010, 0x00420011, 0xFFFCFFFC})


class QueryError(ValueError):
    """An invalid query. ``str(exc)`` says what is wrong and where;
    ``exc.position`` is the 0-based character offset of the problem (or ``None``)
    and ``exc.reason`` the message without the position."""

    def __init__(self, reason: str, position: int | None = None, length: int = 1):
        self.reason = reason
        self.position = position
        self.length = max(1, length)
        super().__init__(reason if position is None else f"{reason} (at position {position})")

    def pointer(self, query: str) -> str:
        """The query and a line of ``^`` under the problem (for terminals)."""
        if self.position is None:
            return query
        line = query.replace("\n", " ").replace("\t", " ")
        return f"{line}\n{' ' * self.position}{'^' * min(self.length, max(1, len(line) - self.position))}"


def quote_value(value: str) -> str:
    """``value`` as written in a query: double-quoted, ``"`` and ``\\`` escaped by ``\\``.

    A quoted value is matched literally (``*`` and ``?`` are no wildcards).
    """
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- the syntax tree ---------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """A resolved field: what was written, its tag path and its dictionary VR."""

    text: str
    tag_path: str
    #: the VR from the DICOM dictionary, ``None`` for private and unknown tags
    vr: str | None
    position: int


@dataclass(frozen=True)
class Condition:
    field: Field
    op: str
    value: str
    #: the value was in double quotes (literal, no wildcards or ranges)
    quoted: bool
    position: int
    value_position: int


@dataclass(frozen=True)
class Has:
    field: Field
    position: int


@dataclass(frozen=True)
class InBatch:
    batch_id: int
    position: int


@dataclass(frozen=True)
class Not:
    node: object
    position: int


@dataclass(frozen=True)
class And:
    nodes: tuple


@dataclass(frozen=True)
class Or:
    nodes: tuple


# -- fields --------------------------------------------------------------------


@lru_cache(maxsize=1)
def _keywords() -> tuple[dict[str, int], dict[str, str]]:
    """Keyword -> tag (repeating groups at their first group), and lower-case
    keyword -> keyword."""
    tags = {kw: tag for kw, tag in keyword_dict.items() if kw}
    for mask, entry in RepeatersDictionary.items():
        keyword = entry[4]
        if keyword and keyword not in tags:
            tags[keyword] = int(mask.replace("x", "0"), 16)
    return tags, {kw.lower(): kw for kw in tags}


def _vr(tag: int) -> str | None:
    if tag >> 16 & 1:  # private
        return None
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def _suggest(word: str) -> str:
    tags, lower = _keywords()
    close = difflib.get_close_matches(word, list(tags), n=3, cutoff=0.75)
    if not close:
        close = [lower[m] for m in difflib.get_close_matches(word.lower(), list(lower), n=3, cutoff=0.75)]
    if not close:
        return " (a DICOM keyword such as PatientID, or a tag such as (0010,0020))"
    return ": did you mean " + " or ".join(close) + "?"


_TAG_PAREN = re.compile(r"\(\s*([0-9A-Fa-f]{4})\s*,\s*([0-9A-Fa-f]{4})\s*\)")
#: anything that looks like a tag in parentheses (checked strictly later)
_TAG_LIKE = r"\(\s*[0-9A-Za-z]{1,8}\s*,\s*[0-9A-Za-z]{1,8}\s*\)"
_TAG_PAREN_LOOSE = re.compile(_TAG_LIKE)
_SEGMENT = re.compile(_TAG_LIKE + r"|[A-Za-z0-9_]+")
_HEX8 = re.compile(r"[0-9A-Fa-f]{8}")


def _resolve_segment(text: str, position: int) -> int:
    """The tag a path segment names."""
    if text.startswith("("):
        match = _TAG_PAREN.fullmatch(text)
        if not match:
            raise QueryError(f"bad tag {text}: write a tag as (gggg,eeee), four hex digits each, "
                             "e.g. (0010,0020)", position, len(text))
        return int(match.group(1) + match.group(2), 16)
    if _HEX8.fullmatch(text):
        return int(text, 16)
    tags, lower = _keywords()
    if text in tags:
        return tags[text]
    if text.lower() in lower:
        return tags[lower[text.lower()]]
    if text[0].isdigit():
        raise QueryError(f"bad tag {text}: a tag number has 8 hex digits (00100020) or is "
                         "written (0010,0020)", position, len(text))
    raise QueryError(f'unknown field "{text}"{_suggest(text)}', position, len(text))


def _resolve_field(text: str, position: int) -> Field:
    """Resolve ``Keyword``, ``(gggg,eeee)``, ``gggggggg`` or a dotted path of them."""
    segments = []
    offset = 0
    for match in _SEGMENT.finditer(text):
        if match.start() != offset:
            break
        segments.append((match.group(), position + match.start()))
        offset = match.end()
        if offset < len(text):
            if text[offset] != ".":
                break
            offset += 1
    if offset != len(text) or not segments:
        raise QueryError(f'bad field "{text}": write a keyword (PatientID), a tag ((0010,0020)) '
                         "or a sequence path (ReferencedImageSequence.ReferencedSOPInstanceUID)",
                         position, len(text))
    tags = [_resolve_segment(segment, at) for segment, at in segments]
    for (segment, at), tag in zip(segments[:-1], tags[:-1]):
        vr = _vr(tag)
        if vr is not None and vr != "SQ":
            raise QueryError(f"{segment} is not a sequence: only a sequence can be followed by "
                             f'"." and a field inside it', at, len(segment))
    vr = _vr(tags[-1])
    return Field(text, ".".join(f"{tag:08X}" for tag in tags), vr, position)


# -- the parser ------------------------------------------------------------------

_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"[A-Za-z]+")
_FIELD = re.compile(rf"(?:{_TAG_LIKE}|[A-Za-z0-9_]+)(?:\.(?:{_TAG_LIKE}|[A-Za-z0-9_]+))*")
_OPERATOR = re.compile(r"!=|~=|<=|>=|==|=<|=>|<>|=|~|<|>|:")
_UNQUOTED = re.compile(r"[^\s)]*")
_KEYWORDS = {"AND", "OR", "NOT"}
_OPS_HINT = "=, !=, ~, ~=, <, <=, > or >="


@dataclass
class _Token:
    kind: str  # "(", ")", "AND", "OR", "NOT", "TERM", "END"
    position: int
    node: object = None
    text: str = ""


class _Lexer:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0
        self.conditions = 0

    def tokens(self) -> list[_Token]:
        out = []
        while True:
            token = self.next()
            out.append(token)
            if token.kind == "END":
                return out

    def next(self) -> _Token:
        text = self.text
        match = _SPACE.match(text, self.pos)
        if match:
            self.pos = match.end()
        at = self.pos
        if at >= len(text):
            return _Token("END", at)
        char = text[at]
        if char == "(" and not _TAG_PAREN_LOOSE.match(text, at):
            self.pos += 1
            return _Token("(", at, text="(")
        if char == ")":
            self.pos += 1
            return _Token(")", at, text=")")
        if char == "-":
            if at + 1 >= len(text) or text[at + 1].isspace():
                raise QueryError('"-" must stand right before the condition it negates '
                                 "(-Modality=CT)", at)
            self.pos += 1
            return _Token("NOT", at, text="-")
        word = _WORD.match(text, at)
        if word and word.group().upper() in _KEYWORDS:
            end = word.end()
            if end >= len(text) or text[end].isspace() or text[end] in "()-":
                self.pos = end
                return _Token(word.group().upper(), at, text=word.group())
        return self.term(at)

    def term(self, at: int) -> _Token:
        text = self.text
        if text[at] == '"':
            raise QueryError("a value needs a field before it: write FIELD=VALUE, "
                             'e.g. PatientName="DOE^JOHN"', at)
        match = _FIELD.match(text, at)
        if not match:
            raise QueryError(f'unexpected "{text[at]}": expected a condition such as '
                             "PatientID=123, has:PatientAge, OR, NOT or a parenthesis", at)
        name, end = match.group(), match.end()
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise QueryError(f"too many conditions: at most {MAX_CONDITIONS} in one query", at)
        if end < len(text) and text[end] == ":" and name.lower() in ("has", "batch"):
            return self.special(name.lower(), at, end + 1)
        op = _OPERATOR.match(text, end)
        if not op:
            if end >= len(text) or text[end].isspace() or text[end] == ")":
                _resolve_field(name, at)  # an unknown field is the better message
                raise QueryError(f"{name} needs an operator and a value: e.g. {name}=VALUE "
                                 f"(operators: {_OPS_HINT}; has:{name} for presence)", end)
            if text[end] == ".":
                raise QueryError(f'a "." in a field must be followed by the field inside the '
                                 f"sequence: {name}.KEYWORD", end)
            _resolve_field(name, at)
            raise QueryError(f'unexpected "{text[end]}" after {name}: expected an operator '
                             f"({_OPS_HINT})", end)
        symbol = op.group()
        if symbol in ("==", "=<", "=>", "<>", ":"):
            better = {"==": "=", "=<": "<=", "=>": ">=", "<>": "!=", ":": "="}[symbol]
            raise QueryError(f'unknown operator "{symbol}": write "{better}" '
                             f"(operators: {_OPS_HINT})", end, len(symbol))
        field_ = _resolve_field(name, at)
        value, quoted, value_at = self.value(op.end(), symbol)
        condition = Condition(field_, symbol, value, quoted, at, value_at)
        return _Token("TERM", at, node=_check_condition(condition))

    def value(self, at: int, symbol: str) -> tuple[str, bool, int]:
        text = self.text
        if at < len(text) and text[at] == '"':
            return self.quoted(at), True, at
        match = _UNQUOTED.match(text, at)
        value = match.group()
        if not value:
            raise QueryError(f'missing value after "{symbol}" (write "" to find an empty value)', at)
        if value.startswith(("=", "<", ">", "~", "!")) and symbol in ("=", "<", ">", "~"):
            raise QueryError(f'unexpected "{value[0]}" after "{symbol}": one operator per '
                             f"condition ({_OPS_HINT}); quote a value that starts with it", at)
        self.pos = match.end()
        return value, False, at

    def quoted(self, at: int) -> str:
        text, out, i = self.text, [], at + 1
        while i < len(text):
            char = text[i]
            if char == '"':
                self.pos = i + 1
                if self.pos < len(text) and not text[self.pos].isspace() and text[self.pos] != ")":
                    raise QueryError("a quoted value must be followed by a space, a ) or the end "
                                     "of the query", self.pos)
                return "".join(out)
            if char == "\\":
                if i + 1 < len(text) and text[i + 1] in '"\\':
                    out.append(text[i + 1])
                    i += 2
                    continue
                raise QueryError('in a quoted value a backslash must be followed by " or \\ '
                                 '(write \\\\ for a backslash)', i, 2)
            out.append(char)
            i += 1
        raise QueryError("unterminated quoted value: the closing \" is missing", at)

    def special(self, kind: str, at: int, start: int) -> _Token:
        text = self.text
        if kind == "batch":
            match = re.compile(r"\d+").match(text, start)
            end = match.end() if match else start
            if not match or (end < len(text) and not text[end].isspace() and text[end] != ")"):
                raise QueryError("batch: needs a batch number, e.g. batch:12", start)
            self.pos = end
            number = int(match.group())
            if number >= 2**63:
                raise QueryError("batch: the batch number is too large", start, end - start)
            return _Token("TERM", at, node=InBatch(number, at))
        match = _FIELD.match(text, start)
        if not match:
            raise QueryError("has: needs a field, e.g. has:PatientAge", start)
        end = match.end()
        if end < len(text) and not text[end].isspace() and text[end] != ")":
            raise QueryError(f'unexpected "{text[end]}" after has:{match.group()}', end)
        self.pos = end
        field_ = _resolve_field(match.group(), start)
        if field_.vr in BINARY_VRS or _last_tag(field_) in BULK_TAGS:
            raise QueryError(f"{field_.text} holds binary data, which is not indexed",
                             start, len(field_.text))
        return _Token("TERM", at, node=Has(field_, at))


class _Parser:
    """``query := or ; or := and (OR and)* ; and := unary ([AND] unary)* ;
    unary := (NOT | -) unary | ( or ) | TERM``."""

    def __init__(self, text: str):
        self.tokens = _Lexer(text).tokens()
        self.i = 0
        self.depth = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.i]

    def parse(self):
        if self.token.kind == "END":
            return None
        node = self.or_()
        token = self.token
        if token.kind == ")":
            raise QueryError('unmatched ")": no "(" opens it (quote a value that contains ")")',
                             token.position)
        if token.kind != "END":  # pragma: no cover - or_() consumes everything else
            raise QueryError(f'unexpected "{token.text}"', token.position)
        return node

    def or_(self):
        nodes = [self.and_()]
        while self.token.kind == "OR":
            at = self.token.position
            self.i += 1
            if self.token.kind in ("END", ")", "OR", "AND"):
                raise QueryError("OR needs a condition on both sides", at, 2)
            nodes.append(self.and_())
        return nodes[0] if len(nodes) == 1 else Or(tuple(nodes))

    def and_(self):
        nodes = [self.unary()]
        while self.token.kind not in ("END", ")", "OR"):
            if self.token.kind == "AND":
                at = self.token.position
                self.i += 1
                if self.token.kind in ("END", ")", "OR", "AND"):
                    raise QueryError("AND needs a condition on both sides", at, 3)
            nodes.append(self.unary())
        return nodes[0] if len(nodes) == 1 else And(tuple(nodes))

    def unary(self):
        token = self.token
        if token.kind in ("NOT", "("):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise QueryError(f"parentheses and negations nest too deeply (at most "
                                 f"{MAX_DEPTH} levels)", token.position)
            try:
                return self._nested(token)
            finally:
                self.depth -= 1
        if token.kind == "TERM":
            self.i += 1
            return token.node
        if token.kind in ("AND", "OR"):
            raise QueryError(f"{token.kind} needs a condition on both sides", token.position,
                             len(token.text))
        raise QueryError('unmatched ")": no "(" opens it (quote a value that contains ")")',
                         token.position)

    def _nested(self, token):
        if token.kind == "NOT":
            self.i += 1
            if self.token.kind in ("END", ")", "OR", "AND"):
                raise QueryError(f'{token.text} needs a condition after it', token.position,
                                 len(token.text))
            return Not(self.unary(), token.position)
        if token.kind == "(":
            self.i += 1
            if self.token.kind == ")":
                raise QueryError("empty parentheses: put conditions inside", token.position, 2)
            if self.token.kind == "END":
                raise QueryError('missing ")" for this "("', token.position)
        node = self.or_()
        if self.token.kind != ")":
            raise QueryError('missing ")" for this "("', token.position)
        self.i += 1
        return node


def parse(text: str):
    """Parse a query into its syntax tree (``None`` for the empty query).

    :raises QueryError: for an invalid query.
    """
    if text is None:
        return None
    if not isinstance(text, str):
        raise QueryError("the query must be text")
    if len(text) > MAX_QUERY_LENGTH:
        raise QueryError(f"the query is too long: at most {MAX_QUERY_LENGTH:,} characters",
                         MAX_QUERY_LENGTH)
    if "\x00" in text:
        raise QueryError("the query contains a NUL character", text.index("\x00"))
    return _Parser(text).parse()


# -- values: what a condition's value means for its field ------------------------

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_DATE = re.compile(r"(\d{4})(?:[-.]?(\d{2})(?:[-.]?(\d{2}))?)?")
_TIME = re.compile(r"(\d{2})(?::?(\d{2})(?::?(\d{2})(\.\d{1,6})?)?)?")
_DICOM_RANGE = re.compile(r"([^-]*)-([^-]*)")


def _last_tag(field_: Field) -> int:
    return int(field_.tag_path.rsplit(".", 1)[-1], 16)


def _kind(field_: Field) -> str:
    """``number``, ``date``, ``time``, ``datetime``, ``text``, ``sequence``,
    ``binary`` or ``unknown`` (private: numbers and text both possible)."""
    vr = field_.vr
    if vr is None:
        return "unknown"
    if vr == "SQ":
        return "sequence"
    if vr in BINARY_VRS or _last_tag(field_) in BULK_TAGS:
        return "binary"
    if vr in NUMBER_VRS:
        return "number"
    return {"DA": "date", "TM": "time", "DT": "datetime"}.get(vr, "text")


def _number(text: str) -> float | None:
    if not _NUMBER.fullmatch(text):
        return None
    number = float(text)
    return number if number not in (float("inf"), float("-inf")) else None


def _date_period(text: str) -> tuple[float, float] | None:
    """A DA value as the numbers of its first and last day: ``20200131``,
    ``2020-01-31``, ``202001`` (a month), ``2020`` (a year)."""
    match = _DATE.fullmatch(text)
    if not match:
        return None
    year, month, day = match.groups()
    if day is not None:
        if not (1 <= int(month) <= 12 and 1 <= int(day) <= 31):
            return None
        value = float(year + month + day)
        return value, value
    if month is not None:
        if not 1 <= int(month) <= 12:
            return None
        return float(year + month + "01"), float(year + month + "31")
    return float(year + "0101"), float(year + "1231")


def _time_period(text: str) -> tuple[float, float] | None:
    """A TM value as its first and last instant: ``101500``, ``10:15``, ``10`` (an hour)."""
    match = _TIME.fullmatch(text)
    if not match:
        return None
    hours, minutes, seconds, fraction = match.groups()
    if int(hours) > 24 or (minutes and int(minutes) > 59) or (seconds and int(seconds) > 60):
        return None
    if seconds is not None:
        value = float(hours + minutes + seconds + (fraction or ""))
        return value, value
    if minutes is not None:
        return float(hours + minutes + "00"), float(hours + minutes + "59.999999")
    return float(hours + "0000"), float(hours + "5959.999999")


_EXPECTED = {
    "date": "a date such as 20200131, 2020-01-31, 202001 or 2020",
    "time": "a time such as 101500, 10:15 or 10",
    "number": "a number such as 2.5",
}


def _check_condition(c: Condition) -> Condition:
    """Refuse, at parse time, conditions that cannot mean anything."""
    kind = _kind(c.field)
    name = c.field.text
    if kind == "sequence":
        raise QueryError(f"{name} is a sequence: search a field inside it ({name}.KEYWORD=...) "
                         f"or use has:{name}", c.position, len(name))
    if kind == "binary":
        raise QueryError(f"{name} holds binary data, which is not indexed", c.position, len(name))
    wild = not c.quoted and ("*" in c.value or "?" in c.value)
    if wild and c.op not in ("=", "!=", "~="):
        raise QueryError(f'wildcards (* and ?) work with =, != and ~=, not with "{c.op}" '
                         "(quote the value to search for a literal * or ?)", c.value_position,
                         len(c.value))
    if c.op in ("<", "<=", ">", ">=") and kind in ("date", "time", "number"):
        period = _period(kind, c.value)
        if period is None:
            raise QueryError(f"{name} holds {kind}s: {c.op} needs {_EXPECTED[kind]}, "
                             f'not "{c.value}"', c.value_position, len(c.value) or 1)
    if c.op in ("=", "!=") and not c.quoted and not wild and kind in ("date", "time"):
        bounds = _DICOM_RANGE.fullmatch(c.value)
        if bounds and (bounds.group(1) or bounds.group(2)):
            low, high = bounds.groups()
            for part, offset in ((low, 0), (high, len(low) + 1)):
                if part and _period(kind, part) is None:
                    raise QueryError(f"{name} holds {kind}s: a range A-B needs {_EXPECTED[kind]} "
                                     f'on each side, not "{part}"', c.value_position + offset,
                                     len(part))
            if low and high and _period(kind, low)[0] > _period(kind, high)[1]:
                raise QueryError(f"the range {c.value} ends before it starts", c.value_position,
                                 len(c.value))
    return c


def _period(kind: str, text: str) -> tuple[float, float] | None:
    if kind == "date":
        return _date_period(text)
    if kind == "time":
        return _time_period(text)
    number = _number(text)
    return None if number is None else (number, number)


# -- dialect-specific matching -----------------------------------------------------


class _glob(FunctionElement):
    """``column`` matches a DICOM wildcard pattern: GLOB on SQLite (a prefix
    uses the index), LIKE elsewhere. Arguments: column, GLOB pattern, LIKE pattern."""

    # no Boolean type: SQLite would get "(... GLOB ...) = 1", which hides the
    # pattern's prefix from the planner
    inherit_cache = True
    name = "sendit_glob"


@compiles(_glob)
def _glob_like(element, compiler, **kw):
    column, _glob_pattern, like_pattern = list(element.clauses)
    return (f"({compiler.process(column, **kw)} LIKE {compiler.process(like_pattern, **kw)} "
            "ESCAPE '\\')")


@compiles(_glob, "sqlite")
def _glob_sqlite(element, compiler, **kw):
    column, glob_pattern, _like_pattern = list(element.clauses)
    return f"({compiler.process(column, **kw)} GLOB {compiler.process(glob_pattern, **kw)})"


class _in_set(FunctionElement):
    """``column`` is one of the ids a select lists. Arguments: column, the
    select as a scalar subquery.

    ``IN (subquery)`` on SQLite, which builds the set once. On PostgreSQL,
    ``= ANY(ARRAY(subquery))``: the set is built once too (an init plan), and
    the images are then fetched by their ids. With ``IN`` the planner turns the
    set into a semi-join, and for a sorted page (``ORDER BY id DESC LIMIT 50``)
    it walked the images from the newest, checking each against the set, on an
    estimate of how many match that it cannot know (the values are
    parameters): 150–370 ms for conditions matching a few hundred of 20,000
    images, 5–15 ms this way (bench/search.py).
    """

    inherit_cache = True
    name = "sendit_in_set"


@compiles(_in_set)
def _in_set_default(element, compiler, **kw):
    column, ids = list(element.clauses)
    return f"({compiler.process(column, **kw)} IN {compiler.process(ids, **kw)})"


@compiles(_in_set, "postgresql")
def _in_set_postgresql(element, compiler, **kw):
    column, ids = list(element.clauses)
    return f"({compiler.process(column, **kw)} = ANY(ARRAY{compiler.process(ids, **kw)}))"


class _lower(FunctionElement):
    """Unicode lower case: ``lower()`` on PostgreSQL; on SQLite (whose ``lower``
    knows only ASCII) the ``sendit_lower`` function registered below."""

    inherit_cache = True
    name = "sendit_lower"


@compiles(_lower)
def _lower_default(element, compiler, **kw):
    return f"lower({compiler.process(element.clauses, **kw)})"


@compiles(_lower, "sqlite")
def _lower_sqlite(element, compiler, **kw):
    return f"sendit_lower({compiler.process(element.clauses, **kw)})"


class _contains(FunctionElement):
    """``needle`` occurs in ``column`` (no pattern characters to escape)."""

    inherit_cache = True
    name = "sendit_contains"


@compiles(_contains)
def _contains_default(element, compiler, **kw):
    column, needle = list(element.clauses)
    return f"(strpos({compiler.process(column, **kw)}, {compiler.process(needle, **kw)}) > 0)"


@compiles(_contains, "sqlite")
def _contains_sqlite(element, compiler, **kw):
    column, needle = list(element.clauses)
    return f"(instr({compiler.process(column, **kw)}, {compiler.process(needle, **kw)}) > 0)"


class _ilike(FunctionElement):
    """``column`` matches a LIKE pattern ignoring case, for patterns of ASCII
    characters only: SQLite's own LIKE (ASCII case folding, in C, no function
    call per row); ``lower(column) LIKE pattern`` elsewhere (pattern lower case).
    Arguments: column, pattern."""

    inherit_cache = True
    name = "sendit_ilike"


@compiles(_ilike)
def _ilike_default(element, compiler, **kw):
    column, pattern = list(element.clauses)
    return (f"(lower({compiler.process(column, **kw)}) LIKE {compiler.process(pattern, **kw)} "
            "ESCAPE '\\')")


@compiles(_ilike, "sqlite")
def _ilike_sqlite(element, compiler, **kw):
    column, pattern = list(element.clauses)
    return f"({compiler.process(column, **kw)} LIKE {compiler.process(pattern, **kw)} ESCAPE '\\')"


def _sqlite_lower(value):
    return value.lower() if isinstance(value, str) else value


def register_sqlite_functions(dbapi_connection) -> None:
    """Add ``sendit_lower`` to a :mod:`sqlite3` connection (done for every pool)."""
    dbapi_connection.create_function("sendit_lower", 1, _sqlite_lower, deterministic=True)


def _is_sqlite(dbapi_connection) -> bool:
    return type(dbapi_connection).__module__.startswith("sqlite3")


@event.listens_for(Pool, "connect")
def _on_connect(dbapi_connection, record):
    if _is_sqlite(dbapi_connection):
        register_sqlite_functions(dbapi_connection)
        record.info["sendit_lower"] = True


@event.listens_for(Pool, "checkout")
def _on_checkout(dbapi_connection, record, proxy):
    # connections opened before this module was imported
    if not record.info.get("sendit_lower") and _is_sqlite(dbapi_connection):
        register_sqlite_functions(dbapi_connection)
        record.info["sendit_lower"] = True


def _glob_pattern(value: str) -> str:
    return "".join({"*": "*", "?": "?", "[": "[[]", "]": "[]]"}.get(c, c) for c in value)


def _like_pattern(value: str) -> str:
    out = []
    for char in value:
        if char == "*":
            out.append("%")
        elif char == "?":
            out.append("_")
        elif char in "%_\\":
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def _wildcard(column, value: str):
    """``column`` matches the DICOM pattern ``value`` (``*`` and ``?`` wildcards)."""
    return _glob(column, _glob_pattern(value), _like_pattern(value))


def _starts_with(column, prefix: str):
    """``column`` starts with the literal ``prefix`` (an index range too)."""
    glob = "".join({"*": "[*]", "?": "[?]", "[": "[[]", "]": "[]]"}.get(c, c) for c in prefix)
    like = "".join("\\" + c if c in "%_\\" else c for c in prefix)
    return _glob(column, glob + "*", like + "%")


# -- the engine -------------------------------------------------------------------
#
# Each condition is a few *branches*: predicates on the ``header_value`` rows of
# one field, a branch for the rows with a number (``value_num IS NOT NULL``, the
# numeric index) and one for the others (the text index). A query's AND picks
# one condition to *drive* -- the one most likely to match few images, judged
# from its field's VR and its operator -- and selects the image ids it matches
# with index range scans; each other condition is then *probed* per candidate
# image with a correlated EXISTS, a seek on the primary key (image_id, field_id)
# or on an index ending in image_id. OR is a UNION of drivers (or an OR of
# probes), NOT a NOT IN / NOT EXISTS.


def _field_id(field_: Field):
    return (select(HeaderField.id).where(HeaderField.tag_path == field_.tag_path)
            .scalar_subquery())


class _Branches:
    """The branches of one condition over ``hv`` (``HeaderValue`` or an alias)."""

    def __init__(self, field_: Field, hv):
        self.field = field_
        self.hv = hv
        self.parts: list = []

    def text(self, *conditions) -> "_Branches":
        self.parts.append(and_(self.hv.value_num.is_(None), *conditions))
        return self

    def number(self, *conditions) -> "_Branches":
        self.parts.append(and_(self.hv.value_num.is_not(None), *conditions))
        return self

    def rows(self, *conditions) -> "_Branches":
        """Every row of the field: the text rows, and the number rows when the
        field can have numbers."""
        self.text(*conditions)
        if _kind(self.field) not in ("text", "datetime"):
            self.number(*conditions)
        return self


def _is_wild(c: Condition) -> bool:
    return not c.quoted and ("*" in c.value or "?" in c.value)


def _text_equals(c: Condition, column):
    if c.value == "":
        return column.is_(None)
    if _is_wild(c):
        if c.value.strip("*") == "":
            return column.is_not(None)
        return _wildcard(column, c.value)
    return column == c.value


def _equals(c: Condition, hv) -> _Branches:
    """``=``: exact text, wildcards, numbers by value, DICOM date/time ranges."""
    b = _Branches(c.field, hv)
    kind = _kind(c.field)
    if c.value == "":
        return b.text(hv.value_text.is_(None))
    if _is_wild(c):
        if kind == "date":
            span = _date_prefix(c.value)
            if span is not None:  # 2020* is a range of the numeric index
                return b.number(hv.value_num.between(*span)).text(_text_equals(c, hv.value_text))
        return b.rows(_text_equals(c, hv.value_text))
    if kind in ("date", "time") and not c.quoted:
        low, high = _range_bounds(kind, c.value)
        if low is not None or high is not None:
            conditions = []
            if low is not None:
                conditions.append(hv.value_num >= low)
            if high is not None:
                conditions.append(hv.value_num <= high)
            return b.number(*conditions)
    if kind == "datetime" and not c.quoted:
        bounds = _DICOM_RANGE.fullmatch(c.value)
        if bounds and (bounds.group(1) or bounds.group(2)):
            low, high = bounds.groups()
            conditions = []
            if low:
                conditions.append(hv.value_text >= low)
            if high:
                conditions.append(hv.value_text < high + "~")
            return b.text(*conditions)
    if kind in ("number", "date", "time", "unknown"):
        period = _period("number" if kind == "unknown" else kind, c.value)
        if period is not None:
            b.number(hv.value_num == period[0] if period[0] == period[1]
                     else hv.value_num.between(*period))
            if kind == "unknown":  # a private element: a number, or text that looks like one
                b.text(hv.value_text == c.value)
            return b
    return b.text(hv.value_text == c.value)


def _date_prefix(value: str) -> tuple[float, float] | None:
    """``2020*`` / ``202001*`` as the numbers of a period of days, or ``None``."""
    match = re.fullmatch(r"(\d{1,8})\*", value)
    if not match:
        return None
    digits = match.group(1)
    scale = 10 ** (8 - len(digits))
    return float(int(digits) * scale), float((int(digits) + 1) * scale - 1)


def _range_bounds(kind: str, value: str) -> tuple[float | None, float | None]:
    """The bounds of a date or time value: one period, or a DICOM range ``A-B``
    (either side may be empty)."""
    bounds = _DICOM_RANGE.fullmatch(value)
    if bounds and (bounds.group(1) or bounds.group(2)):
        low, high = bounds.groups()
        return (_period(kind, low)[0] if low else None, _period(kind, high)[1] if high else None)
    period = _period(kind, value)
    return period if period is not None else (None, None)


def _compare(c: Condition, hv) -> _Branches:
    """``<``, ``<=``, ``>``, ``>=``: numbers, dates and times by value (a
    partial date is a period: ``<=2020`` includes all of 2020), text
    alphabetically."""
    b = _Branches(c.field, hv)
    kind = _kind(c.field)
    op = c.op
    if kind in ("date", "time", "number") or (kind == "unknown" and _number(c.value) is not None):
        low, high = _period("number" if kind == "unknown" else kind, c.value)
        column = hv.value_num
        return b.number({"<": column < low, "<=": column <= high, ">": column > high,
                         ">=": column >= low}[op])
    column, value = hv.value_text, c.value
    if kind == "datetime":  # a partial date-time is a period too
        condition = {"<": column < value, "<=": column < value + "~",
                     ">": column >= value + "~", ">=": column >= value}[op]
    else:
        condition = {"<": column < value, "<=": column <= value, ">": column > value,
                     ">=": column >= value}[op]
    return b.text(condition)


def _like_literal(text: str) -> str:
    return "".join("\\" + c if c in "%_\\" else c for c in text)


def _contains_ci(c: Condition, hv) -> _Branches:
    """``~``: the value occurs in the field's text, ignoring case. An ASCII
    value is a case-insensitive LIKE (SQLite's runs in C); any other goes
    through Unicode lower case on both sides."""
    b = _Branches(c.field, hv)
    if c.value == "":
        return b.rows(hv.value_text.is_not(None))
    needle = c.value.lower()
    if needle.isascii():
        return b.rows(_ilike(hv.value_text, f"%{_like_literal(needle)}%"))
    return b.rows(_contains(_lower(hv.value_text), needle))


def _equals_ci(c: Condition, hv) -> _Branches:
    """``~=``: equals ignoring case (wildcards allowed)."""
    b = _Branches(c.field, hv)
    if c.value == "":
        return b.text(hv.value_text.is_(None))
    value = c.value.lower()
    if value.isascii():
        pattern = _like_pattern(value) if _is_wild(c) else _like_literal(value)
        return b.rows(_ilike(hv.value_text, pattern))
    folded = Condition(c.field, "=", value, c.quoted, c.position, c.value_position)
    return b.rows(_text_equals(folded, _lower(hv.value_text)))


def _has(field_: Field, hv) -> _Branches:
    b = _Branches(field_, hv)
    kind = _kind(field_)
    if kind == "sequence":
        return b.number()
    b.text(hv.value_text.is_not(None))
    if kind not in ("text", "datetime"):
        b.number()
    return b


_BUILDERS = {"=": _equals, "!=": _equals, "~": _contains_ci, "~=": _equals_ci,
             "<": _compare, "<=": _compare, ">": _compare, ">=": _compare}


def _branches(node, hv) -> _Branches:
    if isinstance(node, Has):
        return _has(node.field, hv)
    return _BUILDERS[node.op](node, hv)


# -- which condition drives ----------------------------------------------------------

#: Lower is more selective. Guesses from the VR and the operator; the query
#: stays correct whatever is chosen, only its speed depends on it.
_SELECTIVE_TEXT_VRS = {"UI": 1.0, "PN": 2.0, "LO": 2.0, "SH": 2.0, "LT": 2.0, "ST": 2.0,
                       "UT": 2.0, "UC": 2.0, "UR": 2.0, "AE": 2.5, "CS": 5.0, "AS": 4.0,
                       "AT": 4.0}
NEVER = float("inf")


def _rank(node) -> float:
    """How few images ``node`` is expected to match (a rank, lower is fewer);
    ``NEVER`` for nodes that cannot drive (negations)."""
    if isinstance(node, Not):
        return NEVER
    if isinstance(node, InBatch):
        return 4.0
    if isinstance(node, Has):
        return 6.0
    if isinstance(node, And):
        return min(_rank(child) for child in node.nodes) - 0.1
    if isinstance(node, Or):
        return max(_rank(child) for child in node.nodes) + 0.5
    return _condition_rank(node)


def _condition_rank(c: Condition) -> float:
    if c.op == "!=":
        return NEVER
    if c.op in ("~", "~="):
        # reads every value of the field, but in one pass: cheaper than checking a
        # code string's many candidates one by one
        return 4.8
    kind = _kind(c.field)
    if c.op != "=":
        return 4.5
    if c.value == "":
        return 6.0
    if _is_wild(c):
        prefix = len(re.split(r"[*?]", c.value, maxsplit=1)[0])
        if prefix == 0:
            return 4.8  # every value of the field, in one pass
        if kind == "date" and _date_prefix(c.value):
            return 4.0
        return 2.5 if prefix >= 3 else 4.0
    if kind in ("date", "time"):
        low, high = _range_bounds(kind, c.value) if not c.quoted else (None, None)
        return 3.0 if low is not None and low == high else 4.0
    if kind == "number":
        return 3.5
    if kind in ("unknown", "datetime"):
        return 3.0
    return _SELECTIVE_TEXT_VRS.get(c.field.vr, 2.0)


# -- sets (drivers) and probes -----------------------------------------------------------


def _flatten(node):
    """Nested ANDs (or ORs) as one; ``A != v`` as ``NOT A = v``."""
    if isinstance(node, (And, Or)):
        kind = type(node)
        nodes = []
        for child in node.nodes:
            child = _flatten(child)
            nodes.extend(child.nodes if isinstance(child, kind) else [child])
        return kind(tuple(nodes))
    if isinstance(node, Not):
        return Not(_flatten(node.node), node.position)
    if isinstance(node, Condition) and node.op == "!=":
        return Not(Condition(node.field, "=", node.value, node.quoted, node.position,
                             node.value_position), node.position)
    return node


def _set(node):
    """A select of the image ids ``node`` matches, or ``None`` when it cannot
    be listed by itself (a negation)."""
    if isinstance(node, Not):
        return None
    if isinstance(node, InBatch):
        return _batch_ids(node)
    if isinstance(node, Or):
        sets = [_set(child) for child in node.nodes]
        if any(s is None for s in sets):
            return None
        return union(*[_flat(s) for s in sets])
    if isinstance(node, And):
        candidates = [child for child in node.nodes if _rank(child) < NEVER]
        if not candidates:
            return None
        driver = min(candidates, key=_rank)  # the first of equals
        # then the others, likeliest to fail first: a candidate's later checks are skipped
        others = sorted((child for child in node.nodes if child is not driver), key=_rank)
        ids = _set(driver)
        if isinstance(ids, CompoundSelect):
            sub = ids.subquery()
            return select(sub.c[0]).where(*[_probe(child, sub.c[0]) for child in others])
        column = ids.selected_columns[0]
        return ids.where(*[_probe(child, column) for child in others])
    hv = HeaderValue
    fid = _field_id(node.field)
    selects = [select(hv.image_id).where(hv.field_id == fid, part)
               for part in _branches(node, hv).parts]
    return selects[0] if len(selects) == 1 else union(*selects)


def _batch_ids(node: InBatch):
    """The ids of a batch's images (an alias: never correlated with the caller's image)."""
    image = aliased(Image)
    return select(image.id).where(image.batch_id == node.batch_id)


def _probe(node, column):
    """A condition on the image id ``column`` (a correlated EXISTS per candidate)."""
    if isinstance(node, Not):
        return ~_probe(node.node, column)
    if isinstance(node, And):
        return and_(*[_probe(child, column) for child in node.nodes])
    if isinstance(node, Or):
        return or_(*[_probe(child, column) for child in node.nodes])
    if isinstance(node, InBatch):
        if column is Image.__table__.c.id:
            return Image.batch_id == node.batch_id
        return column.in_(_batch_ids(node))
    hv = aliased(HeaderValue)
    parts = _branches(node, hv).parts
    found = exists().where(hv.image_id == column, hv.field_id == _field_id(node.field),
                           parts[0] if len(parts) == 1 else or_(*parts))
    # "IS TRUE" (a no-op) keeps PostgreSQL from turning the check into a join:
    # it cannot tell how many rows a field's value has (the field id is a
    # parameter), and on such guesses chose nested loops that took seconds;
    # checked per candidate it is one index seek, as on SQLite
    return found.is_(true())


def _flat(selectable):
    """A compound select made usable inside another compound (SQLite forbids
    parentheses around compound members)."""
    if isinstance(selectable, CompoundSelect):
        sub = selectable.subquery()
        return select(sub.c[0])
    return selectable


def image_filter(text: str | None) -> ColumnElement[bool]:
    """The SQLAlchemy condition on :class:`~sendit_core.models.Image` for a query.

    Use it as ``select(Image).where(image_filter(text))``. The empty query
    (``""`` or only spaces) matches every image.

    :raises QueryError: for an invalid query; ``str(exc)`` says what is wrong
        and where, ``exc.position`` is the 0-based offset of the problem.
    """
    tree = parse(text)
    if tree is None:
        return true()
    tree = _flatten(tree)
    ids = _set(tree)
    if ids is not None:
        return _in_set(Image.__table__.c.id, ids.scalar_subquery())
    if isinstance(tree, Not):
        ids = _set(tree.node)
        if ids is not None:
            # NOT IN: a hashed set on both databases (PostgreSQL would scan
            # an array once per image)
            return Image.id.not_in(ids)
    return _probe(tree, Image.__table__.c.id)


# -- helpers for search pages and tools ------------------------------------------------


def resolve_field(text: str) -> Field:
    """The field a query would mean by ``text`` (``PatientID``, ``(0010,0020)``,
    ``00100020``, ``ReferencedImageSequence.ReferencedSOPInstanceUID``).

    :raises QueryError: for an unknown keyword or a malformed tag.
    """
    text = (text or "").strip()
    if not text:
        raise QueryError("no field given", 0)
    if not _FIELD.fullmatch(text):
        raise QueryError(f'bad field "{text}": write a keyword (PatientID), a tag ((0010,0020)) '
                         "or a sequence path", 0, len(text))
    return _resolve_field(text, 0)


def field_text(tag_path: str, keyword_path: str) -> str:
    """How to write the field stored as ``tag_path`` / ``keyword_path`` in a
    query: its keyword path when that means the same element, else its tags
    (private elements, repeating groups such as overlays in group 6002)."""
    try:
        if _resolve_field(keyword_path, 0).tag_path == tag_path:
            return keyword_path
    except QueryError:
        pass
    return ".".join(f"({part[:4]},{part[4:]})" for part in tag_path.split("."))


@dataclass(frozen=True)
class PresentField:
    """A field some stored image has: how to write it, its VR and its names."""

    text: str
    keyword_path: str
    tag_path: str
    vr: str
    private_creator: str | None


def present_fields(db) -> list[PresentField]:
    """Every field at least one stored image has a row for, by keyword path."""
    hv = aliased(HeaderValue)
    rows = db.execute(
        select(HeaderField.tag_path, HeaderField.keyword_path, HeaderField.vr,
               HeaderField.private_creator)
        .where(or_(
            exists().where(hv.field_id == HeaderField.id, hv.value_num.is_(None)),
            exists().where(hv.field_id == HeaderField.id, hv.value_num.is_not(None))))
        .order_by(HeaderField.keyword_path, HeaderField.tag_path)).all()
    return [PresentField(field_text(r.tag_path, r.keyword_path), r.keyword_path, r.tag_path,
                         r.vr, r.private_creator) for r in rows]


def suggest_values(db, field: str, prefix: str = "", limit: int = 20) -> list[str]:
    """Distinct stored values of ``field`` starting with ``prefix`` (case
    sensitive), in order, at most ``limit``: index range scans only.

    :raises QueryError: when ``field`` is not a field.
    """
    field_ = resolve_field(field)
    kind = _kind(field_)
    if kind in ("sequence", "binary"):
        return []
    hv = HeaderValue
    fid = _field_id(field_)
    match = hv.value_text.is_not(None) if not prefix else _starts_with(hv.value_text, prefix)
    text_rows = (select(hv.value_text).where(hv.field_id == fid, hv.value_num.is_(None), match)
                 .distinct().order_by(hv.value_text).limit(limit))
    values = list(db.scalars(text_rows))
    if kind not in ("text", "datetime") and len(values) < limit:
        number_rows = (select(hv.value_text, hv.value_num)
                       .where(hv.field_id == fid, hv.value_num.is_not(None), match)
                       .distinct().order_by(hv.value_num).limit(limit))
        values += [row.value_text for row in db.execute(number_rows)]
        values = list(dict.fromkeys(values))[:limit]
    return values

