"""One test per hookspec (the meta-test below keeps it so), mostly through the
third-party example plugin installed from tests/plugin_pkg."""
import inspect
from pathlib import Path

import pytest
import sendit_example
from webtest import TestApp

from sendit_core import events, hookimpl, hookspecs
from sendit_core.cli import main as cli_main
from sendit_core.ingest import ingest_sources
from sendit_core.models import Batch, Image
from sendit_core.parsing import ParseError, parse_file
from sendit_core.plugins import get_plugin_manager
from sendit_core.settings import SettingsError
from sendit_core.testing import login

HOOKS = sorted(name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction)
               if name.startswith("sendit_"))
DOCS = Path(__file__).parent.parent / "docs" / "plugins.md"


@pytest.fixture
def example_app(make_app):
    return make_app(entrypoints=True)


@pytest.fixture
def client(example_app):
    client = TestApp(example_app.wsgi)
    assert login(client).status_int == 303
    return client


@pytest.fixture
def batch_and_image(example_app):
    with example_app.session() as db:
        batch = Batch(name="b1", source="test")
        db.add(batch)
        db.flush()
        image = Image(batch_id=batch.id, sop_instance_uid="1.2.3", stored_path="x/1.dcm", size=1)
        db.add(image)
        db.commit()
        return batch, image


# -- meta-tests ---------------------------------------------------------------


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook):
    assert f"test_hook_{hook}" in globals(), f"write test_hook_{hook} in {__file__}"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_and_its_arguments_are_documented(hook):
    docs = DOCS.read_text()
    assert f"### `{hook}" in docs, f"{hook} is not documented in docs/plugins.md"
    section = docs.split(f"### `{hook}", 1)[1].split("\n### ", 1)[0]
    for arg in inspect.signature(getattr(hookspecs, hook)).parameters:
        assert f"`{arg}`" in section, f"argument {arg} of {hook} is not documented"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_docstring_with_its_parameters(hook):
    spec = getattr(hookspecs, hook)
    doc = inspect.getdoc(spec)
    assert doc and ":returns:" in doc
    for arg in inspect.signature(spec).parameters:
        assert f":param {arg}:" in doc


# -- one test per hook ----------------------------------------------------------


def test_hook_sendit_settings(make_app):
    app = make_app(entrypoints=True)
    assert app.settings["sendit.example.greeting"] == "Hello from a plugin"
    app = make_app(entrypoints=True, settings={"sendit.example.greeting": "Hi"})
    assert app.settings["sendit.example.greeting"] == "Hi"


def test_hook_sendit_check_settings(make_app):
    class Strict:
        @staticmethod
        @hookimpl
        def sendit_check_settings(settings):
            if settings["sendit.worker"] == "thread":
                return ["sendit.worker: the strict plugin needs external workers"]

    with pytest.raises(SettingsError, match="the strict plugin needs external workers"):
        make_app(plugins=[Strict()])
    make_app(plugins=[Strict()], settings={"sendit.worker": "external"})


def test_hook_sendit_pyramid_configure(client, make_app):
    assert client.get("/example").html.find(id="greeting").text == "Hello from a plugin"
    plain = TestApp(make_app().wsgi)
    login(plain)
    plain.get("/example", status=404)


def test_hook_sendit_nav_items(client):
    nav = client.get("/").html.find("nav")
    links = [(a.text, a["href"]) for a in nav.find_all("a")]
    assert ("Example", "/example") in links
    assert links[0] == ("Dashboard", "/")  # sorted by order
    assert links.index(("Example", "/example")) == len(links) - 1


def test_hook_sendit_dashboard_panels(client):
    panel = client.get("/").html.find(id="panel-example")
    assert panel.find("h2").text == "Example panel"
    assert "Hello from a plugin" in panel.text


def test_hook_sendit_batch_panels(client, batch_and_image):
    batch, _ = batch_and_image
    page = client.get(f"/batches/{batch.id}")
    assert "Example batch panel for b1" in page.html.find(id="panel-example-batch").text


