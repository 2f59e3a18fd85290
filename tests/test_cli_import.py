"""`sendit import`: in-process or through workers, with a summary and honest exit codes."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sendit_example
from sqlalchemy import select

from sendit_core.models import Batch, BatchStatus
from sendit_core.testing import broker_settings, write_ini

SENDIT = str(Path(sys.executable).parent / "sendit")


def run(*args, timeout=60):
    return subprocess.run([SENDIT, *map(str, args)], capture_output=True, text=True, timeout=timeout)


class Ini(type(Path())):
    app = None


@pytest.fixture
def ini(make_app, make_settings, tmp_path):
    path = Ini(write_ini(tmp_path / "app.ini", make_settings()))
    path.app = make_app(builtins=(), plugins=[sendit_example])
    return path


@pytest.fixture
def folder(tmp_path):
    src = tmp_path / "scan-0042"
    src.mkdir()
    for i in range(6):
        (src / f"{i}.ex").write_bytes(sendit_example.MAGIC + f"uid=1.2.{i}\n".encode())
    return src


def batches(ini):
    with ini.app.registry["dbsession_factory"]() as db:
        return db.scalars(select(Batch).order_by(Batch.id)).all()


def test_import_now_prints_a_summary(ini, folder):
    out = run("import", ini, folder, "--now")
    assert out.returncode == 0, out.stderr
    assert "imported 6, duplicates 0, errors 0 in" in out.stdout
    assert "files/s" in out.stdout and "MB/s" in out.stdout
    assert "batch 'scan-0042' (id 1) is DONE" in out.stdout
    (batch,) = batches(ini)
    assert (batch.name, batch.source, batch.image_count) == ("scan-0042", "cli", 6)


def test_import_again_into_the_same_batch_adds_nothing(ini, folder):
    run("import", ini, folder, "--now")
    out = run("import", ini, folder, "--now", "--batch-id", 1, "-q")
    assert out.returncode == 0
    assert "imported 0, duplicates 6, errors 0" in out.stdout
    assert batches(ini)[0].image_count == 6


def test_files_with_errors_give_exit_code_3(ini, folder):
    (folder / "junk.bin").write_bytes(b"\x00" * 10)
    out = run("import", ini, folder, "--now", "--batch", "named")
    assert out.returncode == 3
    assert "imported 6, duplicates 0, errors 1" in out.stdout
    assert "1 file(s) could not be imported" in out.stderr
    assert batches(ini)[0].name == "named"


def test_queue_for_workers(ini, folder):
    out = run("import", ini, folder)
    assert out.returncode == 0
    assert "queued 6 file(s) in batch 1 (1 job(s))" in out.stdout
    assert "is pserve running?" in out.stdout
    assert batches(ini)[0].status is BatchStatus.QUEUED


def test_wait_follows_a_worker_until_done(make_app, make_settings, broker_url, folder, tmp_path):
    overrides = broker_settings(broker_url)
    make_app(builtins=(), plugins=[sendit_example], settings=overrides)  # creates the database
    ini = write_ini(tmp_path / "app.ini", make_settings(overrides))
    worker = subprocess.Popen([SENDIT, "worker", str(ini)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        out = run("import", ini, folder, "--wait", "-q")
    finally:
        worker.terminate()
        worker.wait(15)
    assert out.returncode == 0, out.stderr
    assert "imported 6, errors 0" in out.stdout and "is DONE" in out.stdout


@pytest.mark.parametrize("args, message", [
    (["/no/such/folder"], "no such file or folder: /no/such/folder"),
    (["FOLDER", "--batch-id", "42"], "there is no batch 42"),
])
def test_clear_errors(ini, folder, args, message):
    args = [str(folder) if a == "FOLDER" else a for a in args]
    out = run("import", ini, *args, "--now")
    assert out.returncode == 1 and message in out.stderr and "Traceback" not in out.stderr


def test_an_uninitialised_database_says_what_to_do(tmp_path, folder):
    ini = write_ini(tmp_path / "fresh.ini", {"sqlalchemy.url": f"sqlite:///{tmp_path}/new.sqlite",
                                            "sendit.lockdown.password": "pw"})
    out = run("import", ini, folder, "--now")
    assert out.returncode == 1 and f"has no sendit tables yet; run 'sendit initdb {ini}' first" in out.stderr
    assert "Traceback" not in out.stderr


def test_parallel_import_processes_share_the_jobs(make_app, make_settings, folder, tmp_path):
    overrides = {"sendit.import.job_size": "2", "sendit.worker.commit_every": "1"}
    app = make_app(builtins=(), plugins=[sendit_example], settings=overrides)
    ini = write_ini(tmp_path / "app.ini", make_settings(overrides))
    (folder / "junk.bin").write_bytes(b"\x00" * 10)
    out = run("import", ini, folder, "--now", "--processes", 3)
    assert out.returncode == 3, out.stderr
    assert "imported 6, duplicates 0, errors 1" in out.stdout
    with app.registry["dbsession_factory"]() as db:
        (batch,) = db.scalars(select(Batch)).all()
        assert (batch.image_count, batch.error_count, batch.status) == (6, 1, BatchStatus.DONE)


def test_the_command_leaves_the_sqlite_database_whole(make_settings, folder, tmp_path):
    """The command exits without the interpreter's last garbage collection, so
    its engine closes the connections itself: SQLite folds the write-ahead log
    back into the database file, which alone then holds the batch."""
    database = tmp_path / "own.sqlite"
    ini = write_ini(tmp_path / "own.ini", make_settings({
        "sqlalchemy.url": f"sqlite:///{database}", "sendit.plugins.disabled": ""}))
    assert run("initdb", ini).returncode == 0
    out = run("import", ini, folder, "--now", "-q")
    assert out.returncode == 0, out.stderr
    assert not Path(f"{database}-wal").exists() and not Path(f"{database}-shm").exists()
    import sqlite3

    with sqlite3.connect(database) as db:  # the file alone, as a backup would copy it
        assert db.execute("select count(*) from image").fetchone() == (6,)


def test_commands_start_without_the_web_framework(make_settings, tmp_path):
    """Reading the ini file and loading every plugin, which each command does
    first, imports no web framework, no PostgreSQL driver and no broker client:
    together they were half of the command's start-up, and an import pays it
    every time."""
    ini = write_ini(tmp_path / "app.ini", make_settings())
    script = ("import sys\n"
              "from sendit_core.cli import read_ini\n"
              f"read_ini({str(ini)!r}, setup_logging=False)\n"
              "print(' '.join(sorted(m for m in ('pyramid', 'webob', 'zope.sqlalchemy', 'psycopg',"
              " 'cornice', 'jinja2', 'kombu') if m in sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    imported = set(out.stdout.split())
    if "postgresql" in make_settings()["sqlalchemy.url"]:
        imported.discard("psycopg")  # the database's own driver, when the tests run on PostgreSQL
    assert imported == set()


def test_an_import_in_process_loads_no_broker_client(make_settings, tmp_path):
    """``sendit import --now`` sends no message: kombu, 0.05 s of its start-up, stays unloaded."""
    ini = write_ini(tmp_path / "app.ini", make_settings())
    (tmp_path / "empty").mkdir()
    script = ("import sys\n"
              "from sendit_core.cli import main\n"
              f"assert main(['initdb', {str(ini)!r}]) == 0\n"
              f"assert main(['import', {str(ini)!r}, {str(tmp_path / 'empty')!r}, '--now', '-q']) == 0\n"
              "print('kombu' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "False"


@pytest.mark.parametrize("given, expected", [(None, "1"), ("4", "4")])
def test_the_command_keeps_numpy_to_one_blas_thread(given, expected):
    """OpenBLAS's thread pool, started when pydicom imports numpy, spins on the
    other cores for nothing: the console script asks for none before numpy is
    imported, unless the environment already says how many."""
    script = ("import os, sys\n"
              "from sendit_core import cli\n"
              "cli.main = lambda: print(os.environ.get('OPENBLAS_NUM_THREADS'), 'numpy' in sys.modules) or 0\n"
              "cli.run()\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if given:
        env["OPENBLAS_NUM_THREADS"] = given
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [expected, "False"]
