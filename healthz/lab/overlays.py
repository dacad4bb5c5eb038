"""Changes laid over a team's code from outside, so that a fix is measured on their project without
editing a file of it. An overlay is files in the run's own folder and environment variables
(:func:`lay`):

* a ``sitecustomize`` first on ``PYTHONPATH`` (which chains to any the interpreter had) with import
  hooks: SQLAlchemy's ``create_engine`` wrapped when SQLAlchemy is imported, the pool arguments given
  winning over the app's (Flask-SQLAlchemy's ``SQLALCHEMY_ENGINE_OPTIONS`` go through
  ``create_engine`` too); Django's ``Settings`` wrapped when ``django.conf`` is imported, each of
  ``DATABASES``' entries updated after the team's settings module has run (``OPTIONS`` merged).
  Each records what it really gave, one JSON line per engine or settings and process
  (:func:`engines`, :func:`django_settings`): an app that builds its engine another way leaves no
  line, and the fix is said not to apply rather than measured wrong.
* ``GUNICORN_CMD_ARGS``: gunicorn reads it over its config file and under its command line, so a
  worker class given on the team's command line is not overridden (``--print-config`` says so).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Pool arguments the overlay accepts, with the type each is given in.
POOL_ARGUMENTS = {
    "poolclass": str,
    "pool_size": int,
    "max_overflow": int,
    "pool_timeout": float,
    "pool_recycle": int,
    "pool_pre_ping": bool,
    "pool_use_lifo": bool,
}
POOL_CLASSES = ("QueuePool", "NullPool", "SingletonThreadPool", "StaticPool", "AsyncAdaptedQueuePool")

_SITECUSTOMIZE = r'''
"""healthz's overlay (the run's own folder; the team's project is not touched): SQLAlchemy's
create_engine wrapped when SQLAlchemy is imported, then the interpreter's own sitecustomize, if any."""
import importlib.abc, importlib.machinery, importlib.util, json, os, sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_ARGS = json.loads(os.environ.get("HEALTHZ_OVERLAY_POOL") or "{}")
_REPORT = os.environ.get("HEALTHZ_OVERLAY_ENGINES")
_DJANGO = json.loads(os.environ.get("HEALTHZ_OVERLAY_DJANGO") or "{}")
_DJANGO_REPORT = os.environ.get("HEALTHZ_OVERLAY_DJANGO_SEEN")


def _record(path, line):
    with open(path, "a") as fh:
        fh.write(json.dumps(line, default=str) + "\n")


def _wrap(module):
    original = module.create_engine

    def create_engine(url, *args, **kwargs):
        given = dict(_ARGS)
        if "poolclass" in given:
            import sqlalchemy.pool

            given["poolclass"] = getattr(sqlalchemy.pool, given["poolclass"])
            if given["poolclass"] is not sqlalchemy.pool.QueuePool:
                for key in ("pool_size", "max_overflow", "pool_timeout", "pool_use_lifo"):
                    kwargs.pop(key, None)
        kwargs.update(given)
        engine = original(url, *args, **kwargs)
        if _REPORT:
            pool = engine.pool
            line = {
                "pid": os.getpid(),
                "database": engine.url.database,
                "pool": type(pool).__name__,
                "pool_size": pool.size() if hasattr(pool, "_max_overflow") else None,
                "max_overflow": getattr(pool, "_max_overflow", None),
                "overlaid": sorted(given),
            }
            _record(_REPORT, line)
        return engine

    module.create_engine = create_engine


def _wrap_django(module):
    settings_class = module.Settings
    original = settings_class.__init__

    def __init__(self, settings_module):
        original(self, settings_module)
        seen = {}
        for alias, db in self.DATABASES.items():
            db.update({k: v for k, v in _DJANGO.items() if k != "OPTIONS"})
            if "OPTIONS" in _DJANGO:
                db["OPTIONS"] = {**(db.get("OPTIONS") or {}), **_DJANGO["OPTIONS"]}
            seen[alias] = {
                "CONN_MAX_AGE": db.get("CONN_MAX_AGE", 0),
                "CONN_HEALTH_CHECKS": db.get("CONN_HEALTH_CHECKS", False),
                "pool": (db.get("OPTIONS") or {}).get("pool"),
            }
        if _DJANGO_REPORT:
            _record(_DJANGO_REPORT, {"pid": os.getpid(), "settings": settings_module, "databases": seen, "overlaid": sorted(_DJANGO)})

    settings_class.__init__ = __init__


