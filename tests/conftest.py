"""Fixtures on real services: one throwaway PostgreSQL per session, a fresh database per test,
apps built by the app factory, and real gunicorn processes.

``HEALTHZ_TEST_DATABASE_URL`` is not offered on purpose: the tests stop, restart and overload
their server, which only a throwaway one may suffer.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import time

import pytest
from helpers import backends, wait_until

from healthz import Settings, create_app, db
from healthz.postgres import PostgreSQL, free_port
from healthz.service import Gunicorn

_names = itertools.count(1)


def pytest_addoption(parser):
    parser.addoption(
        "--no-processes",
        action="store_true",
        help="skip every test at the moment it starts a child process (make test-fast: the inner loop)",
    )


def pytest_configure(config):
    if config.getoption("--no-processes"):
        # Skipped where it happens rather than by a list kept by hand: a test that starts PostgreSQL,
        # gunicorn, locust or any command through subprocess is not a fast one, whatever it is called.
        def refuse(self, *args, **kwargs):
            pytest.skip("starts a child process (make test-fast runs none)", allow_module_level=True)

        subprocess.Popen.__init__ = refuse


#: The modules that take longest (5 s or more each, measured with --durations on two workers), in
#: that order. make test gives each xdist worker a module at a time in collection order
#: (``--no-loadscope-reorder``: by default xdist sorts modules by their number of tests, which put the
#: long ones, with few tests each, last): these go first and the short ones fill in at the end, so
#: that neither worker is left with a long one alone while the other waits.
LONGEST_FIRST = (
    "tests/lab/test_runner_defaults.py",
    "tests/test_packaging.py",
    "tests/bench/test_bench_runner.py",
    "tests/lab/test_fault_runner.py",
    "tests/lab/test_runner.py",
    "tests/lab/test_own_service.py",
    "tests/lab/test_try_fixes.py",
    "tests/lab/test_check.py",
    "tests/lab/test_django_report.py",
    "tests/lab/test_fault_runner_own.py",
    "tests/test_workers.py",
    "tests/lab/test_lab_cli.py",
    "tests/lab/test_deploys.py",
    "tests/lab/test_idle_fault.py",
    "tests/test_pytest_plugin.py",
    "tests/lab/test_load.py",
    "tests/test_liveness.py",
    "tests/lab/test_fault_report.py",
    "tests/test_doctor.py",
    "tests/test_postgres.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    # sort is stable: within a module, and among the others, collection order is kept.
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


# A shell without job control starts a background job with SIGINT ignored, and every child the tests
# start would inherit that and sit through the SIGINT a test sends it (Python keeps an inherited
# SIG_IGN). Handled here, the signal is back to its default in every child.
signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def postgres():
    """The session's PostgreSQL: max_connections high enough for every test's pools."""
    with PostgreSQL(max_connections=400) as pg:
        yield pg


@pytest.fixture
def database(postgres):
    """A fresh database seeded with 10 roles: its name; dropped after the test."""
    name = f"t{next(_names)}_{int(time.time() * 1000) % 100000}"
    url = postgres.create_database(name)
    db.seed(Settings.from_mapping({"database_url": url}), 10)
    yield name
    # The leak check: every app, engine and server of the test is gone by now.
    left = wait_until(lambda: backends(postgres, name) == 0, timeout=10)
    postgres.drop_database(name)
    assert left, f"service connections left open on {name}"


@pytest.fixture
def database_url(postgres, database):
    return postgres.url_for(database)


@pytest.fixture
def make_app(database_url):
    """Build apps on the test's database; their engines are disposed after the test."""
    apps = []

    def make(**overrides):
        app = create_app({"database_url": database_url, **overrides})
        app.config["TESTING"] = True
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["healthz.engine"].dispose()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def run_gunicorn(tmp_path, database_url, postgres):
    """Start gunicorn with ``healthz.gunicorn_conf.<worker_class>`` on the test's database.

    Every server is stopped after the test, and its log is checked for the password.
    """
    servers: list[Gunicorn] = []

    def run(worker_class: str, workers: int = 1, url: str | None = None, **env: str) -> Gunicorn:
        environ = {
            "DATABASE_URL": url or database_url,
            "GUNICORN_WORKERS": str(workers),
            "GUNICORN_GRACEFUL_TIMEOUT": "5",
        }
        environ.update({k: str(v) for k, v in env.items()})
        server = Gunicorn(worker_class, environ, tmp_path / f"gunicorn-{len(servers)}.log", port=free_port())
        servers.append(server)
        return server.start()

    yield run
    for server in servers:
        # gunicorn's quick shutdown: its workers still close their pools (worker_exit), without
        # waiting out graceful_timeout for a keep-alive client or a worker still booting.
        server.stop(quick=True)
    for server in servers:
        assert postgres.password not in server.log_text(), f"password in {server.logfile}"
