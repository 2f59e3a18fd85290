"""Every ini key sendit reads, parsed and validated in one place.

Ini values are strings; :func:`load_settings` converts each declared key once,
with its default, resolves relative paths against the ini file's folder, lets
``SENDIT_*`` environment variables override keys (``sendit.lockdown.password``
-> ``SENDIT_LOCKDOWN_PASSWORD``), and raises :class:`SettingsError` listing
every bad key with what was expected.
"""
from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pluggy
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .plugins import get_plugin_manager

log = logging.getLogger(__name__)

#: Values that mark a secret as "not set yet" (production.ini ships these).
PLACEHOLDER_PREFIX = "CHANGE-ME"
MIN_SECRET_LENGTH = 32
#: Keys whose values are never shown or logged.
SECRET_WORDS = ("password", "secret", "token")


class SettingsError(ValueError):
    """One or more ini keys have bad values; ``problems`` lists them."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid configuration:\n  - " + "\n  - ".join(problems))


# -- converters: each takes (raw string, context) and returns a typed value or
# raises ValueError whose message says what was expected.


def to_str(value: str, ctx: "Context") -> str:
    return value.strip()


def to_bool(value: str, ctx: "Context") -> bool:
    v = value.strip().lower()
    if v in ("true", "yes", "on", "1"):
        return True
    if v in ("false", "no", "off", "0", ""):
        return False
    raise ValueError("expected true or false")


def to_optional_bool(value: str, ctx: "Context") -> bool | None:
    """Like :func:`to_bool`, but an empty value means "not set" (``None``)."""
    return to_bool(value, ctx) if value.strip() else None


def to_int(value: str, ctx: "Context") -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise ValueError("expected a whole number") from None


def positive(conv: Callable[[str, "Context"], Any]) -> Callable[[str, "Context"], Any]:
    def convert(value: str, ctx: "Context"):
        number = conv(value, ctx)
        if number <= 0:
            raise ValueError("expected a number greater than 0")
        return number

    convert.__doc__ = f"positive {conv.__name__}"
    return convert


def to_float(value: str, ctx: "Context") -> float:
    try:
        return float(value.strip())
    except ValueError:
        raise ValueError("expected a number") from None


def to_list(value: str, ctx: "Context") -> list[str]:
    return [item for item in value.replace(",", " ").split() if item]


def to_path(value: str, ctx: "Context") -> Path:
    value = value.strip()
    if not value:
        raise ValueError("expected a folder path")
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else (ctx.here / path).resolve()


def one_of(*choices: str) -> Callable[[str, "Context"], str]:
    def convert(value: str, ctx: "Context") -> str:
        v = value.strip().lower()
        if v not in choices:
            raise ValueError("expected one of: " + ", ".join(choices))
        return v

    return convert


def to_database_url(value: str, ctx: "Context") -> str:
    """A SQLAlchemy URL; a relative SQLite file path resolves against the ini folder."""
    try:
        url = make_url(value.strip())
    except ArgumentError:
        raise ValueError(
            "expected a database URL such as sqlite:///var/sendit.sqlite "
            "or postgresql+psycopg://user@host/dbname"
        ) from None
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        db = Path(url.database)
        if not db.is_absolute() and not url.database.startswith("file:"):
            url = url.set(database=str((ctx.here / db).resolve()))
    return url.render_as_string(hide_password=False)


@dataclass(frozen=True)
class Setting:
    """One ini key: its default (as ini text), converter and documentation."""

    key: str
    default: str
    convert: Callable[[str, "Context"], Any] = to_str
    help: str = ""
    secret: bool = False

    @property
    def env_var(self) -> str:
        return self.key.upper().replace(".", "_")


@dataclass(frozen=True)
class Context:
    """What converters may need: the folder relative paths resolve against."""

    here: Path


CORE_SETTINGS: tuple[Setting, ...] = (
    Setting("sqlalchemy.url", "sqlite:///var/sendit.sqlite", to_database_url,
            "Database URL (SQLite file relative to the ini folder, or PostgreSQL).",
            secret=True),
    Setting("sendit.production", "false", to_bool,
            "Production mode: refuses to start without a real password and session "
            "secret, and turns secure cookies on by default."),
    Setting("sendit.var_dir", "var", to_path,
            "Folder for the embedded database, queue and logs."),
    Setting("sendit.data_dir", "var/data", to_path,
            "The watched data folder where finished batch folders arrive."),
    Setting("sendit.storage_dir", "var/storage", to_path,
            "Where imported DICOM files are stored."),
    Setting("sendit.broker_url", "filesystem://", to_str,
            "kombu broker URL: filesystem:// (embedded), amqp://..., redis://...",
            secret=True),
    Setting("sendit.broker.queue", "sendit.jobs", to_str,
            "Name of the job queue on the broker (one per sendit installation)."),
    Setting("sendit.worker", "thread", one_of("thread", "external"),
            "thread: the web process runs a worker; external: run `sendit worker`."),
    Setting("sendit.worker.commit_every", "100", positive(to_int),
            "Files a worker imports per database transaction."),
    Setting("sendit.worker.stale_seconds", "60", positive(to_int),
            "A claimed job whose worker has not reported for this long is re-queued."),
    Setting("sendit.worker.sweep_seconds", "30", positive(to_int),
            "How often a worker looks for stale or lost jobs."),
    Setting("sendit.import.job_size", "500", positive(to_int),
            "Files per job: a batch's files are split into jobs workers share."),
    Setting("sendit.import.delete_source", "false", to_bool,
            "Delete each source file once its import is committed (never files with errors)."),
    Setting("sendit.import.max_file_mb", "2048", positive(to_int),
            "Files larger than this many MB become an error row instead of being imported."),
    Setting("sendit.storage.fsync", "false", to_bool,
            "fsync every stored file before it is renamed into place (safer, slower)."),
    Setting("sendit.db.auto_create", "true", to_bool,
            "Create or upgrade the database schema when the web app starts."),
    Setting("sendit.lockdown.enabled", "true", to_bool,
            "Require the lockdown password for every page and API call."),
    Setting("sendit.lockdown.password", "", to_str,
            "The lockdown password (browser login form and HTTP Basic for the API).",
            secret=True),
    Setting("sendit.lockdown.max_failures", "5", positive(to_int),
            "Failed logins allowed per client within the failure window."),
    Setting("sendit.lockdown.failure_window", "300", positive(to_int),
            "Seconds a client stays locked out after too many failed logins."),
    Setting("sendit.session.secret", "", to_str,
            "Secret that signs the session cookie (at least 32 characters).",
            secret=True),
    Setting("sendit.session.secure", "", to_optional_bool,
            "Send the session cookie over HTTPS only (default: true in production)."),
    Setting("sendit.session.timeout", "43200", positive(to_int),
            "Seconds of inactivity after which a browser session ends."),
    Setting("sendit.security.csp", "", to_str,
            "The Content-Security-Policy header of every response; empty: sendit's own "
            "(only the app's scripts, styles and images, nothing inline, no framing)."),
    Setting("sendit.plugins.disabled", "", to_list,
            "Plugin names (space or comma separated) not to load."),
    Setting("sendit.page_size", "50", positive(to_int),
            "Rows per page in tables."),
)


def load_config(
    raw: dict[str, Any], *, here: str | Path | None = None, pm: pluggy.PluginManager | None = None
) -> tuple[dict[str, Any], pluggy.PluginManager]:
    """Build the plugin manager and the converted settings from raw ini values.

    The web app, the worker and every ``sendit`` command start here.

    :param raw: the ini's ``[app:main]`` values.
    :param here: the ini file's folder (relative paths resolve against it).
    :param pm: a ready plugin manager (tests); default: built-ins + entry points
        minus ``sendit.plugins.disabled``.
    :raises SettingsError: for any bad value, naming the key.
    """
    if pm is None:
        disabled_raw = os.environ.get("SENDIT_PLUGINS_DISABLED", raw.get("sendit.plugins.disabled", ""))
        pm = get_plugin_manager(disabled=to_list(str(disabled_raw), None))
    declared = [s for result in pm.hook.sendit_settings() if result for s in result]
    settings = load_settings(raw, here=here, declared=declared)
    problems = [p for result in pm.hook.sendit_check_settings(settings=settings) if result
                for p in result]
    if problems:
        raise SettingsError(problems)
    return settings, pm



def load_settings(
    raw: Mapping[str, Any],
    *,
    here: str | Path | None = None,
    declared: Iterable[Setting] = (),
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Convert raw ini settings into typed settings.

    :param raw: the ``[app:main]`` values (strings; already typed values pass).
    :param here: folder relative paths resolve against (the ini file's folder).
    :param declared: plugin settings, on top of :data:`CORE_SETTINGS`.
    :param environ: environment for ``SENDIT_*`` overrides (default ``os.environ``).
    :raises SettingsError: naming every key with a bad value.
    """
    environ = os.environ if environ is None else environ
    here = Path(here or raw.get("here") or os.getcwd()).resolve()
    ctx = Context(here)
    settings: dict[str, Any] = dict(raw)
    problems: list[str] = []
    specs: dict[str, Setting] = {}
    for spec in (*CORE_SETTINGS, *declared):
        if spec.key in specs and specs[spec.key] != spec:
            problems.append(f"{spec.key}: declared twice with different definitions")
        specs[spec.key] = spec
    for key, spec in specs.items():
        value = environ.get(spec.env_var, raw.get(key, spec.default))
        if not isinstance(value, str):
            settings[key] = value
            continue
        try:
            settings[key] = spec.convert(value, ctx)
        except ValueError as exc:
            problems.append(f"{key} = {_shown(spec, value)!s}: {exc}")
    for key in raw:
        if key.startswith("sendit.") and key not in specs:
            log.warning("unknown setting %s (misspelt? it is ignored)", key)
    if not problems:
        problems.extend(_check_core(settings))
    if problems:
        raise SettingsError(problems)
    settings["sendit.here"] = here
    settings["sendit._specs"] = specs
    return settings


