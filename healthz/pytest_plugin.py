"""healthz's pytest plugin (entry point ``pytest11``, loaded wherever healthz is installed): fixtures
only, so it does nothing unless a test asks for one; the lab is imported when a fixture is used.

* ``healthz_postgres`` (session): a throwaway PostgreSQL for the session's checks, ``.url`` and
  ``.new_database()``; bundled binaries where none is installed, as the lab's.
* ``healthz_database``: a fresh, empty database of its own on it for one test (its URL), dropped after.
* ``healthz_check``: a callable taking ``healthz check``'s options by the same names (``app``,
  ``app_dir``, ``python``, ``setup``, ``env`` as a dict, ``path``, ``clients``, ``requests``,
  ``duration``, ``rate``, ``sqlalchemy_pool``, ``max_sessions_per_request`` ...) that runs the team's command on a fresh
  database and returns a :class:`healthz.lab.check.CheckResult`.

    def test_health_check_keeps_its_connections(healthz_check):
        result = healthz_check(app="gunicorn myapp.wsgi -k gevent -b {bind}", setup="python manage.py migrate")
        assert result.sessions_per_request <= 0.01, result
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

import pytest


class HealthzPostgres:
    """The session's throwaway server: ``url`` (its own app database) and fresh databases on demand."""

    def __init__(self, server) -> None:
        self.server = server
        self._names = itertools.count(1)
        self.made: list[str] = []

    @property
    def url(self) -> str:
        return self.server.url

    def new_database(self) -> str:
        """A fresh, empty database with an owner of its own; its URL."""
        name = f"check_{next(self._names)}"
        self.made.append(name)
        return self.server.new_database(name)

    def drop(self, url: str) -> None:
        """Drop the database ``url`` names, ending its sessions."""
        self.server.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture(scope="session")
def healthz_postgres():
    """A throwaway PostgreSQL for the session (stopped and removed after it)."""
    from healthz.postgres import PostgreSQL

    with PostgreSQL(max_connections=500) as server:
        yield HealthzPostgres(server)


@pytest.fixture
def healthz_database(healthz_postgres):
    """A fresh, empty database for one test: its URL; dropped after the test."""
    url = healthz_postgres.new_database()
    yield url
    healthz_postgres.drop(url)


_PATHS = ("app_dir", "python")
_BUDGET = ("max_sessions_per_request", "max_failed", "max_p99_ms", "max_backends")


@pytest.fixture
def healthz_check(healthz_postgres, tmp_path):
    """``healthz_check(app=..., **options)``: one check on a fresh database (dropped after the test),
    its files in the test's ``tmp_path``; options as ``healthz check``'s, ``env`` a dict."""
    from healthz.lab.check import Budget, CheckOptions
    from healthz.lab.check_run import run_check
    from healthz.lab.overlays import parse_pool

    used: list[str] = []
    runs = itertools.count(1)
    accepted = sorted({f.name for f in dataclasses.fields(CheckOptions)} - {"app", "budget"} | set(_BUDGET))

    def check(app: str, **options: Any):
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise TypeError(f"healthz_check: unknown option(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}")
        budget = Budget(**{k: options.pop(k) for k in _BUDGET if k in options})
        for key in _PATHS:
            if options.get(key) is not None:
                options[key] = Path(options[key])
        if isinstance(options.get("sqlalchemy_pool"), str):  # as the command line writes it
            options["sqlalchemy_pool"] = parse_pool(options["sqlalchemy_pool"])
        url = options.pop("database_url", None)
        if url is None:
            url = healthz_postgres.new_database()
            used.append(url)
        settings = CheckOptions(app=app, database_url=url, budget=budget, **options)
        return run_check(settings, output=tmp_path / f"healthz-check-{next(runs)}")

    yield check
    for url in used:
        healthz_postgres.drop(url)
