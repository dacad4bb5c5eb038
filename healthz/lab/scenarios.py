"""The lab's scenarios: named, documented combinations of worker class, worker and thread counts,
pool settings, green driver and client connection mode. Pure data and parsing; nothing runs here.

A scenario's ``settings`` use the service's own field names (``pool_class``, ``pool_size``,
``max_overflow``, ``green_driver``...), validated by :mod:`healthz.config` when the scenario is
made, so a bad one is refused before anything starts.

Users add their own:

* on the command line, ``NAME:key=value,key=value``: a known NAME is the base the keys change
  (``eventlet-queuepool-sized:pool_size=40``), an unknown one starts from the defaults and needs
  ``worker_class``;
* in a TOML file, one table per scenario (``[scenario.NAME]``) with the same keys, plus
  ``description`` and optionally ``base``.

A scenario with ``app`` runs the team's own service instead of ours (:mod:`healthz.lab.own_service`): its
command, ``app_dir`` (relative to the TOML file), ``env``, ``setup``, ``path``, ``ready_path`` and
``python``. Its ``worker_class``, ``workers`` and pool keys (``pool_class``, ``pool_size``...) are then
what the team says its service runs, read by the report and the verdict, never passed to it.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from healthz.config import ENVIRONMENT, WORKER_CLASSES, Settings, SettingsError, parse_integer
from healthz.lab.figures import Placement, PoolShape
from healthz.lab.own_service import DEFAULT_PATH, AppSpec, AppSpecError, parse_env
from healthz.lab.services import UNKNOWN, LabService, OwnService, RunningTarget, ServiceKind, ServiceKindError
from healthz.lab.topology import PORTS, TW_REUSE

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 has no tomllib; tomli is the same parser, a dependency there
    import tomli as tomllib
CONNECTION_MODES = ("close", "keep-alive")
PGBOUNCER_POOL_MODES = ("transaction", "session")
SCENARIO_KEYS = (
    "description",
    "worker_class",
    "workers",
    "threads",
    "worker_connections",
    "connection",
    "pgbouncer",
    "pgbouncer_pool_mode",
    "pgbouncer_pool_size",
    "counterpart",
    "tcp_tw_reuse",
    "ports",
)
#: The keys of a scenario that runs the team's own service (:class:`AppSpec`'s fields).
APP_KEYS = (
    "app",
    "app_dir",
    "env",
    "setup",
    "path",
    "ready_path",
    "ready_timeout",
    "python",
    "sqlalchemy_pool",
    "django_databases",
    "gunicorn_args",
    "try_fixes",
)
_PLACEHOLDER_URL = "postgresql://healthz@localhost/healthz"


class ScenarioError(ValueError):
    """A scenario name, spec or file is wrong; the message names it and what is accepted."""


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One configuration of the service and its clients.

    ``workers`` gunicorn workers of ``worker_class``; ``threads`` matters for gthread,
    ``worker_connections`` for eventlet and gevent; ``settings`` are service settings by field name;
    ``connection`` is how locust's users connect: ``close`` (a new TCP connection per request, as
    ``ab`` without ``-k``) or ``keep-alive``. ``pgbouncer`` places a PgBouncer between the service
    and PostgreSQL (a :class:`Placement`, given as its value in files) in ``pgbouncer_pool_mode`` with
    ``pgbouncer_pool_size`` server connections (its ``default_pool_size``).
    """

    name: str
    description: str
    worker_class: str
    workers: int = 2
    threads: int = 8
    worker_connections: int = 1000
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    connection: str = "close"
    pgbouncer: Placement = Placement.NONE
    pgbouncer_pool_mode: str = "transaction"
    pgbouncer_pool_size: int = 10
    service: ServiceKind = LabService()  # ours, the team's command (app) or a running service (--target)
    counterpart: str | None = None  # the lab's scenario that stands for this one, for the report's pairs
    tcp_tw_reuse: int | None = None  # net.ipv4.tcp_tw_reuse on the application hosts (netns); None: Linux's 2
    ports: int | None = None  # their ip_local_port_range size (netns); None: the lab's --ports
    fix: Mapping[str, Any] | None = (
        None  # a fix laid over an own service (fixes.Fix's, with "of": the scenario it fixes)
    )

    @property
    def knobs(self) -> dict[str, int]:
        """The kernel settings this scenario sets on its application hosts: ``tcp_tw_reuse``, ``ports``."""
        return {k: v for k, v in (("tcp_tw_reuse", self.tcp_tw_reuse), ("ports", self.ports)) if v is not None}

    def __post_init__(self) -> None:
        if self.worker_class not in WORKER_CLASSES and not (self.own_service and self.worker_class == UNKNOWN):
            raise ScenarioError(
                f"scenario {self.name}: worker_class {self.worker_class!r} is not one of {', '.join(WORKER_CLASSES)}"
            )
        if self.connection not in CONNECTION_MODES:
            raise ScenarioError(
                f"scenario {self.name}: connection {self.connection!r} is not one of {', '.join(CONNECTION_MODES)}"
            )
        try:
            object.__setattr__(self, "pgbouncer", Placement.parse(self.pgbouncer))
        except ValueError as exc:
            raise ScenarioError(f"scenario {self.name}: {exc}") from None
        refusal = self.service.refusal(self)
        if refusal:
            raise ScenarioError(f"scenario {self.name}: {refusal}")
        if self.pgbouncer_pool_mode not in PGBOUNCER_POOL_MODES:
            raise ScenarioError(
                f"scenario {self.name}: pgbouncer_pool_mode {self.pgbouncer_pool_mode!r} is not one of "
                f"{', '.join(PGBOUNCER_POOL_MODES)}"
            )
        if self.tcp_tw_reuse is not None and self.tcp_tw_reuse not in TW_REUSE:
            raise ScenarioError(
                f"scenario {self.name}: tcp_tw_reuse {self.tcp_tw_reuse!r} is not one of {', '.join(map(str, TW_REUSE))}"
            )
        if self.ports is not None and (not isinstance(self.ports, int) or not PORTS[0] <= self.ports <= PORTS[1]):
            raise ScenarioError(
                f"scenario {self.name}: ports must be an integer from {PORTS[0]} to {PORTS[1]}, got {self.ports!r}"
            )
        for key in ("workers", "threads", "worker_connections", "pgbouncer_pool_size"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ScenarioError(f"scenario {self.name}: {key} must be an integer >= 1, got {getattr(self, key)!r}")
        if self.worker_class in ("gthread", "sync") and self.settings.get("green_driver") == "on":
            raise ScenarioError(
                f"scenario {self.name}: green_driver=on needs eventlet or gevent, not {self.worker_class}"
            )
        try:
            self.service_settings(_PLACEHOLDER_URL)
        except SettingsError as exc:
            raise ScenarioError(f"scenario {self.name}: {exc}") from None

    def service_settings(self, database_url: str = _PLACEHOLDER_URL) -> Settings:
        """The service's settings for this scenario against ``database_url`` (default: a
        placeholder, for reading the pool settings alone)."""
        return Settings.from_mapping({**self.settings, "database_url": database_url})

    @property
    def concurrency_per_worker(self) -> int:
        """Requests one worker can serve at once: threads for gthread, 1 for sync, else
        ``worker_connections``."""
        return {"gthread": self.threads, "sync": 1}.get(self.worker_class, self.worker_connections)

    def pool_shape(self) -> PoolShape:
        """One worker's pool as the scenario configures it (an own service's, as its scenario
        declares it: ``unknown`` when it does not)."""
        if self.own_service and "pool_class" not in self.settings:
            return PoolShape(UNKNOWN, 0, 0)
        settings = self.service_settings(_PLACEHOLDER_URL)
        return PoolShape(settings.pool_class, settings.pool_size, settings.max_overflow)

    def pool_capacity(self) -> int | None:
        """Most connections one worker's pool holds at once, or None when unbounded (NullPool,
        QueuePool with ``max_overflow=-1``, SingletonThreadPool: one per thread or greenlet)."""
        return self.pool_shape().capacity

    def environment(self, database_url: str, every_setting: bool = False) -> dict[str, str]:
        """The service's environment: ``DATABASE_URL``, ``HEALTHZ_*`` and ``GUNICORN_*``.

        Only the scenario's own settings are set, so the rest come from the caller's environment;
        ``every_setting`` sets every ``HEALTHZ_*`` variable, defaults included, so none does."""
        settings = self.service_settings(database_url)
        fields = [field for field in ENVIRONMENT if field != "database_url"] if every_setting else self.settings
        # An unset optional setting (None) is set empty: the service reads it as unset.
        env = {ENVIRONMENT[field]: _text(getattr(settings, field)) for field in fields}
        env["DATABASE_URL"] = database_url
        env["GUNICORN_WORKERS"] = str(self.workers)
        env["GUNICORN_THREADS"] = str(self.threads)
        env["GUNICORN_WORKER_CONNECTIONS"] = str(self.worker_connections)
        return env

    def summary(self) -> str:
        """One line: worker class and counts, pool and green driver, client connection mode (an own
        service's command and what its scenario declares)."""
        summary = self.service.summary(self)
        if summary:
            return summary
        settings = self.service_settings(_PLACEHOLDER_URL)
        pool = settings.pool_class
        if pool == "QueuePool":
            pool += f"(pool_size={settings.pool_size}, max_overflow={settings.max_overflow}, pool_timeout={settings.pool_timeout:g})"
        elif pool == "SingletonThreadPool":
            pool += f"(pool_size={settings.pool_size})"
        per_worker = {"gthread": f"threads={self.threads}", "sync": ""}.get(
            self.worker_class, f"worker_connections={self.worker_connections}"
        )
        green = f", green_driver={settings.green_driver}" if self.worker_class in ("eventlet", "gevent") else ""
        bouncer = ""
        if self.pgbouncer.pooled:
            where = {
                Placement.APP: "on the app host over 127.0.0.1",
                Placement.APP_UNIX: "on the app host over its Unix socket",
                Placement.DB: "on the database host",
            }[self.pgbouncer]
            bouncer = f", PgBouncer {where} (pool_mode={self.pgbouncer_pool_mode}, default_pool_size={self.pgbouncer_pool_size})"
        knobs = "".join(f", {k}={v}" for k, v in self.knobs.items())
        summary = f"{self.worker_class} workers={self.workers} {per_worker}, {pool}{green}{bouncer}{knobs}, clients {self.connection}"
        return summary.replace("  ", " ")

    def to_dict(self) -> dict[str, Any]:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "service"}
        return {
            **fields,
            "pgbouncer": self.pgbouncer.value,
            "settings": dict(self.settings),
            "summary": self.summary(),
            **self.service.to_dict(),
        }

    @property
    def tries_fixes(self) -> bool:
        """Whether the lab tries its framework's fixes on this scenario's code after its steps (``try_fixes``)."""
        return self.service.tries_fixes

    @property
    def own_service(self) -> bool:
        """Whether the service is the team's (one the lab starts, or one already running), not ours."""
        return self.service.own

    @property
    def path(self) -> str:
        """The endpoint the load calls."""
        return self.service.path

    def with_changes(self, name: str, changes: Mapping[str, Any], root: Path | None = None) -> Scenario:
        """A copy called ``name`` with scenario keys, app keys (``app_dir`` relative to ``root``)
        and settings in ``changes`` applied."""
        own, app_keys, settings = _split(changes)
        try:
            service = self.service.with_app_keys(name, app_keys, root)
        except ServiceKindError as exc:
            raise ScenarioError(str(exc)) from None
        try:
            return dataclasses.replace(self, name=name, settings={**self.settings, **settings}, service=service, **own)
        except TypeError as exc:
            raise ScenarioError(f"scenario {name}: {exc}") from None