_HOOKS = {"sqlalchemy.engine.create": _wrap, "django.conf": _wrap_django}


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in _HOOKS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        run = loader.exec_module

        def exec_module(module):
            run(module)
            _HOOKS[name](module)

        loader.exec_module = exec_module
        return spec


if _ARGS or _REPORT or _DJANGO or _DJANGO_REPORT:
    sys.meta_path.insert(0, _Finder())

# The interpreter's own sitecustomize (Debian has one), found past this folder.
_rest = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
_spec = importlib.machinery.PathFinder.find_spec("sitecustomize", _rest)
if _spec is not None and _spec.loader is not None:
    _module = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
'''


#: The variables naming the files the hooks record into.
RECORDS = ("HEALTHZ_OVERLAY_ENGINES", "HEALTHZ_OVERLAY_DJANGO_SEEN")


class OverlayError(ValueError):
    """An overlay that cannot be laid as asked; the message names the key and what is accepted."""


def parse_pool(text: str) -> dict[str, Any]:
    """``"pool_size=16,max_overflow=0"`` as SQLAlchemy's pool arguments, each checked."""
    args: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or key not in POOL_ARGUMENTS:
            raise OverlayError(f"pool overlay {item!r}: expected KEY=VALUE with KEY one of {', '.join(POOL_ARGUMENTS)}")
        kind = POOL_ARGUMENTS[key]
        try:
            if kind is bool:
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                args[key] = value.lower() in ("true", "1")
            else:
                args[key] = kind(value)
        except ValueError:
            raise OverlayError(f"pool overlay {key}={value!r}: expected {kind.__name__}") from None
    if "poolclass" in args and args["poolclass"] not in POOL_CLASSES:
        raise OverlayError(f"pool overlay poolclass={args['poolclass']!r}: expected one of {', '.join(POOL_CLASSES)}")
    if not args:
        raise OverlayError("pool overlay: expected at least one KEY=VALUE, such as pool_size=16,max_overflow=0")
    return args


#: The keys of Django's ``DATABASES`` entries a fix may lay over, with what each accepts.
DJANGO_KEYS = {
    "CONN_MAX_AGE": "seconds >= 0, or none for unlimited",
    "CONN_HEALTH_CHECKS": "true or false",
    "DISABLE_SERVER_SIDE_CURSORS": "true or false",
    "OPTIONS": "a table",
}


def check_pool(pool: Mapping[str, Any]) -> dict[str, Any]:
    """``pool`` (a table, or text as :func:`parse_pool` reads) as checked pool arguments."""
    if isinstance(pool, str):
        return parse_pool(pool)
    if not isinstance(pool, Mapping):
        raise OverlayError(f"sqlalchemy_pool {pool!r}: expected a table such as {{ pool_size = 8, max_overflow = 0 }}")
    return parse_pool(",".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in pool.items()))


def check_django(databases: Mapping[str, Any]) -> dict[str, Any]:
    """``databases`` (what a fix sets in every entry of Django's ``DATABASES``), each key checked."""
    if not isinstance(databases, Mapping) or not databases:
        raise OverlayError("django_databases: expected a table such as { CONN_MAX_AGE = 600 }")
    for key, value in databases.items():
        ok = {
            "CONN_MAX_AGE": value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0),
            "CONN_HEALTH_CHECKS": isinstance(value, bool),
            "DISABLE_SERVER_SIDE_CURSORS": isinstance(value, bool),
            "OPTIONS": isinstance(value, Mapping),
        }.get(key)
        if ok is None:
            raise OverlayError(f"django_databases.{key}: expected one of {', '.join(DJANGO_KEYS)}")
        if not ok:
            raise OverlayError(f"django_databases.{key} {value!r}: expected {DJANGO_KEYS[key]}")
    return dict(databases)


def sqlalchemy_pool(folder: Path, pool: Mapping[str, Any] | None, base_env: Mapping[str, str]) -> dict[str, str]:
    """Write the hook into ``folder`` (the run's own) and return the environment that lays ``pool``
    over every SQLAlchemy engine of the service (None: only their real pools are recorded)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(_SITECUSTOMIZE.lstrip())
    path = base_env.get("PYTHONPATH")
    return {
        "PYTHONPATH": str(folder) + (f":{path}" if path else ""),
        "HEALTHZ_OVERLAY_POOL": json.dumps(dict(pool or {})),
        "HEALTHZ_OVERLAY_ENGINES": str(folder / "engines.jsonl"),
    }


def lay(
    folder: Path,
    base_env: Mapping[str, str],
    *,
    pool: Mapping[str, Any] | None = None,
    django: Mapping[str, Any] | None = None,
    gunicorn_args: str | None = None,
) -> dict[str, str]:
    """The hooks written into ``folder`` (the run's own) and the environment that lays ``pool`` over
    every SQLAlchemy engine, ``django`` over every entry of Django's ``DATABASES`` and
    ``gunicorn_args`` after any ``GUNICORN_CMD_ARGS`` of ``base_env``; with none given, the hooks
    still record what the service's engines and settings really got."""
    folder = Path(folder).absolute()  # the service runs in its own folder: a relative path would miss
    env = sqlalchemy_pool(folder, pool, base_env)
    env["HEALTHZ_OVERLAY_DJANGO"] = json.dumps(dict(django or {}))
    env["HEALTHZ_OVERLAY_DJANGO_SEEN"] = str(folder / "django.jsonl")
    if gunicorn_args:
        before = base_env.get("GUNICORN_CMD_ARGS", "").strip()
        env["GUNICORN_CMD_ARGS"] = f"{before} {gunicorn_args}".strip()
    return env


def _lines(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def django_settings(folder: Path) -> list[dict[str, Any]]:
    """Django's database settings as each of the service's processes loaded them (one line per process)."""
    return _lines(folder / "django.jsonl")


def engines(folder: Path) -> list[dict[str, Any]]:
    """The engines the service's processes made, as the hook wrote them (one per engine and process)."""
    return _lines(folder / "engines.jsonl")


def _worker_class(args: str) -> str | None:
    """The worker class ``args`` (gunicorn's options) asks for, if any."""
    words = shlex.split(args)
    for i, word in enumerate(words):
        for flag in ("-k", "--worker-class"):
            if word == flag and i + 1 < len(words):
                return words[i + 1]
            if word.startswith(flag + "="):
                return word.split("=", 1)[1]
    return None


def not_applied(
    folder: Path,
    *,
    pool: Mapping[str, Any] | None,
    django: Mapping[str, Any] | None,
    gunicorn_args: str | None,
    gunicorn: Mapping[str, Any] | None,
) -> str | None:
    """Why an overlay did not reach the service, from what its hooks recorded in ``folder`` and
    gunicorn's resolved settings (``--print-config`` with the overlay), or None when each did."""
    if pool and not engines(folder):
        return (
            "sqlalchemy_pool did not apply: the service made no SQLAlchemy engine through create_engine "
            "(no SQLAlchemy, or an engine built another way)"
        )
    if django and not django_settings(folder):
        return "django_databases did not apply: the service loaded no Django settings"
    if gunicorn_args:
        if gunicorn is None:
            return "gunicorn_args did not apply: the command is not gunicorn's (GUNICORN_CMD_ARGS is read by gunicorn alone)"
        asked = _worker_class(gunicorn_args)
        got = str(gunicorn.get("worker_class", ""))
        if asked and asked not in got and got.rsplit(".", 1)[-1].lower() != f"{asked}worker":
            return (
                f"gunicorn_args did not apply: gunicorn resolved worker_class {got} for {asked} "
                "(the command line or its config's code sets it, over GUNICORN_CMD_ARGS)"
            )
    return None
