"""Settings for the healthz service, read from the environment and validated once.

Every setting has an environment variable (``DATABASE_URL`` and ``HEALTHZ_*``) and a field
of :class:`Settings` with the name SQLAlchemy gives the same knob (``pool_size``,
``max_overflow``, ``pool_timeout``...). Pool defaults are SQLAlchemy's own, so that "pooling
alone" is judged on the library as shipped.

This module imports nothing beyond the standard library: gunicorn config files import it in
the master process before any worker monkey-patches.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

#: gunicorn's worker classes the service ships a config for (``healthz.gunicorn_conf.<name>``).
WORKER_CLASSES = ("eventlet", "gevent", "gthread", "sync")
#: The worker classes that run one greenlet per client connection.
GREEN_WORKERS = ("eventlet", "gevent")
POOL_CLASSES = ("QueuePool", "NullPool", "SingletonThreadPool")
GREEN_DRIVER_MODES = ("auto", "on", "off")
#: The DBAPI driver under SQLAlchemy: psycopg2 (the report's) or psycopg 3 (Django 5.1+'s pool needs it).
DRIVERS = ("psycopg2", "psycopg")
#: SQLAlchemy's ``isolation_level`` values for PostgreSQL; AUTOCOMMIT sends no BEGIN/ROLLBACK.
ISOLATION_LEVELS = ("AUTOCOMMIT", "READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_SCHEMES = ("postgresql", "postgresql+psycopg2", "postgresql+psycopg", "postgres")


class SettingsError(ValueError):
    """A setting has a value the service cannot run with.

    The message is one line naming the variable, the value (password masked) and what is
    accepted, fit to print before the server binds.
    """

    def __init__(self, variable: str, value: object, accepted: str) -> None:
        self.variable = variable
        self.value = value
        self.accepted = accepted
        super().__init__(f"{variable}={value!r} is not accepted: expected {accepted}")


def mask_password(url: str) -> str:
    """Return ``url`` with any password between ``user:`` and ``@`` replaced by ``***``.

    Works on malformed URLs too (it is a text substitution), which is why error messages use
    it rather than a URL parser.
    """
    url = re.sub(r"(://[^:/@?#\s]*:)[^@/\s]*@", r"\1***@", url)
    return re.sub(r"(password=)[^&\s]*", r"\1***", url)


def parse_integer(variable: str, raw: str, minimum: int, accepted: str | None = None) -> int:
    """``raw`` as an integer >= ``minimum``, else :class:`SettingsError` saying ``accepted``."""
    accepted = accepted or f"an integer >= {minimum}"
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(variable, raw, accepted) from None
    if value < minimum:
        raise SettingsError(variable, raw, accepted)
    return value


def _integer(minimum: int, accepted: str | None = None) -> Callable[[str, str], int]:
    return lambda variable, raw: parse_integer(variable, raw, minimum, accepted)


def _seconds(variable: str, raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise SettingsError(variable, raw, "a number of seconds >= 0") from None
    if not value >= 0 or value == float("inf"):  # also refuses nan
        raise SettingsError(variable, raw, "a number of seconds >= 0")
    return value


def _error_status(variable: str, raw: str) -> int:
    status = parse_integer(
        variable, raw, 400, "an HTTP status from 400 to 599 (499, the report's, or 503 for load balancers)"
    )
    if status > 599:
        raise SettingsError(
            variable, raw, "an HTTP status from 400 to 599 (499, the report's, or 503 for load balancers)"
        )
    return status


BIND_ACCEPTED = "HOST:PORT with a port from 1 to 65535, such as 0.0.0.0:8001 or [::]:8001"


def parse_bind(variable: str, raw: str) -> tuple[str, int]:
    """``raw`` as ``(host, port)``: ``HOST:PORT``, an IPv6 host in brackets; else :class:`SettingsError`."""
    host, sep, port = raw.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or any(c.isspace() for c in host) or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise SettingsError(variable, raw, BIND_ACCEPTED)
    return host, int(port)


def _bind(variable: str, raw: str) -> str:
    parse_bind(variable, raw)
    return raw.strip()


def _boolean(variable: str, raw: str) -> bool:
    word = raw.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise SettingsError(variable, raw, "one of " + ", ".join(_TRUE + _FALSE))


def _choice(choices: tuple[str, ...]) -> Callable[[str, str], str]:
    folded = {c.lower(): c for c in choices}

    def parse(variable: str, raw: str) -> str:
        try:
            return folded[raw.strip().lower()]
        except KeyError:
            raise SettingsError(variable, raw, "one of " + ", ".join(choices)) from None

    return parse


def _database_url(variable: str, raw: str) -> str:
    accepted = "postgresql://USER:PASSWORD@HOST:PORT/DBNAME (HEALTHZ_DRIVER picks the driver)"
    # Only a URL's password can be found and masked; any other text is not echoed back.
    shown = mask_password(raw) if "://" in raw else "(not shown: not a URL)"
    url = raw.strip()
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a non-numeric or out-of-range port
    except ValueError:
        raise SettingsError(variable, shown, accepted) from None
    if parts.scheme not in _SCHEMES or not parts.path.strip("/") or "/" in parts.path.strip("/"):
        raise SettingsError(variable, shown, accepted)
    if not parts.hostname and "host=" not in parts.query:
        raise SettingsError(variable, shown, accepted)
    if port == 0:
        raise SettingsError(variable, shown, accepted)
    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the driver is HEALTHZ_DRIVER's (engine_url).
    return "postgresql+psycopg2://" + url.split("://", 1)[1]


@dataclasses.dataclass(frozen=True)
class Settings:
    """Validated settings of one healthz service.

    ``pool_size``, ``max_overflow`` and ``pool_timeout`` apply to ``QueuePool``;
    ``pool_size`` also bounds ``SingletonThreadPool`` (threads it keeps connections for);
    ``NullPool`` ignores all three and opens a connection per checkout.
    ``isolation_level`` is AUTOCOMMIT, as Django runs by default: the count is one statement,
    with no BEGIN before it and no ROLLBACK when the pool resets the connection on check-in.
    ``error_status`` is what the health check answers when the database call fails: 499 as in
    the report's view (nginx's "client closed request", invisible to alerts on 5xx), 503 for load
    balancers and probes. ``driver`` is psycopg2 or psycopg (3); the green driver (psycogreen's wait
    callback) is psycopg2's, so ``green_driver=on`` is refused with psycopg, which waits
    cooperatively under gevent by itself (3.1.14+) and does not support eventlet. ``pool_fair``
    puts a first-come, first-served gate (:mod:`healthz.gate`) in front of a bounded QueuePool.
    ``liveness_bind`` (``HOST:PORT``), when set, gives livez a listener of its own in each worker
    (:mod:`healthz.liveness`), answered while every request thread waits on the database.
    """

    database_url: str
    pool_class: str = "QueuePool"
    pool_size: int = 5
    max_overflow: int = 10
    pool_timeout: float = 30.0
    pool_recycle: int = -1
    pool_pre_ping: bool = False
    pool_use_lifo: bool = False
    connect_timeout: int = 10
    statement_timeout: int = 0
    isolation_level: str = "AUTOCOMMIT"
    green_driver: str = "auto"
    metrics: bool = True
    application_name: str = "healthz"
    error_status: int = 499
    driver: str = "psycopg2"
    pool_fair: bool = True
    liveness_bind: str | None = None

    def __post_init__(self) -> None:
        if self.driver == "psycopg" and self.green_driver == "on":
            raise SettingsError(
                "HEALTHZ_GREEN_DRIVER",
                "on",
                "auto or off with HEALTHZ_DRIVER=psycopg (psycogreen patches psycopg2 only)",
            )

    @property
    def engine_url(self) -> str:
        """``database_url`` with :attr:`driver` as SQLAlchemy's dialect driver (``postgresql+psycopg://``)."""
        return f"postgresql+{self.driver}://" + self.database_url.split("://", 1)[1]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None) -> Settings:
        """Read every setting from ``environ`` (default ``os.environ``).

        ``overrides`` maps field names (``pool_size=3``) to values laid over the environment,
        each validated as if set in its variable. Unset or empty variables take the default;
        ``DATABASE_URL`` has none. Raises :class:`SettingsError` for the first bad value or an
        unknown field name.
        """
        environ = dict(os.environ if environ is None else environ)
        for field, value in (overrides or {}).items():
            if field not in _FIELDS:
                raise SettingsError(field, value, "one of the settings " + ", ".join(_FIELDS))
            environ[_FIELDS[field][0]] = _as_text(value)
        values: dict[str, Any] = {}
        for field, (variable, parse) in _FIELDS.items():
            raw = environ.get(variable, "")
            if raw.strip():
                values[field] = parse(variable, raw)
            elif field == "database_url":
                raise SettingsError(variable, raw, "a URL such as postgresql://USER:PASSWORD@HOST:PORT/DBNAME")
        return cls(**values)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> Settings:
        """Build settings from field names alone, ignoring the environment."""
        return cls.from_env({}, mapping)

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied and validated."""
        current = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        current.update(changes)
        return Settings.from_mapping(current)

    @property
    def safe_database_url(self) -> str:
        """``database_url`` with the password masked, for logs and reports."""
        return mask_password(self.database_url)

    def describe(self) -> str:
        """One line for a log: every setting, the URL's password masked."""
        parts = [f"database_url={self.safe_database_url}"]
        parts += [f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self) if f.name != "database_url"]
        return " ".join(parts)

    def __repr__(self) -> str:  # dataclass's repr would print the password
        return f"Settings({self.describe()})"


