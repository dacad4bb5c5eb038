"""The healthz command, through click's CliRunner on a real database."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from healthz import __version__
from healthz.cli import main

COMMANDS = sorted(main.commands)


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert main.commands[command].help and "Example:" in result.output


def test_init_db_creates_and_seeds_idempotently(postgres, database):
    url = postgres.url_for(database)
    with postgres.connect(database, "healthz") as conn:
        conn.cursor().execute("DROP TABLE role")
    for _ in range(2):
        result = CliRunner().invoke(main, ["init-db", "--roles", "7", "--database-url", url])
        assert result.exit_code == 0, result.output
        assert ": 7 rows" in result.output
    assert postgres.password not in result.output
    with postgres.connect(database, "healthz") as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM role")
        assert cur.fetchone()[0] == 7


def test_init_db_reads_database_url_from_the_environment(postgres, database, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", postgres.url_for(database))
    result = CliRunner().invoke(main, ["init-db", "--roles", "3"])
    assert result.exit_code == 0, result.output
    assert "10 rows" in result.output  # the database fixture seeded 10 already


def test_init_db_without_a_database_says_what_to_do(monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    result = CliRunner().invoke(main, ["init-db"])
    assert result.exit_code == 2
    assert "pass --database-url or set DATABASE_URL" in result.output


def test_init_db_bad_url_and_unreachable_database(postgres):
    result = CliRunner().invoke(main, ["init-db", "--database-url", "mysql://u:topsecret@h/d"])
    assert result.exit_code == 2 and "DATABASE_URL='mysql://u:***@h/d' is not accepted" in result.output
    dead = postgres.url_for("healthz").replace(f":{postgres.port}/", ":1/")
    result = CliRunner().invoke(main, ["init-db", "--database-url", dead])
    assert result.exit_code == 1
    assert "cannot seed" in result.output and "Connection refused" in result.output
    assert postgres.password not in result.output


def _spawn(*args, env=None):
    import os
    import subprocess
    import sys

    environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    environ.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "healthz", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environ,
    )


def _stop(process):
    import signal

    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    return process.returncode, output


def test_postgres_command_runs_a_throwaway_server_until_interrupted():
    import psycopg2

    process = _spawn("postgres", "--max-connections", "50", "--roles", "3")
    try:
        lines = [process.stdout.readline() for _ in range(2)]
        url = lines[1].strip().removeprefix("export DATABASE_URL=")
        assert url.startswith("postgresql://healthz:"), lines
        directory = lines[0].split("data in ")[1].split(";")[0]
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*), current_setting('max_connections') FROM role")
            assert cur.fetchone() == (3, "50")
        conn.close()
    finally:
        status, _ = _stop(process)
    assert status == 0
    import os

    assert not os.path.exists(directory)


def test_serve_starts_its_own_database_and_gunicorn():
    import time
    import urllib.request

    from healthz.postgres import free_port

    port = free_port()
    process = _spawn("serve", "--worker-class", "gthread", "--port", str(port), env={"GUNICORN_WORKERS": "1"})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/healthz/", timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "healthz serve did not answer"
                time.sleep(0.2)
    finally:
        _, output = _stop(process)
    assert "throwaway PostgreSQL" in output and "Shutting down: Master" in output
