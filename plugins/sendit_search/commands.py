"""``sendit query INI 'QUERY'``: the search page's query on the command line.

Exit codes: 0 success (also when nothing matches), 1 the command failed (the
ini file, the database), 2 the query is invalid (the message points at the
problem) or the options are.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

from sendit_core.cli import CommandError, read_ini
from sendit_core.query import QueryError, image_filter

from . import results

#: exit code for an invalid query (argparse's code for bad usage)
EXIT_BAD_QUERY = 2
TABLE_FIELDS = ("id", "batch_id", "modality", "PatientID", "PatientName", "StudyDate",
                "SeriesNumber", "instance_number", "sop_instance_uid")


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser(
        "query", help="search the stored images by header fields and values",
        description="Search the stored images with the query language of the search page "
                    "(docs/search.md), e.g. sendit query development.ini 'Modality=CT "
                    "StudyDate>=20200101'. Exit codes: 0 success (even with no match), "
                    "1 the command failed, 2 an invalid query.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("ini", help="the ini file, e.g. development.ini")
    parser.add_argument("query", help="the query; quote it for the shell ('' matches every image)")
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table",
                        help="output format (default: table)")
    parser.add_argument("--limit", type=_limit, metavar="N",
                        help="at most N images (default: all)")
    parser.add_argument("--count", action="store_true",
                        help="print only how many images match (with --group: per group)")
    parser.add_argument("--group", choices=("series", "study", "batch"),
                        help="list the groups of the matching images with their counts")
    parser.add_argument("--sort", choices=sorted(results.IMAGE_SORTS), default="imported",
                        help="order of the images (default: imported, the import order)")
    parser.add_argument("--desc", action="store_true", help="sort in descending order")
    parser.set_defaults(func=cmd_query)


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("expected 1 or more")
    return value


def cmd_query(args: argparse.Namespace) -> int:
    try:
        cond = image_filter(args.query)
    except QueryError as exc:
        print(f"sendit query: error: invalid query: {exc}", file=sys.stderr)
        print(_indent(exc.pointer(args.query)), file=sys.stderr)
        return EXIT_BAD_QUERY
    settings, _pm = read_ini(args.ini)
    from sqlalchemy.exc import SQLAlchemyError

    from sendit_core.models import get_engine, get_session_factory

    engine = get_engine(settings)
    try:
        with get_session_factory(engine)() as db:
            return _output(args, db, cond, Path(settings["sendit.storage_dir"]))
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise CommandError(f"cannot search the database ({reason}); is it ready? "
                           "(sendit initdb INI)") from None
    except BrokenPipeError:  # sendit query ... | head
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    finally:
        engine.dispose()


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def _output(args, db, cond, storage: Path) -> int:
    out = sys.stdout
    if args.group:
        rows = [{"key": g.key, "images": g.images,
                 **({"name": g.details["name"]} if args.group == "batch" else {})}
                for g in results.groups(db, cond, args.group, "count", True, 0,
                                        args.limit or 10**12)]
        if args.count:
            rows = [{"groups": len(rows), "images": sum(r["images"] for r in rows)}]
        _write(out, args.format, rows, list(rows[0]) if rows else ["key", "images"])
        return 0
    if args.count:
        total = results.count(db, cond)
        shown = min(total, args.limit) if args.limit else total
        if args.format == "json":
            out.write(json.dumps({"count": shown}) + "\n")
        elif args.format == "csv":
            out.write(f"count\r\n{shown}\r\n")
        else:
            out.write(f"{shown}\n")
        return 0
    rows = results.iter_rows(db, cond, args.sort, args.desc, limit=args.limit)
    dicts = (dict(row.as_dict(), path=str(storage / row.stored_path)) for row in rows)
    fields = [*results.ROW_FIELDS, "path"]
    if args.format == "table":
        count = _table(out, dicts, TABLE_FIELDS)
        out.write(f"({count:,} image{'s' if count != 1 else ''})\n")
    else:
        _write(out, args.format, dicts, fields)
    return 0


def _write(out, fmt: str, rows, fields: list[str]) -> None:
    if fmt == "json":
        out.write("[")
        for number, row in enumerate(rows):
            out.write(("," if number else "") + "\n" + json.dumps(row, ensure_ascii=False))
        out.write("\n]\n")
    elif fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    else:
        _table(out, rows, fields)


def _table(out, rows, fields, chunk: int = 500) -> int:
    """Aligned columns, widths taken from the first ``chunk`` rows (streams the rest)."""
    rows = iter(rows)
    first = [row for _, row in zip(range(chunk), rows)]
    cells = lambda row: ["" if row.get(f) is None else str(row.get(f)) for f in fields]  # noqa: E731
    widths = [len(f) for f in fields]
    for row in first:
        widths = [max(w, len(c)) for w, c in zip(widths, cells(row))]
    widths = [min(w, 64) for w in widths]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()  # noqa: E731
    out.write(line(list(fields)) + "\n")
    out.write(line(["-" * w for w in widths]) + "\n")
    count = 0
    for row in first:
        out.write(line(cells(row)) + "\n")
        count += 1
    for row in rows:
        out.write(line(cells(row)) + "\n")
        count += 1
    return count
