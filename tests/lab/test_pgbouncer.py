"""A real PgBouncer (found, or fetched from Debian) in front of the session's PostgreSQL."""

from __future__ import annotations

import contextlib
import os

import psycopg2
import pytest
from helpers import sessions, wait_until

from healthz.lab.pgbouncer import Console, PgBouncer, PgBouncerError, login_pattern
from healthz.lab.probes import LineCounter


def _count_roles(url: str) -> int:
    with contextlib.closing(psycopg2.connect(url)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM role")
            return cur.fetchone()[0]


@pytest.mark.parametrize("pool_mode", ["transaction", "session"])
def test_twenty_clients_share_a_few_server_connections(postgres, database, pool_mode):
    before = sessions(postgres, database)
    with PgBouncer(
        server_host=postgres.host,
        server_port=postgres.port,
        password=postgres.password,
        database=database,
        pool_mode=pool_mode,
        default_pool_size=2,
    ) as bouncer:
        logins = LineCounter(bouncer.logfile, login_pattern(database))
        over_tcp = LineCounter(bouncer.logfile, login_pattern(database, "127.0.0.1"))
        counts = [_count_roles(bouncer.url if i % 2 else bouncer.unix_url) for i in range(20)]
        assert wait_until(lambda: logins() == 20, timeout=5), logins()
        assert over_tcp() == 10
        sample = Console(bouncer).sample()
        directory = bouncer.directory
    assert set(counts) == {10}
    # Twenty client connections, one after another: one server connection, kept.
    assert sessions(postgres, database) - before == 1
    assert sample["pooler_total_xact_count"] >= 20 and sample["pooler_sv_idle"] + sample["pooler_sv_used"] == 1
    assert sample["pooler_cl_active"] == 0 and sample["pooler_cl_waiting"] == 0
    assert not directory.exists(), "the configuration and the password file are removed"


def test_a_wrong_password_is_refused_without_echoing_it(postgres, database):
    with PgBouncer(
        server_host=postgres.host, server_port=postgres.port, password=postgres.password, database=database
    ) as bouncer:
        wrong = bouncer.url.replace(postgres.password, "not-the-password")
        with pytest.raises(psycopg2.OperationalError, match="authentication failed"):
            psycopg2.connect(wrong).close()
        assert postgres.password not in bouncer.log_tail(50)


def test_bad_pool_mode_and_missing_program(postgres, monkeypatch):
    with pytest.raises(PgBouncerError, match="pool_mode 'statement' is not one of transaction, session"):
        PgBouncer(server_host=postgres.host, server_port=postgres.port, password="x", pool_mode="statement")
    monkeypatch.setenv("PGBOUNCER", "/nonexistent/pgbouncer")
    with pytest.raises(PgBouncerError, match="PGBOUNCER=/nonexistent/pgbouncer is not an executable file"):
        PgBouncer(server_host=postgres.host, server_port=postgres.port, password="x")


def test_runs_unprivileged_when_root(postgres, database):
    with PgBouncer(
        server_host=postgres.host, server_port=postgres.port, password=postgres.password, database=database
    ) as bouncer:
        uid = os.stat(f"/proc/{bouncer.process.pid}").st_uid
    assert uid != 0 or os.geteuid() != 0
