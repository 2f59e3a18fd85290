"""A short, bounded run of bench/load.py: uploaders and API readers against a
live waitress and two workers on PostgreSQL + the broker. No request may fail
and every uploaded file must be imported (the script exits non-zero if not).
The full run (60 s, 8 uploaders, 16 readers) and its figures: docs/performance.md."""
import os
import subprocess
import sys
from pathlib import Path

from sendit_core.testing import skip_or_fail

ROOT = Path(__file__).resolve().parent.parent


def test_a_short_load_run_fails_no_request_and_imports_every_upload(tmp_path):
    db, broker = os.environ.get("SENDIT_TEST_DATABASE_URL"), os.environ.get("SENDIT_TEST_BROKER_URL")
    if not db or not broker:
        skip_or_fail("the load test needs SENDIT_TEST_DATABASE_URL and SENDIT_TEST_BROKER_URL")
    env = {**os.environ, "SENDIT_BENCH_DATABASE_URL": db, "SENDIT_BENCH_BROKER_URL": broker}
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "load.py"), "--seconds", "6", "--uploaders", "2",
         "--readers", "4", "--files-per-upload", "5", "--corpus-files", "200",
         "--corpus-dir", str(tmp_path / "corpus")],
        env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "failed: 0" in result.stdout
    uploaded = [line for line in result.stdout.splitlines() if line.strip().startswith("uploaded")]
    assert uploaded and int(uploaded[0].split()[1]) > 0, result.stdout