def _as_text(value: object) -> str:
    if value is None:  # unset: the default
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def _application_name(variable: str, raw: str) -> str:
    name = raw.strip()
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,63}", name):
        raise SettingsError(variable, raw, "1 to 63 letters, digits or _.:-")
    return name


_FIELDS: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "database_url": ("DATABASE_URL", _database_url),
    "pool_class": ("HEALTHZ_POOL_CLASS", _choice(POOL_CLASSES)),
    "pool_size": ("HEALTHZ_POOL_SIZE", _integer(0)),
    "max_overflow": ("HEALTHZ_MAX_OVERFLOW", _integer(-1)),
    "pool_timeout": ("HEALTHZ_POOL_TIMEOUT", _seconds),
    "pool_recycle": ("HEALTHZ_POOL_RECYCLE", _integer(-1, "an integer number of seconds, or -1 for never")),
    "pool_pre_ping": ("HEALTHZ_POOL_PRE_PING", _boolean),
    "pool_use_lifo": ("HEALTHZ_POOL_USE_LIFO", _boolean),
    "connect_timeout": ("HEALTHZ_CONNECT_TIMEOUT", _integer(0)),
    "statement_timeout": ("HEALTHZ_STATEMENT_TIMEOUT", _integer(0)),
    "isolation_level": ("HEALTHZ_ISOLATION_LEVEL", _choice(ISOLATION_LEVELS)),
    "green_driver": ("HEALTHZ_GREEN_DRIVER", _choice(GREEN_DRIVER_MODES)),
    "metrics": ("HEALTHZ_METRICS", _boolean),
    "application_name": ("HEALTHZ_APPLICATION_NAME", _application_name),
    "error_status": ("HEALTHZ_ERROR_STATUS", _error_status),
    "driver": ("HEALTHZ_DRIVER", _choice(DRIVERS)),
    "pool_fair": ("HEALTHZ_POOL_FAIR", _boolean),
    "liveness_bind": ("HEALTHZ_LIVENESS_BIND", _bind),
}

#: Environment variable of each setting, in the order the README documents them.
ENVIRONMENT = {field: variable for field, (variable, _) in _FIELDS.items()}
