"""production.ini for real: PostgreSQL, the external broker, gunicorn's server
processes, a separate worker process, log files, secure cookies and the security headers.

Runs against ``SENDIT_TEST_DATABASE_URL`` and ``SENDIT_TEST_BROKER_URL`` (CI
sets both; elsewhere the test skips with the reason).
"""
import base64
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from sqlalchemy import create_engine, make_url, text

from sendit_core.testing import skip_or_fail

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PASSWORD = "correct horse battery staple"
FILES = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "JPEG2000.dcm"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def services():
    db, broker = os.environ.get("SENDIT_TEST_DATABASE_URL"), os.environ.get("SENDIT_TEST_BROKER_URL")
    if not db or not broker:
        skip_or_fail("production.ini needs SENDIT_TEST_DATABASE_URL and SENDIT_TEST_BROKER_URL")
    url = make_url(db)
    name = f"sendit_prod_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001
        skip_or_fail(f"cannot create a database on {url.render_as_string()}: {exc}")
    yield url.set(database=name).render_as_string(hide_password=False), broker
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def deployment(services, tmp_path):
    """production.ini as shipped, with only its paths, services and port moved."""
    db_url, broker_url = services
    port = free_port()
    text_ = (ROOT / "production.ini").read_text()
    for old, new in (("postgresql+psycopg://sendit@127.0.0.1/sendit", db_url.replace("%", "%%")),
                     ("amqp://guest:guest@127.0.0.1:5672//", broker_url),
                     ("/var/lib/sendit", str(tmp_path / "lib")),
                     ("/var/log/sendit", str(tmp_path / "log")),
                     ("/run/sendit", str(tmp_path / "run")),
                     ("bind = 127.0.0.1:6543", f"bind = 127.0.0.1:{port}")):
        assert old in text_, f"production.ini no longer has {old!r}"
        text_ = text_.replace(old, new)
    text_ = text_.replace("sendit.broker_url", f"sendit.broker.queue = sendit.prod.{uuid.uuid4().hex[:8]}\n"
                          "sendit.broker_url", 1)
    ini = tmp_path / "production.ini"
    ini.write_text(text_)
    (tmp_path / "log").mkdir()
    env = {**os.environ, "SENDIT_LOCKDOWN_PASSWORD": PASSWORD,
           "SENDIT_SESSION_SECRET": "s" * 48}
    processes = []

    def start(*args):
        process = subprocess.Popen([str(BIN / args[0]), *args[1:]], env=env, cwd=tmp_path,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        processes.append(process)
        return process

    def run(*args):
        return subprocess.run([str(BIN / "sendit"), *args], env=env, capture_output=True,
                               text=True, timeout=120)

    yield type("Deployment", (), {"ini": ini, "url": f"http://127.0.0.1:{port}", "start": start,
                                  "run": run, "log": tmp_path / "log" / "sendit.log",
                                  "tmp": tmp_path})
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def get(url, path, password=None, headers=None):
    """GET without following redirects: (status, headers, body)."""
    host, port = url.split("//")[1].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = dict(headers or {})
    if password:
        headers["Authorization"] = "Basic " + base64.b64encode(f"api:{password}".encode()).decode()
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.headers, response.read().decode()
    finally:
        connection.close()


def wait_for(predicate, timeout=60, what="it"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_production_ini_serves_imports_and_logs_on_postgresql_and_the_broker(deployment):
    d = deployment
    refused = d.run("initdb", str(d.ini))
    assert refused.returncode == 0, refused.stderr

    web = d.start("pserve", str(d.ini))
    worker = d.start("sendit", "worker", str(d.ini))

    def answering():
        try:
            return get(d.url, "/login")[0] == 200
        except OSError:
            assert web.poll() is None, web.stdout.read()
            return False

    wait_for(answering, what="the server to answer")

    def server_processes():
        return subprocess.run(["ps", "--ppid", str(web.pid), "-o", "pid="], capture_output=True,
                              text=True).stdout.split()

    # production.ini's workers: one server process per core (each starts on its own time)
    wait_for(lambda: len(server_processes()) == 2, what="two server processes")

    # the lockdown, cookies and headers of a production deployment
    status, headers, _ = get(d.url, "/")
    assert status in (302, 303) and "/login" in headers["Location"]
    status, headers, _ = get(d.url, "/login")
    assert "Strict-Transport-Security" in headers and "unsafe-inline" not in headers[
        "Content-Security-Policy"]
    assert not any(c.isdigit() for c in headers.get("Server", "")), headers  # no version told
    assert get(d.url, "/", password="wrong")[0] in (302, 303, 401)

    folder = d.tmp / "scan-0001"
    folder.mkdir()
    for name in FILES:
        shutil.copy(get_testdata_file(name), folder / name)
    (folder / "notes.txt").write_text("not DICOM")
    queued = d.run("import", str(d.ini), str(folder), "--wait")
    assert queued.returncode == 3, queued.stdout + queued.stderr  # some files failed
    assert f"imported {len(FILES)}, errors 1" in queued.stdout

    status, _, html = get(d.url, "/", password=PASSWORD)
    assert status == 200 and "scan-0001" in html
    # every server process reads the new batch (each has a pool of its own, none the parent's)
    for _ in range(20):
        status, _, body = get(d.url, "/api/batches?name=scan-0001", password=PASSWORD)
        assert status == 200 and '"count":1' in body.replace(" ", ""), body

    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    web.send_signal(signal.SIGTERM)
    web.wait(30)

    log = d.log.read_text()  # one file, every process, each line with its pid
    lines = [line.split(None, 4) for line in log.splitlines() if line[:4].isdigit()]
    by_pid = {fields[3]: fields[4] for fields in lines}
    assert {str(web.pid), str(worker.pid)} <= set(by_pid), log
    assert f"job 1: {len(FILES)} imported, 0 duplicates, 1 errors" in log
    assert "failed login from 127.0.0.1" in log
