"""Statements counted by PostgreSQL: one per health check in AUTOCOMMIT, three in a transaction."""

from __future__ import annotations

import pytest

from healthz.bench import statements
from healthz.postgres import APP_USER

LOG = """2026-11-27 09:00:00.001 UTC [101] healthz@healthz LOG:  statement: BEGIN
2026-11-27 09:00:00.002 UTC [101] healthz@healthz LOG:  statement: SELECT count(*) AS count_1 
\tFROM role
2026-11-27 09:00:00.003 UTC [101] healthz@healthz LOG:  statement: ROLLBACK
2026-11-27 09:00:00.004 UTC [102] postgres@postgres LOG:  statement: SELECT 1
2026-11-27 09:00:00.005 UTC [101] healthz@healthz LOG:  statement: SELECT count(*) AS count_1 FROM role
2026-11-27 09:00:00.006 UTC [103] LOG:  checkpoint starting: time
"""


def test_parse_log_counts_the_roles_statements_joining_continued_lines():
    counts = statements.parse_log(LOG)
    assert counts == {"BEGIN": 1, "ROLLBACK": 1, "SELECT count(*) AS count_1 FROM role": 2}


def test_has_pg_stat_statements_matches_the_install(postgres):
    found = statements.has_pg_stat_statements(postgres.binaries.bindir)
    assert isinstance(found, bool)
    assert statements.server_settings(postgres.binaries.bindir) == (
        {"shared_preload_libraries": "'pg_stat_statements'"} if found else {}
    )


@pytest.mark.parametrize(
    "isolation_level, expected",
    [
        ("AUTOCOMMIT", {"SELECT count(*) AS count_1 FROM role": 1}),
        (
            "READ COMMITTED",
            {"BEGIN ISOLATION LEVEL READ COMMITTED": 1, "SELECT count(*) AS count_1 FROM role": 1, "ROLLBACK": 1},
        ),
    ],
)
def test_statements_per_health_check(postgres, database, make_app, isolation_level, expected):
    client = make_app(
        pool_class="QueuePool", pool_size=1, max_overflow=0, isolation_level=isolation_level
    ).test_client()
    assert client.get("/api/v1/healthz/").status_code == 200  # the pool's first connect is not counted
    counter = statements.StatementCounter(postgres, APP_USER, database)
    assert counter.source == "log_statement"  # the test server loads no extension
    assert counter.settle(timeout=10)
    sent = counter.count(lambda: [client.get("/api/v1/healthz/") for _ in range(5)])
    assert sent == {statement: 5 * n for statement, n in expected.items()}
