"""pgbench on the service's own statement, against the real test server."""

from __future__ import annotations

import pytest

from healthz.bench import pgbench
from healthz.postgres import APP_USER

SAMPLE_15 = """pgbench (15.18 (Debian 15.18-0+deb12u1))
transaction type: /tmp/healthz-pgbench-x.sql
number of transactions actually processed: 120000
number of failed transactions: 0 (0.000%)
latency average = 0.166 ms
initial connection time = 12.3 ms
tps = 60123.456789 (without initial connection time)
"""


def test_parse_output():
    result = pgbench.parse_output(SAMPLE_15)
    assert (result.tps, result.latency_ms, result.failed) == (60123.456789, 0.166, 0)


def test_parse_output_without_tps_says_so():
    with pytest.raises(pgbench.PgbenchError, match="no tps"):
        pgbench.parse_output("connection to server failed\n")


def test_statement_is_what_the_service_sends():
    assert pgbench.statement() == "SELECT count(*) AS count_1 FROM role"


@pytest.mark.parametrize("connect", [False, True], ids=["persistent", "connect-per-transaction"])
def test_run_against_the_seeded_database(postgres, database, connect):
    result = pgbench.run(
        postgres.binaries.bindir,
        host=postgres.host,
        port=postgres.port,
        user=APP_USER,
        database=database,
        password=postgres.password,
        clients=2,
        seconds=1,
        connect_per_transaction=connect,
    )
    assert result.tps > 0 and result.failed == 0 and result.connect_per_transaction is connect


def test_a_wrong_password_is_an_error_without_the_password(postgres, database):
    with pytest.raises(pgbench.PgbenchError) as caught:
        pgbench.run(
            postgres.binaries.bindir,
            host=postgres.host,
            port=postgres.port,
            user=APP_USER,
            database=database,
            password="not-the-password",
            clients=1,
            seconds=1,
        )
    assert "password authentication failed" in str(caught.value)
    assert "not-the-password" not in str(caught.value)
