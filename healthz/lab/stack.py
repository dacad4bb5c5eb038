"""A team's stack, read from its own venv and command before any load rather than declared: the
framework and driver versions its interpreter imports, gunicorn's resolved worker settings
(``--print-config`` on its own command) and, for Django, the database settings its WSGI module loads
(``CONN_MAX_AGE``, ``CONN_HEALTH_CHECKS``, ``OPTIONS["pool"]``). Nothing is written and nothing
connects to the database; what cannot be read is said in ``notes``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from healthz.config import mask_password

#: The packages whose versions decide how a service's connections live.
PACKAGES = (
    "django",
    "djangorestframework",
    "flask",
    "flask-sqlalchemy",
    "sqlalchemy",
    "psycopg2",
    "psycopg2-binary",
    "psycopg",
    "psycopg-pool",
    "gunicorn",
    "eventlet",
    "gevent",
)
_GUNICORN_KEYS = ("worker_class", "workers", "threads", "worker_connections")
_TIMEOUT = 60

# Run by the team's interpreter in its project folder: versions, then Django's database settings as its
# WSGI module loads them (it sets DJANGO_SETTINGS_MODULE as gunicorn would find it).
_PROBE = r"""
import importlib, importlib.metadata as metadata, json, os, sys
out = {"python": sys.version.split()[0], "packages": {}, "imports": [], "notes": []}
for name in json.loads(sys.argv[1]):
    try:
        out["packages"][name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        pass
module = sys.argv[2]
if module:
    sys.path.insert(0, os.getcwd())
    try:
        importlib.import_module(module)
    except Exception as exc:
        out["notes"].append(f"{module} could not be imported: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    out["imports"] = [m for m in ("django", "flask_sqlalchemy", "flask", "sqlalchemy", "psycopg2", "psycopg") if sys.modules.get(m)]
if "django" in out["imports"] and os.environ.get("DJANGO_SETTINGS_MODULE"):
    try:
        from django.conf import settings
        db = settings.DATABASES["default"]
        out["django"] = {
            "settings": os.environ.get("DJANGO_SETTINGS_MODULE"),
            "engine": db.get("ENGINE"),
            "conn_max_age": db.get("CONN_MAX_AGE", 0),
            "conn_health_checks": db.get("CONN_HEALTH_CHECKS", False),
            "pool": (db.get("OPTIONS") or {}).get("pool"),
        }
        try:  # Django 4.2+: the driver its postgresql backend takes (psycopg 3 whenever importable)
            from django.db.backends.postgresql import psycopg_any
            out["django"]["driver"] = "psycopg" if psycopg_any.is_psycopg3 else "psycopg2"
        except Exception:
            out["django"]["driver"] = "psycopg2" if sys.modules.get("psycopg2") else None
    except Exception as exc:
        out["notes"].append(f"Django's settings could not be read: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
print(json.dumps(out, default=str))
"""


@dataclasses.dataclass(frozen=True)
class Stack:
    """What a team's service runs: ``packages`` by distribution name, gunicorn's resolved worker
    settings (None when the command is not gunicorn's), Django's database settings (None outside
    Django), and ``notes`` on what could not be read."""

    python: str | None = None
    packages: dict[str, str] = dataclasses.field(default_factory=dict)
    module: str | None = None  # its WSGI module, imported to read what it uses
    imports: list[str] = dataclasses.field(default_factory=list)  # what that module imported
    gunicorn: dict[str, Any] | None = None
    django: dict[str, Any] | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    #: The pools its SQLAlchemy engines really got in its running processes (the hooks' records).
    engines: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def framework(self) -> str:
        """``Django``, ``Flask-SQLAlchemy``, ``Flask``, ``SQLAlchemy`` or ``unknown``: what its WSGI
        module imported (a venv may hold several), else (no WSGI module to import) the first its packages hold."""
        order = (
            ("django", "Django"),
            ("flask_sqlalchemy", "Flask-SQLAlchemy"),
            ("flask", "Flask"),
            ("sqlalchemy", "SQLAlchemy"),
        )
        for module, shown in order:
            if module in self.imports:
                return shown
        for module, shown in order:
            if module.replace("_", "-") in self.packages and self.module is None:
                return shown
        return "unknown"

    @property
    def driver(self) -> str | None:
        """The PostgreSQL driver its interpreter has: ``psycopg2 2.9.5``, ``psycopg 3.2.3`` (both when both are there)."""
        found = [
            f"{name.removesuffix('-binary')} {self.packages[name]}"
            for name in ("psycopg2", "psycopg2-binary", "psycopg")
            if name in self.packages
        ]
        return ", ".join(found) or None

    def line(self) -> str:
        """One line for a report's set-up block."""
        parts = [self.framework if self.framework == "unknown" else f"{self.framework} {self._version()}"]
        beside = {"Django": ("djangorestframework",), "Flask-SQLAlchemy": ("sqlalchemy",), "Flask": ("sqlalchemy",)}
        parts += [f"{name} {self.packages[name]}" for name in beside.get(self.framework, ()) if name in self.packages]
        parts += [self.driver] if self.driver else []
        if self.gunicorn:
            g = self.gunicorn
            parts.append(
                f"gunicorn {self.packages.get('gunicorn', '?')} {g.get('worker_class')} workers={g.get('workers')} "
                f"threads={g.get('threads')} worker_connections={g.get('worker_connections')}"
            )
        if self.django:
            d = self.django
            parts.append(
                f"CONN_MAX_AGE={d.get('conn_max_age')} CONN_HEALTH_CHECKS={d.get('conn_health_checks')}"
                + (f" OPTIONS['pool']={d.get('pool')}" if d.get("pool") else "")
            )
        if self.engines:
            shapes = [
                f"{e['pool']}(pool_size={e['pool_size']}, max_overflow={e['max_overflow']})"
                if e.get("max_overflow") is not None
                else str(e["pool"])
                for e in self.engines
            ]
            counted = {shape: shapes.count(shape) for shape in shapes}
            parts.append("its engines: " + ", ".join(f"{shape} x{n}" for shape, n in counted.items()))
        return ", ".join(parts) + (f" ({'; '.join(self.notes)})" if self.notes else "")

    def _version(self) -> str:
        key = {"Django": "django", "Flask-SQLAlchemy": "flask-sqlalchemy", "Flask": "flask", "SQLAlchemy": "sqlalchemy"}
        return self.packages.get(key[self.framework], "?")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "framework": self.framework}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Stack:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def script_python(path: str) -> str | None:
    """The Python a script's ``#!`` line names (``/venv/bin/python3`` of a venv's ``gunicorn``), or None."""
    try:
        with open(path, "rb") as fh:
            line = fh.readline(300).decode(errors="replace")
    except OSError:
        return None
    words = line[2:].split() if line.startswith("#!") else []
    return words[0] if words and Path(words[0]).name.startswith("python") else None


def interpreter(argv: Sequence[str], path: str | None) -> str | None:
    """The Python that runs ``argv``: its first word when that is a Python (``{python} -m gunicorn``),
    else the one its script's ``#!`` line names (a venv's ``gunicorn``), else ``python3`` on ``path``."""
    if argv:
        first = shutil.which(argv[0], path=path) or argv[0]
        if Path(first).name.startswith("python"):
            return first
        named = script_python(first)
        if named and Path(named).exists():
            return named
    return shutil.which("python3", path=path) or shutil.which("python", path=path)


def wsgi_module(argv: Sequence[str]) -> str | None:
    """The WSGI module a gunicorn command serves (``myapp.wsgi`` of ``myapp.wsgi:application``)."""
    if not any(Path(arg).name == "gunicorn" or arg == "gunicorn" for arg in argv):
        return None
    for arg in argv[1:]:
        if not arg.startswith("-") and re.fullmatch(r"[\w.]+:[\w.()]+", arg):
            return arg.split(":", 1)[0]
    return None


def print_config(argv: Sequence[str]) -> list[str] | None:
    """The command line that prints gunicorn's resolved configuration for ``argv``, or None when
    ``argv`` is not a gunicorn command."""
    return list(argv) + ["--print-config"] if wsgi_module(argv) else None


def parse_print_config(text: str) -> dict[str, Any]:
    """worker_class, workers, threads and worker_connections from ``gunicorn --print-config``."""
    found: dict[str, Any] = {}
    for line in text.splitlines():
        key, sep, value = (part.strip() for part in line.partition("="))
        if sep and key in _GUNICORN_KEYS:
            found[key] = int(value) if value.isdigit() else value
    return found


def read(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path | None, python: str, like: Stack | None = None
) -> Stack:
    """The stack of the service ``argv`` starts with ``env`` in ``cwd``, read by its ``python``;
    ``like``: the same code's, read already (a fix laid over it): only gunicorn's settings are read again."""
    if like is not None:
        return dataclasses.replace(like, gunicorn=_gunicorn(argv, env, cwd, []))
    notes: list[str] = []
    probe = _run([python, "-c", _PROBE, json.dumps(PACKAGES), wsgi_module(argv) or ""], env, cwd)
    try:
        data = json.loads(probe.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return Stack(notes=[mask_password(f"{python} could not read its packages: {_first(probe.stderr)}")])
    notes += data.get("notes", [])
    gunicorn = _gunicorn(argv, env, cwd, notes)
    return Stack(
        python=data.get("python"),
        packages=data.get("packages", {}),
        module=wsgi_module(argv),
        imports=data.get("imports", []),
        gunicorn=gunicorn,
        django=data.get("django"),
        notes=[mask_password(n) for n in notes],
    )


def _gunicorn(argv: Sequence[str], env: Mapping[str, str], cwd: Path | None, notes: list[str]) -> dict[str, Any] | None:
    """gunicorn's resolved worker settings for ``argv`` (None when it is not gunicorn's; why in ``notes``)."""
    command = print_config(argv)
    if not command:
        return None
    printed = _run(command, env, cwd)
    found = parse_print_config(printed.stdout) or None
    if found is None:
        notes.append(f"gunicorn --print-config said nothing usable: {_first(printed.stderr)}")
    return found


def _run(argv: Sequence[str], env: Mapping[str, str], cwd: Path | None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(list(argv), env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(list(argv), 1, "", str(exc))


def _first(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "(no output)"