def _split(changes: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``changes`` as scenario keys, app keys and the service's settings."""
    own = {k: v for k, v in changes.items() if k in SCENARIO_KEYS}
    app = {k: v for k, v in changes.items() if k in APP_KEYS}
    settings = {k: v for k, v in changes.items() if k not in own and k not in app}
    return own, app, settings


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)


# Scenario names other modules decide by, written once here (the Django ones are examples/django-report's).
#: ``lab run --quick``: a connection per request, SQLAlchemy's default pool, a bounded pool.
QUICK = ("eventlet-nullpool", "eventlet-queuepool-default", "eventlet-queuepool-sized")
#: What the advice's Django snippets rest on, first that ran: gthread with persistent connections,
#: Django 5.1+'s pool; and the stand-ins for them.
DJANGO_GTHREAD = ("django-gthread-persistent", "gthread-queuepool")
DJANGO_POOL = ("django-pool", "django-pool-gevent")
#: The supported green worker with a sized pool, named beside any eventlet advice.
GEVENT_SIZED = "gevent-queuepool-sized"
#: PgBouncer behind kept connections, and behind a login per request over its Unix socket.
PGBOUNCER_KEPT, PGBOUNCER_UNIX = "eventlet-queuepool-pgbouncer", "eventlet-nullpool-pgbouncer-unix"

