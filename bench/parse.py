"""Per-file parse time of the pydicom parser plugin.

Times ``sendit_pydicom.parse`` (the fast reader, which takes these files)
and the pydicom path alone (``parse_with_pydicom``, what every file took
before the fast reader, and still takes when the fast reader leaves it) on a
generated CT-like file (512 x 512 int16 pixels, about 80 header elements, a
few sequences and private tags), on a generated 64 x 64 file (the ingest
benchmark's size) and on pydicom's ``CT_small.dcm``, next to a bare
``pydicom.dcmread`` without pixel data for scale. Prints the mean and the 95th
percentile per file. The fast reader is timed twice: parsing the same file
again and again, it finds every value decoded already (the best case, close
to a series' next slice), so it is timed again with its memory of decoded
values emptied before each call (a file unlike any before).

    .venv/bin/python bench/parse.py [--runs 500]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file

from sendit_core.synth import SeriesSpec, write_series
from sendit_pydicom import fast, parse
from sendit_pydicom.parser import parse_with_pydicom


def timings(func: Callable[[Path], object], path: Path, runs: int) -> list[float]:
    """Seconds per call of ``func(path)``, after a few warm-up calls."""
    for _ in range(5):
        func(path)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        func(path)
        times.append(time.perf_counter() - start)
    return times


def report(label: str, times: list[float]) -> None:
    times = sorted(times)
    p95 = times[int(len(times) * 0.95) - 1]
    print(f"  {label:<34} mean {statistics.fmean(times) * 1e3:6.3f} ms   "
          f"p95 {p95 * 1e3:6.3f} ms")


def bare_pydicom(path: Path) -> object:
    return pydicom.dcmread(path, stop_before_pixels=True)


def parse_first_sight(path: Path) -> object:
    fast.forget_values()
    return parse(path)


def bench_file(name: str, path: Path, runs: int) -> None:
    parsed = parse(path)
    assert parsed == parse_with_pydicom(path), "the two paths disagree"
    print(f"{name}: {path.stat().st_size / 1024:.0f} KiB, {len(parsed.elements)} rows")
    report("sendit_pydicom.parse (fast reader)", timings(parse, path, runs))
    report("  the same, values not remembered", timings(parse_first_sight, path, runs))
    report("parse_with_pydicom (pydicom path)", timings(parse_with_pydicom, path, runs))
    report("pydicom.dcmread (no pixels) alone", timings(bare_pydicom, path, runs))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500, help="timed calls per file")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # pydicom's warnings about odd test files
    with tempfile.TemporaryDirectory() as tmp:
        (ct,) = write_series(Path(tmp) / "ct", SeriesSpec(slices=1, rows=512, columns=512))
        bench_file("generated CT 512x512", ct, args.runs)
        (small,) = write_series(Path(tmp) / "small", SeriesSpec(slices=1, rows=64, columns=64))
        bench_file("generated 64x64", small, args.runs)
    bench_file("CT_small.dcm", Path(get_testdata_file("CT_small.dcm")), args.runs)


if __name__ == "__main__":
    main()
