"""The sendit command: clear errors, exit codes scripts can trust."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from sendit_core.cli import main

ROOT = Path(__file__).parent.parent


def write_ini(tmp_path, body="", **keys):
    lines = ["[app:main]", "use = egg:sendit", "sqlalchemy.url = sqlite:///var/db.sqlite",
             "sendit.lockdown.password = pw"]
    lines += [f"{k.replace('__', '.')} = {v}" for k, v in keys.items()]
    ini = tmp_path / "app.ini"
    ini.write_text("\n".join(lines) + "\n" + body)
    return ini


def test_initdb_creates_the_schema_relative_to_the_ini(tmp_path, capsys, monkeypatch):
    ini = write_ini(tmp_path)
    monkeypatch.chdir("/")
    assert main(["initdb", str(ini)]) == 0
    assert "schema revision" in capsys.readouterr().out
    tables = inspect(create_engine(f"sqlite:///{tmp_path}/var/db.sqlite")).get_table_names()
    assert {"batch", "image", "header_field", "header_value", "ingest_error"} <= set(tables)
    assert main(["initdb", str(ini)]) == 0  # upgrading an up-to-date schema is fine


def test_missing_ini_is_named(tmp_path, capsys):
    assert main(["initdb", str(tmp_path / "nope.ini")]) == 1
    err = capsys.readouterr().err
    assert "nope.ini does not exist" in err and "Traceback" not in err


def test_a_folder_is_not_an_ini(tmp_path, capsys):
    assert main(["initdb", str(tmp_path)]) == 1
    assert "is not a file" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    ("this is not an ini file\n", "cannot read"),
    ("[server:main]\nuse = egg:waitress#main\n", "cannot read"),
])
def test_broken_ini_is_named(tmp_path, capsys, content, message):
    ini = tmp_path / "broken.ini"
    ini.write_text(content)
    assert main(["initdb", str(ini)]) == 1
    err = capsys.readouterr().err
    assert message in err and "broken.ini" in err and "Traceback" not in err


def test_bad_value_names_the_key(tmp_path, capsys):
    ini = write_ini(tmp_path, sendit__worker="sometimes")
    assert main(["initdb", str(ini)]) == 1
    assert "sendit.worker = 'sometimes': expected one of: thread, external" in capsys.readouterr().err


def test_unreachable_database_is_a_clear_error(tmp_path, capsys):
    ini = write_ini(tmp_path)
    text = ini.read_text().replace("sqlite:///var/db.sqlite",
                                   "postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")
    ini.write_text(text)
    assert main(["initdb", str(ini)]) == 1
    err = capsys.readouterr().err
    assert "cannot reach or upgrade the database" in err and "Traceback" not in err


def test_production_ini_with_placeholders_refuses_to_start(tmp_path, capsys):
    ini = tmp_path / "production.ini"
    shutil.copy(ROOT / "production.ini", ini)
    assert main(["initdb", str(ini)]) == 1
    err = capsys.readouterr().err
    assert "sendit.lockdown.password: still the placeholder" in err
    assert "sendit.session.secret: still the placeholder" in err


def test_production_ini_refuses_to_serve_too():
    from pyramid.paster import get_app

    from sendit_core.settings import SettingsError

    with pytest.raises(SettingsError, match="still the placeholder"):
        get_app(str(ROOT / "production.ini"))


SENDIT = str(Path(sys.executable).parent / "sendit")


def run(*args):
    return subprocess.run([SENDIT, *args], capture_output=True, text=True)


def test_help_and_usage_errors():
    out = run("--help")
    assert out.returncode == 0 and "initdb" in out.stdout
    out = run("initdb", "--help")
    assert out.returncode == 0 and "ini file" in out.stdout
    out = run()
    assert out.returncode == 2 and "COMMAND" in out.stderr
    out = run("initdb", "/no/such.ini")
    assert out.returncode == 1 and "does not exist" in out.stderr and "Traceback" not in out.stderr


def test_development_ini_is_valid(tmp_path):
    from pyramid.paster import get_appsettings

    from sendit_core.app import load_config

    raw = dict(get_appsettings(str(ROOT / "development.ini")))
    settings, pm = load_config(raw)
    assert settings["sendit.worker"] == "thread"
    assert settings["sendit.data_dir"] == ROOT / "var" / "data"


def test_the_server_refuses_to_start_on_a_database_without_the_schema(tmp_path):
    """With ``sendit.db.auto_create = false`` (production) the web app checks
    the schema instead of creating it: on a database nobody initialised it stops
    at once with what to run, instead of answering every request with a 500."""
    ini = write_ini(tmp_path, "\n[server:main]\nuse = egg:waitress#main\nlisten = 127.0.0.1:0\n",
                    sendit__db__auto_create="false", sendit__worker="external")
    pserve = Path(sys.executable).parent / "pserve"
    out = subprocess.run([str(pserve), str(ini)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert (f"sendit cannot start: the database sqlite:///{tmp_path}/var/db.sqlite has no sendit "
            f"tables yet; run 'sendit initdb {ini}' first") in out.stderr
    assert "Traceback" not in out.stderr
    assert main(["initdb", str(ini)]) == 0  # what the message says to do is enough
    from sendit_core import main as app_factory

    settings = {"sqlalchemy.url": f"sqlite:///{tmp_path}/var/db.sqlite", "sendit.lockdown.password": "pw",
                "sendit.db.auto_create": "false", "sendit.worker": "external",
                "sendit.var_dir": str(tmp_path / "var")}
    app = app_factory({"__file__": str(ini), "here": str(tmp_path)}, **settings)
    assert app.registry.settings["sendit._ini_file"] == str(ini)
    app.registry.settings["sendit.engine"].dispose()