def _shown(spec: Setting, value: str) -> str:
    return "********" if spec.secret and value else repr(value)


def _check_core(s: dict[str, Any]) -> list[str]:
    problems = []
    production = s["sendit.production"]
    if s["sendit.session.secure"] is None:
        s["sendit.session.secure"] = production
    password = s["sendit.lockdown.password"]
    if s["sendit.lockdown.enabled"]:
        if not password:
            problems.append(
                "sendit.lockdown.password: is empty; set the password that protects "
                "the interface (or set sendit.lockdown.enabled = false)"
            )
        elif password.startswith(PLACEHOLDER_PREFIX):
            problems.append(
                "sendit.lockdown.password: still the placeholder from the shipped ini "
                "file; change it before starting"
            )
    secret = s["sendit.session.secret"]
    if secret.startswith(PLACEHOLDER_PREFIX):
        problems.append(
            "sendit.session.secret: still the placeholder from the shipped ini file; "
            "set a random string, e.g. the output of "
            "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
        )
    elif not secret:
        if production:
            problems.append(
                f"sendit.session.secret: is empty; production needs a random secret of "
                f"at least {MIN_SECRET_LENGTH} characters"
            )
        else:  # the web app warns about it; commands need no sessions
            s["sendit.session.secret"] = secrets.token_urlsafe(48)
            s["sendit._ephemeral_secret"] = True
    elif production and len(secret) < MIN_SECRET_LENGTH:
        problems.append(
            f"sendit.session.secret: is {len(secret)} characters long; production "
            f"needs at least {MIN_SECRET_LENGTH}"
        )
    if production and not s["sendit.lockdown.enabled"]:
        problems.append("sendit.lockdown.enabled: production refuses to run without the lockdown")
    return problems


def is_secret_key(key: str) -> bool:
    """True for keys whose values must be masked when shown or logged."""
    return any(word in key.lower() for word in SECRET_WORDS)


def masked_settings(settings: Mapping[str, Any]) -> dict[str, str]:
    """Return the settings as text with secrets masked, for display."""
    specs: dict[str, Setting] = settings.get("sendit._specs", {})
    shown = {}
    for key in sorted(settings):
        value = settings[key]
        if key.startswith("sendit._") or not isinstance(value, (str, int, float, bool, Path, list)):
            continue
        spec = specs.get(key)
        if (spec and spec.secret) or is_secret_key(key):
            shown[key] = _mask(key, value)
        else:
            shown[key] = " ".join(value) if isinstance(value, list) else str(value)
    return shown


def _mask(key: str, value: Any) -> str:
    text = str(value)
    if "://" in text:  # a URL: keep scheme, host and database, hide the password
        try:
            return make_url(text).render_as_string(hide_password=True)
        except ArgumentError:
            pass
        scheme, _, rest = text.partition("://")
        if "@" in rest:
            creds, _, host = rest.rpartition("@")
            user = creds.split(":", 1)[0]
            return f"{scheme}://{user}:***@{host}"
        return text
    return "********" if text else "(empty)"