#: The default comparison, in the order the report reads best.
DEFAULTS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            "eventlet-nullpool",
            "The report's setup: Django's default (CONN_MAX_AGE=0) opens and closes a database "
            "connection for every request; NullPool does the same.",
            "eventlet",
            settings={"pool_class": "NullPool"},
        ),
        Scenario(
            "eventlet-nullpool-tw-reuse",
            "The report's setup with the operator's first fix: net.ipv4.tcp_tw_reuse=1 on the application host, so "
            "a new connection may take a port whose TIME_WAIT is 1 s old. It still opens a connection per request.",
            "eventlet",
            settings={"pool_class": "NullPool"},
            tcp_tw_reuse=1,
        ),
        Scenario(
            "eventlet-singleton",
            "What CONN_MAX_AGE>0 is often taken to do under eventlet, not what Django does: one connection per thread, "
            "every greenlet is a thread, and the connection is kept open. SingletonThreadPool keeps one per greenlet; "
            "pool_size=1000, as many as a worker has greenlets, so it never closes a live greenlet's connection (a "
            "smaller pool_size does, and under eventlet that freezes the worker). It fails by holding connections "
            "open (ports and backends), where Django closes a greenlet's connection when the greenlet ends and so "
            "churns like eventlet-nullpool (make lab-django: django-eventlet-persistent).",
            "eventlet",
            settings={"pool_class": "SingletonThreadPool", "pool_size": 1000},
        ),
        Scenario(
            "eventlet-singleton-keepalive",
            "The same with clients that keep their TCP connection alive (ab -k): one greenlet, so one "
            "database connection, per client connection, reused for each of its requests. Persistent "
            "connections then need one client port each, held for as long as the client stays.",
            "eventlet",
            settings={"pool_class": "SingletonThreadPool", "pool_size": 1000},
            connection="keep-alive",
        ),
        Scenario(
            "eventlet-queuepool-default",
            "Pooling with SQLAlchemy's defaults (pool_size=5, max_overflow=10): overflow connections "
            "are closed on check-in, so bursts still open and close connections.",
            "eventlet",
            settings={"pool_class": "QueuePool", "pool_size": 5, "max_overflow": 10},
        ),
        Scenario(
            "eventlet-queuepool-sized",
            "Pooling sized for the load with no overflow (pool_size=10, max_overflow=0): a fixed set "
            "of connections, greenlets queue for them.",
            "eventlet",
            settings={"pool_class": "QueuePool", "pool_size": 10, "max_overflow": 0},
        ),
        Scenario(
            "gevent-queuepool-sized",
            "The supported green worker: gevent with the same sized pool and psycopg2 made "
            "cooperative (psycogreen, green_driver=on).",
            "gevent",
            settings={"pool_class": "QueuePool", "pool_size": 10, "max_overflow": 0, "green_driver": "on"},
        ),
        Scenario(
            "gevent-queuepool-blocking",
            "The same without the green driver (green_driver=off): every query blocks the whole worker.",
            "gevent",
            settings={"pool_class": "QueuePool", "pool_size": 10, "max_overflow": 0, "green_driver": "off"},
        ),
        Scenario(
            "eventlet-nullpool-pgbouncer",
            "The report's setup behind PgBouncer on the application host (pool_mode=transaction), reached over "
            "127.0.0.1: the service still opens a connection per request, to PgBouncer, which keeps a few to PostgreSQL.",
            "eventlet",
            settings={"pool_class": "NullPool"},
            pgbouncer=Placement.APP,
        ),
        Scenario(
            "eventlet-nullpool-pgbouncer-unix",
            "The same through PgBouncer's Unix socket: a connection per request, but no TCP port for it.",
            "eventlet",
            settings={"pool_class": "NullPool"},
            pgbouncer=Placement.APP_UNIX,
        ),
        Scenario(
            "eventlet-nullpool-pgbouncer-db",
            "The same with PgBouncer on the database host: the connection per request still crosses the network "
            "from the application host.",
            "eventlet",
            settings={"pool_class": "NullPool"},
            pgbouncer=Placement.DB,
        ),
        Scenario(
            "eventlet-nullpool-pgbouncer-session",
            "PgBouncer on the application host over 127.0.0.1 in pool_mode=session: a server connection is lent for "
            "the whole client connection, which under NullPool is one request.",
            "eventlet",
            settings={"pool_class": "NullPool"},
            pgbouncer=Placement.APP,
            pgbouncer_pool_mode="session",
        ),
        Scenario(
            "eventlet-queuepool-pgbouncer",
            "The sized in-process pool (pool_size=10, max_overflow=0) in front of PgBouncer on the application host "
            "(pool_mode=transaction): both layers pool.",
            "eventlet",
            settings={"pool_class": "QueuePool", "pool_size": 10, "max_overflow": 0},
            pgbouncer=Placement.APP,
        ),
        Scenario(
            "gthread-queuepool",
            "What the report found working: OS threads (threads=8) with a pool of one connection per "
            "thread (pool_size=8, max_overflow=0).",
            "gthread",
            threads=8,
            settings={"pool_class": "QueuePool", "pool_size": 8, "max_overflow": 0},
        ),
    ]
}


