"""Changes laid over a team's code from outside, so that a fix is measured on their project without
editing a file of it. Each overlay is files in the run's own folder and environment variables:

* :func:`sqlalchemy_pool`: a ``sitecustomize`` first on ``PYTHONPATH`` (which chains to any the
  interpreter had) whose import hook wraps SQLAlchemy's ``create_engine`` when SQLAlchemy is imported:
  the pool arguments given win over the app's (Flask-SQLAlchemy's ``SQLALCHEMY_ENGINE_OPTIONS`` go
  through ``create_engine`` too), and every engine's real pool is written to a file, one JSON line per
  engine and process (:func:`engines`). An app that makes no engine through ``create_engine`` is seen
  there: no line.
"""

from __future__ import annotations

import json
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
            with open(_REPORT, "a") as fh:
                fh.write(json.dumps(line) + "\n")
        return engine

    module.create_engine = create_engine


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "sqlalchemy.engine.create":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        run = loader.exec_module

        def exec_module(module):
            run(module)
            _wrap(module)

        loader.exec_module = exec_module
        return spec


if _ARGS or _REPORT:
    sys.meta_path.insert(0, _Finder())

# The interpreter's own sitecustomize (Debian has one), found past this folder.
_rest = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
_spec = importlib.machinery.PathFinder.find_spec("sitecustomize", _rest)
if _spec is not None and _spec.loader is not None:
    _module = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
'''


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


def engines(folder: Path) -> list[dict[str, Any]]:
    """The engines the service's processes made, as the hook wrote them (one per engine and process)."""
    try:
        lines = (folder / "engines.jsonl").read_text().splitlines()
    except OSError:
        return []
    return [json.loads(line) for line in lines if line.strip()]
