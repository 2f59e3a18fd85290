"""Settings: one loader, typed defaults, clear errors naming the key."""
import logging
from pathlib import Path

import pytest

from sendit_core.settings import (
    CORE_SETTINGS, Setting, SettingsError, load_settings, masked_settings, positive, to_int,
)

GOOD = {"sendit.lockdown.password": "pw", "sendit.session.secret": "s" * 40}


def load(raw=None, **kw):
    return load_settings({**GOOD, **(raw or {})}, here=kw.pop("here", "/srv/sendit"),
                         environ=kw.pop("environ", {}), **kw)


def test_defaults_are_typed_and_paths_resolve_against_the_ini_folder():
    s = load()
    assert s["sendit.worker"] == "thread"
    assert s["sendit.lockdown.enabled"] is True
    assert s["sendit.lockdown.max_failures"] == 5
    assert s["sendit.data_dir"] == Path("/srv/sendit/var/data")
    assert s["sendit.storage_dir"] == Path("/srv/sendit/var/storage")
    assert s["sqlalchemy.url"] == "sqlite:////srv/sendit/var/sendit.sqlite"
    assert s["sendit.plugins.disabled"] == []
    assert s["sendit.session.secure"] is False


def test_absolute_paths_and_lists():
    s = load({"sendit.data_dir": "/data", "sendit.plugins.disabled": "a, b c"})
    assert s["sendit.data_dir"] == Path("/data")
    assert s["sendit.plugins.disabled"] == ["a", "b", "c"]


@pytest.mark.parametrize("key, value, expected", [
    ("sendit.worker", "threads", "sendit.worker = 'threads': expected one of: thread, external"),
    ("sendit.lockdown.enabled", "maybe", "sendit.lockdown.enabled = 'maybe': expected true or false"),
    ("sendit.lockdown.max_failures", "five", "sendit.lockdown.max_failures = 'five': expected a whole number"),
    ("sendit.lockdown.max_failures", "0", "expected a number greater than 0"),
    ("sqlalchemy.url", "not a url", "expected a database URL"),
    ("sendit.data_dir", "", "sendit.data_dir = '': expected a folder path"),
])
def test_a_bad_value_names_its_key_and_what_is_expected(key, value, expected):
    with pytest.raises(SettingsError) as info:
        load({key: value})
    assert expected in str(info.value)
    assert key in info.value.problems[0]


def test_every_bad_key_is_reported_at_once():
    with pytest.raises(SettingsError) as info:
        load({"sendit.worker": "x", "sendit.page_size": "-1"})
    assert len(info.value.problems) == 2


def test_environment_overrides_the_ini():
    s = load(environ={"SENDIT_LOCKDOWN_PASSWORD": "from-env", "SENDIT_WORKER": "external"})
    assert s["sendit.lockdown.password"] == "from-env"
    assert s["sendit.worker"] == "external"


def test_secrets_are_not_echoed_in_errors():
    with pytest.raises(SettingsError) as info:
        load({"sqlalchemy.url": "postgresql://u:hunter2@:bad:port/x"})
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("raw, message", [
    ({"sendit.lockdown.password": ""}, "sendit.lockdown.password: is empty"),
    ({"sendit.lockdown.password": "CHANGE-ME"}, "sendit.lockdown.password: still the placeholder"),
    ({"sendit.session.secret": "CHANGE-ME"}, "sendit.session.secret: still the placeholder"),
    ({"sendit.production": "true", "sendit.session.secret": ""}, "production needs a random secret"),
    ({"sendit.production": "true", "sendit.session.secret": "short"}, "needs at least 32"),
    ({"sendit.production": "true", "sendit.lockdown.enabled": "false"}, "refuses to run without the lockdown"),
])
def test_placeholder_or_missing_secrets_refuse_to_start(raw, message):
    with pytest.raises(SettingsError) as info:
        load(raw)
    assert message in str(info.value)


def test_empty_secret_in_development_gets_a_random_one():
    a = load({"sendit.session.secret": ""})
    b = load({"sendit.session.secret": ""})
    assert len(a["sendit.session.secret"]) >= 32
    assert a["sendit.session.secret"] != b["sendit.session.secret"]


def test_the_web_app_warns_about_a_random_secret(make_app, caplog):
    with caplog.at_level(logging.WARNING):
        make_app(settings={"sendit.session.secret": ""})
    assert "sessions end when the server restarts" in caplog.text


def test_production_turns_secure_cookies_on_by_default():
    assert load({"sendit.production": "true"})["sendit.session.secure"] is True
    assert load({"sendit.production": "true", "sendit.session.secure": "false"})["sendit.session.secure"] is False


def test_unknown_sendit_keys_are_warned_about(caplog):
    with caplog.at_level(logging.WARNING):
        load({"sendit.lockdown.pasword": "typo"})
    assert "unknown setting sendit.lockdown.pasword" in caplog.text


def test_plugin_settings_are_converted_too():
    extra = [Setting("sendit.x.limit", "10", positive(to_int))]
    assert load(declared=extra)["sendit.x.limit"] == 10
    with pytest.raises(SettingsError, match="sendit.x.limit = 'ten'"):
        load({"sendit.x.limit": "ten"}, declared=extra)


def test_masked_settings_hide_secrets_and_credentials():
    shown = masked_settings(load({"sqlalchemy.url": "postgresql+psycopg://u:hunter2@db/sendit",
                                  "sendit.broker_url": "amqp://guest:brokerpw@mq:5672//"}))
    text = repr(shown)
    assert "hunter2" not in text and "brokerpw" not in text and "pw'" not in text
    assert shown["sendit.lockdown.password"] == "********"
    assert shown["sqlalchemy.url"].startswith("postgresql+psycopg://u:***@db")
    assert shown["sendit.broker_url"] == "amqp://guest:***@mq:5672//"


def test_every_core_key_is_documented():
    doc = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    for spec in CORE_SETTINGS:
        assert f"`{spec.key}`" in doc, f"{spec.key} is missing from docs/configuration.md"