def _value(key: str, raw: str) -> Any:
    if key in ("workers", "threads", "worker_connections", "pgbouncer_pool_size"):
        try:
            return parse_integer(key, raw, 1)
        except SettingsError:
            raise ScenarioError(f"{key}={raw!r}: expected an integer >= 1") from None
    return raw


def parse_spec(spec: str, known: Mapping[str, Scenario]) -> Scenario:
    """A scenario from ``NAME`` or ``NAME:key=value,...`` (see the module docstring)."""
    name, _, rest = spec.partition(":")
    name = name.strip()
    if not rest:
        if name not in known:
            raise ScenarioError(
                f"unknown scenario {name!r}: choose from {', '.join(known)} (healthz lab list), or define one as NAME:worker_class=...,pool_class=..."
            )
        return known[name]
    changes: dict[str, Any] = {}
    for item in rest.split(","):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ScenarioError(f"scenario spec {spec!r}: {item!r} is not key=value")
        changes[key] = _value(key, raw.strip())
    return _build(spec if name in known else name, name, changes, known)


def _build(
    name: str,
    base: str | None,
    changes: Mapping[str, Any],
    known: Mapping[str, Scenario],
    root: Path | None = None,
) -> Scenario:
    unknown = set(changes) - set(SCENARIO_KEYS) - set(APP_KEYS) - set(ENVIRONMENT) | ({"database_url"} & set(changes))
    if unknown:
        accepted = ", ".join([*SCENARIO_KEYS, *APP_KEYS, *(f for f in ENVIRONMENT if f != "database_url")])
        raise ScenarioError(f"scenario {name}: unknown key(s) {', '.join(sorted(unknown))}; accepted: {accepted}")
    if base in known:
        if base != name and known[base].tries_fixes and "try_fixes" not in changes:
            changes = {**changes, "try_fixes": False}  # a variant of a scenario is measured, not fixed again
        return known[base].with_changes(name, changes, root)
    own, app_keys, settings = _split(changes)
    try:
        service = LabService().with_app_keys(name, app_keys, root)
    except ServiceKindError as exc:
        raise ScenarioError(str(exc)) from None
    own_service = service.own
    if "worker_class" not in changes and not own_service:
        raise ScenarioError(
            f"scenario {name}: a new scenario needs worker_class (one of {', '.join(WORKER_CLASSES)}), or app"
        )
    own.setdefault("worker_class", UNKNOWN)
    own.setdefault(
        "description",
        "your service as it is: its own code, settings and command"
        if own_service
        else f"user-defined: {', '.join(f'{k}={v}' for k, v in changes.items())}",
    )
    try:
        return Scenario(name=name, settings=settings, service=service, **own)
    except TypeError as exc:
        raise ScenarioError(f"scenario {name}: {exc}") from None


