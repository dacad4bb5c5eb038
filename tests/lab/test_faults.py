"""The fault catalogue: selecting faults, their scenarios and settings, the connection budget, and
finding a process's database connections on real sockets."""

from __future__ import annotations

import os

import psycopg2
import pytest

from healthz.lab import faults, scenarios
from healthz.lab.scenarios import DEFAULTS


def test_select_refuses_an_unknown_fault_naming_the_accepted_ones():
    assert [f.name for f in faults.select([])] == list(faults.FAULTS)
    with pytest.raises(ValueError, match="unknown fault 'db-crash': choose from db-restart-fast, db-restart-immediate"):
        faults.select(["db-crash"])


def test_budget_is_workers_times_pool_capacity_or_the_clients_when_unbounded():
    sized, default, null = (
        DEFAULTS["eventlet-queuepool-sized"],
        DEFAULTS["eventlet-queuepool-default"],
        DEFAULTS["eventlet-nullpool"],
    )
    assert faults.TooManyClients.budget(sized, 50) == (20, "2 workers x (pool_size 10 + max_overflow 0)")
    assert faults.TooManyClients.budget(default, 50) == (30, "2 workers x (pool_size 5 + max_overflow 10)")
    assert faults.TooManyClients.budget(null, 50) == (
        50,
        "one connection per request in flight, up to 50 (the clients)",
    )


def test_restart_runs_pooled_scenarios_with_and_without_pre_ping():
    restart = faults.FAULTS["db-restart-fast"]
    variants = restart.scenarios(DEFAULTS["eventlet-queuepool-sized"])
    assert [(s.name, s.service_settings().pool_pre_ping) for s in variants] == [
        ("eventlet-queuepool-sized", False),
        ("eventlet-queuepool-sized+pre_ping", True),
    ]
    assert [s.name for s in restart.scenarios(DEFAULTS["eventlet-nullpool"])] == ["eventlet-nullpool"]


def test_a_teams_service_is_run_as_it_is_and_a_fault_needing_ours_is_skipped_for_it(tmp_path):
    theirs = scenarios.own_service("gunicorn app:app -b {bind}", app_dir=tmp_path)
    restart, exhausted = faults.FAULTS["db-restart-fast"], faults.FAULTS["pool-exhausted"]
    assert restart.variants(theirs) == [theirs]  # pool_pre_ping is the lab's setting, not theirs
    assert exhausted.variants(theirs) == [theirs] and "pool_timeout" in exhausted.skipped_for(theirs, None)
    assert len(exhausted.variants(DEFAULTS["gthread-queuepool"])) == 1
    assert exhausted.variants(DEFAULTS["gthread-queuepool"])[0].service_settings().pool_timeout == 0.5


def test_fault_settings_reach_the_scenario():
    [exhausted] = faults.FAULTS["pool-exhausted"].scenarios(DEFAULTS["gthread-queuepool"])
    assert exhausted.service_settings().pool_timeout == 0.5
    [slow] = faults.FAULTS["statement-timeout"].scenarios(DEFAULTS["eventlet-nullpool"])
    assert slow.service_settings().statement_timeout == 500
    assert (
        faults.FAULTS["pool-exhausted"].skip_reason(DEFAULTS["eventlet-nullpool"], None).startswith("no pool_timeout")
    )


def test_database_client_ports_finds_this_processs_connection(postgres):
    conn = psycopg2.connect(postgres.dsn(application_name="healthz-ports-test"))
    try:
        ports = faults.database_client_ports(os.getpid(), postgres.port)
        with postgres.connect() as admin, admin.cursor() as cur:
            cur.execute("SELECT client_port FROM pg_stat_activity WHERE application_name = 'healthz-ports-test'")
            assert {r[0] for r in cur.fetchall()} <= ports
        assert len(ports) >= 1
    finally:
        conn.close()
    assert faults.database_client_ports(os.getpid(), 1) == set()
