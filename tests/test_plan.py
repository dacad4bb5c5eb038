"""The planner against cases worked by hand, and its command through click's CliRunner."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from healthz.cli import main
from healthz.plan import Bound, DatabaseLimits, Deployment, PlanError, parse_port_range, plan, render


def test_the_issue_example_worked_by_hand():
    # 4,096 - 3 reserved = 4,093; 4 x 6 = 24 pools; 4,093 // 24 = 170 each (24 x 170 = 4,080).
    result = plan(Deployment(hosts=4, workers=6, worker_class="eventlet", concurrency=2000, max_connections=4096))
    assert (result.budget_per_worker, result.pool_size, result.max_overflow) == (170, 170, 0)
    assert result.total_connections == 4080 and result.total_connections <= 4093
    assert result.max_hosts == 4  # a fifth host (30 pools x 170 = 5,100) would not fit
    assert not result.pooler_needed
    # 28,232 ports (32768-60999) / 60 s.
    assert result.exhaustion_rate == pytest.approx(470.53, abs=0.01)


def test_pool_is_capped_by_what_a_worker_can_use():
    # gthread with 8 threads never checks out a ninth connection, however big the budget.
    result = plan(Deployment(hosts=1, workers=2, worker_class="gthread", concurrency=8, max_connections=4096))
    assert result.budget_per_worker == 2046 and result.pool_size == 8 and result.total_connections == 16
    sync = plan(Deployment(hosts=3, workers=4, worker_class="sync", concurrency=500, max_connections=100))
    assert sync.pool_size == 1 and sync.total_connections == 12


def test_wanted_pool_that_does_not_fit_needs_a_pooler():
    # 2 x 4 = 8 pools of 20 = 160 > 97 available; the largest safe is 97 // 8 = 12, capped at 8 threads.
    result = plan(
        Deployment(hosts=2, workers=4, worker_class="gthread", concurrency=8, max_connections=100, pool_size=20)
    )
    assert result.pooler_needed and "160" in result.reasons[0] and "97" in result.reasons[0]
    assert (result.budget_per_worker, result.pool_size) == (12, 8)
    assert result.max_hosts == 1  # 97 // (4 x 20)


def test_more_workers_than_connections():
    # 10 hosts x 12 workers = 120 pools, 100 - 3 - 7 other = 90 connections: not one each.
    d = Deployment(
        hosts=10, workers=12, worker_class="gevent", concurrency=1000, max_connections=100, other_connections=7
    )
    result = plan(d)
    assert d.available == 90 and result.budget_per_worker == 0 and result.pool_size == 0
    assert result.pooler_needed and "120 worker processes" in result.reasons[0]
    assert result.max_hosts == 7  # 90 // (12 workers x 1)
    on_app, on_db = result.pgbouncer
    # One PgBouncer per host: 90 // 10 = 9 server connections each; clients 12 x 1,000 per host.
    assert (on_app.instances, on_app.default_pool_size, on_app.max_client_conn) == (10, 9, 12000)
    assert on_app.server_connections == 90 and on_app.file_descriptors == 12000 + 9 + 20
    # One PgBouncer on the database host: all 90, and every host's clients.
    assert (on_db.instances, on_db.default_pool_size, on_db.max_client_conn, on_db.server_connections) == (
        1,
        90,
        120000,
        90,
    )


def test_pgbouncer_pool_never_exceeds_its_clients():
    result = plan(Deployment(hosts=1, workers=1, worker_class="sync", max_connections=4096))
    assert [(s.default_pool_size, s.max_client_conn) for s in result.pgbouncer] == [(1, 1), (1, 1)]


def test_nullpool_rate_against_the_port_range():
    # A 1,000-port range lasts 1,000 / 60 = 16.7 connections/s; 200 requests/s keep 12,000 in TIME_WAIT.
    result = plan(Deployment(hosts=1, workers=2, worker_class="eventlet", port_range=(40000, 40999), rate=200))
    assert result.exhaustion_rate == pytest.approx(16.67, abs=0.01)
    assert result.nullpool_time_wait == 12000


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"worker_class": "tornado"}, "--worker-class 'tornado': expected one of eventlet"),
        ({"hosts": 0}, "--hosts 0: expected an integer >= 1"),
        ({"reserved_connections": -1}, "--reserved-connections -1"),
        ({"max_connections": 3}, "leaves no connection"),
        ({"port_range": (5000, 4000)}, "--port-range 5000-4000"),
        ({"pool_size": 0}, "--pool-size 0"),
        ({"rate": 0}, "--rate 0"),
    ],
)
def test_bad_deployments_name_the_input(changes, message):
    with pytest.raises(PlanError, match=message.replace("(", r"\(")):
        Deployment(**{"hosts": 1, "workers": 1, "worker_class": "eventlet", **changes})


def test_port_range_parses_both_spellings():
    assert parse_port_range("32768-60999") == parse_port_range("32768\t60999") == (32768, 60999)
    with pytest.raises(PlanError, match="LOW-HIGH"):
        parse_port_range("many")


def test_plan_command_prints_the_issue_example():
    args = [
        "plan",
        "--hosts",
        "4",
        "--workers",
        "6",
        "--worker-class",
        "eventlet",
        "--concurrency",
        "2000",
        "--max-connections",
        "4096",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "pool_size=170, max_overflow=0" in result.output
    assert "471 new connections per second per host" in result.output
    assert "External pooler: not needed" in result.output


def test_plan_command_exits_1_when_a_pooler_is_needed_and_prints_json():
    args = [
        "plan",
        "--hosts",
        "2",
        "--workers",
        "4",
        "--worker-class",
        "gthread",
        "--threads",
        "8",
        "--max-connections",
        "100",
        "--pool-size",
        "20",
        "--json",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    data = json.loads(result.output)
    assert data["pooler_needed"] and data["pool_size"] == 8 and data["deployment"]["available"] == 97


def test_plan_command_refuses_bad_input():
    result = CliRunner().invoke(main, ["plan", "--threads", "8", "--worker-class", "eventlet"])
    assert result.exit_code == 2 and "--threads applies to --worker-class gthread" in result.output
    result = CliRunner().invoke(main, ["plan", "--port-range", "1-2-3"])
    assert result.exit_code == 2 and "--port-range" in result.output


def test_database_limits_available_is_never_negative():
    assert DatabaseLimits(100, 3).available == 97
    assert DatabaseLimits(2, 3).available == 0
    assert DatabaseLimits.from_meta(
        {"postgres": {"max_connections": 50, "superuser_reserved_connections": 3}}
    ) == DatabaseLimits(50, 3)
    assert DatabaseLimits.from_meta({}) is None


def test_the_pool_is_sized_by_the_load_when_the_rate_is_known_and_says_what_bounded_it():
    # The report's deployment: 1 host, 6 eventlet workers, max_connections 4096.
    report = dict(hosts=1, workers=6, worker_class="eventlet", concurrency=1000, max_connections=4096)
    fits = plan(Deployment(**report))
    assert (fits.pool_size, fits.bound) == (682, Bound.BUDGET)  # the most that fits, and it says so
    assert "at most pool_size=682" in render(fits) and "not what the load needs: give --rate" in render(fits)
    # 2,000 req/s x 10 ms x 1.5 = 30 connections per host: 5 per worker.
    needed = plan(Deployment(**report, rate=2000, hold_ms=10))
    assert (needed.needed_per_host, needed.pool_size, needed.bound) == (30, 5, Bound.LOAD)
    assert needed.total_connections == 30 and "30 connections per host" in render(needed)
    # 4 database cores run 9 at once: a pool of 1 per worker, the cores bound it.
    cores = plan(Deployment(**report, rate=2000, hold_ms=10, db_cores=4))
    assert (cores.db_active_limit, cores.pool_size, cores.bound) == (9, 1, Bound.DB_CORES)
    # The worker's own concurrency bounds a gthread pool before a heavy load does.
    threads = plan(Deployment(hosts=1, workers=2, worker_class="gthread", concurrency=8, rate=5000, hold_ms=20))
    assert (threads.pool_size, threads.bound) == (8, Bound.CONCURRENCY)
    asked = plan(Deployment(**report, rate=2000, pool_size=3))
    assert (asked.pool_size, asked.bound) == (3, Bound.WANTED)
    assert plan(Deployment(**report, rate=2000)).to_dict()["bound"] == "load"


@pytest.mark.parametrize("field, value, named", [("hold_ms", 0, "--hold-ms"), ("db_cores", 0, "--db-cores")])
def test_a_bad_load_figure_is_refused_naming_its_option(field, value, named):
    with pytest.raises(PlanError, match=named):
        Deployment(hosts=1, workers=2, worker_class="gthread", **{field: value})


@pytest.mark.parametrize("worker_class", ["gthread", "sync", "gevent"])
def test_the_plan_points_the_liveness_probe_at_its_own_listener(worker_class):
    text = render(plan(Deployment(hosts=1, workers=2, worker_class=worker_class, concurrency=8, max_connections=100)))
    (line,) = [line for line in text.splitlines() if line.startswith("Liveness:")]
    assert "HEALTHZ_LIVENESS_BIND=0.0.0.0:8001" in line
    # A thread per request can all wait on the database: the plan says why the listener is needed there.
    assert ("wait on the database" in line) == (worker_class != "gevent")