def test_hook_sendit_image_panels(client, batch_and_image):
    _, image = batch_and_image
    page = client.get(f"/images/{image.id}")
    assert "Example image panel for 1.2.3" in page.html.find(id="panel-example-image").text


def test_hook_sendit_settings_panels(client):
    page = client.get("/settings")
    assert "Example settings panel" in page.html.find(id="panel-example-settings").text


def test_hook_sendit_ingest_sources(example_app, client):
    settings = example_app.settings
    (source,) = [s for s in ingest_sources(example_app.pm, settings) if s.name == "example"]
    assert source.status(settings).active is False
    source.start(settings)
    assert source.status(settings).active is True
    assert "example daemon running" in client.get("/settings").html.find(id="sources").text
    source.stop(settings)
    with pytest.raises(RuntimeError, match="not running"):
        source.stop(settings)


def test_hook_sendit_parse_file(example_app, tmp_path):
    good = tmp_path / "a.example"
    good.write_bytes(sendit_example.MAGIC + b"uid=1.2.3\npatient=Doe\n")
    parsed = parse_file(example_app.pm, good, example_app.settings)
    assert parsed.sop_instance_uid == "1.2.3"
    assert parsed.parser == "sendit_example"
    assert {e.keyword_path: e.value_text for e in parsed.elements}["patient"] == "Doe"
    broken = tmp_path / "b.example"
    broken.write_bytes(sendit_example.MAGIC + b"patient=Doe\n")
    with pytest.raises(ParseError, match="without a uid"):
        parse_file(example_app.pm, broken, example_app.settings)
    other = tmp_path / "c.txt"
    other.write_text("not for this parser")
    only_example = get_plugin_manager(load_entrypoints=False, builtins=(), extra=[sendit_example])
    assert parse_file(only_example, other, {}) is None  # declined: the next parser may try


def test_hook_sendit_image_imported(example_app, batch_and_image, caplog):
    batch, image = batch_and_image
    sendit_example.EVENTS.clear()

    class Broken:
        @staticmethod
        @hookimpl
        def sendit_image_imported(image):
            raise RuntimeError("plugin bug")

    example_app.pm.register(Broken(), name="broken")
    failures = events.image_imported(example_app.pm, image, batch, example_app.settings)
    assert failures == 1 and "plugin bug" in caplog.text
    assert ("image_imported", image.id) in sendit_example.EVENTS  # the bug stopped no one


def test_hook_sendit_batch_finished(example_app, batch_and_image):
    batch, _ = batch_and_image
    sendit_example.EVENTS.clear()
    assert events.batch_finished(example_app.pm, batch, example_app.settings) == 0
    assert sendit_example.EVENTS == [("batch_finished", batch.id)]


def test_hook_sendit_batch_deleted(example_app, batch_and_image):
    """Told once the deletion has committed, and only then."""
    import transaction

    from sendit_core import batches
    from sendit_core.models import get_tm_session

    batch, _ = batch_and_image
    sendit_example.EVENTS.clear()
    factory = example_app.registry["dbsession_factory"]
    for outcome in ("abort", "commit"):
        tm = transaction.TransactionManager(explicit=True)
        tm.begin()
        db = get_tm_session(factory, tm)
        batches.delete_batch(db, tm.get(), db.get(Batch, batch.id), settings=example_app.settings,
                             pm=example_app.pm)
        assert sendit_example.EVENTS == []  # not before the commit
        getattr(tm, outcome)()
    assert sendit_example.EVENTS == [("batch_deleted", batch.id)]  # the aborted one told no one
    with example_app.session() as db:
        assert db.get(Batch, batch.id) is None


def test_hook_sendit_add_commands(tmp_path, capsys):
    ini = tmp_path / "app.ini"
    ini.write_text("[app:main]\nuse = egg:sendit\nsendit.lockdown.password = pw\n"
                   "sendit.example.greeting = Hello from the ini\n")
    assert cli_main(["example-hello", str(ini)]) == 0
    assert capsys.readouterr().out.strip() == "Hello from the ini"