def load_file(path: Path, known: Mapping[str, Scenario]) -> dict[str, Scenario]:
    """Scenarios from a TOML file's ``[scenario.NAME]`` tables, in file order."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ScenarioError(f"--scenarios-file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"--scenarios-file {path}: not valid TOML: {exc}") from None
    tables = data.get("scenario")
    if not isinstance(tables, dict) or not tables:
        raise ScenarioError(f"--scenarios-file {path}: no [scenario.NAME] tables")
    found: dict[str, Scenario] = {}
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ScenarioError(f"--scenarios-file {path}: scenario.{name} must be a table")
        table = dict(table)
        base = table.pop("base", name if name in known else None)
        if base is not None and base not in {**known, **found}:
            raise ScenarioError(f"--scenarios-file {path}: scenario.{name}: unknown base {base!r}")
        found[name] = _build(name, base, table, {**known, **found}, Path(path).resolve().parent)
    return found


def select(specs: Iterable[str] = (), files: Iterable[Path] = (), apps: Iterable[Scenario] = ()) -> list[Scenario]:
    """The scenarios to run: each spec in order (from the defaults and the files' scenarios), then
    ``apps`` (``--app``). No specs means every default scenario followed by every scenario from the
    files, but only the files' (or only ``apps``) when they hold a team's own service: the question
    is then about that service."""
    known: dict[str, Scenario] = dict(DEFAULTS)
    from_files: dict[str, Scenario] = {}
    for path in files:
        loaded = load_file(path, known)
        known.update(loaded)
        from_files.update(loaded)
    specs, apps = list(specs), list(apps)
    if not specs:
        own = apps or any(s.own_service for s in from_files.values())
        return [*([] if own else DEFAULTS.values()), *from_files.values(), *apps]
    chosen = [parse_spec(spec, known) for spec in specs] + apps
    names = [s.name for s in chosen]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ScenarioError(f"scenario(s) given twice: {', '.join(duplicates)}")
    return chosen


def own_service(
    command: str,
    path: str = DEFAULT_PATH,
    name: str = "app",
    *,
    app_dir: Path | None = None,
    python: Path | None = None,
    setup: str | None = None,
    env: Iterable[str] = (),
    try_fixes: bool = False,
) -> Scenario:
    """The scenario of ``--app COMMAND``: that command run from ``app_dir`` (default: the current
    directory), ``path`` its health endpoint, ``env`` as ``KEY=VALUE`` pairs."""
    try:
        variables = parse_env(tuple(env))
    except AppSpecError as exc:
        raise ScenarioError(str(exc)) from None
    try:
        spec = AppSpec(
            command,
            app_dir=Path(app_dir).resolve() if app_dir else Path.cwd(),
            path=path,
            python=Path(python).resolve() if python else None,
            setup=setup,
            env=variables,
            try_fixes=try_fixes,
        )
    except AppSpecError as exc:
        raise ScenarioError(f"--app: {exc}") from None
    return Scenario(
        name, "your service as it is: its own code, settings and command", UNKNOWN, service=OwnService(spec)
    )


def running_service(url: str) -> Scenario:
    """The scenario of ``--target URL``: a service already running, which the lab only loads."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ScenarioError(f"--target {url!r}: expected an http(s) URL such as http://127.0.0.1:8000/api/v1/healthz/")
    return Scenario("target", f"a running service: {url}", UNKNOWN, service=RunningTarget(url))


def parse_concurrency(text: str) -> list[int]:
    """``"200,500,1000"`` as ``[200, 500, 1000]``: positive integers, each at most 20,000."""
    steps: list[int] = []
    for item in text.split(","):
        try:
            value = int(item.strip())
        except ValueError:
            value = 0
        if not 1 <= value <= 20000:
            raise ScenarioError(
                f"--concurrency {text!r}: expected comma-separated integers from 1 to 20000, such as 200,500,1000"
            )
        steps.append(value)
    return steps
