"""The verdict, judged from figures alone: outcomes, causes, findings and their numbers (the
sentences they render are checked once, in test_report)."""

from __future__ import annotations

from test_report import LIMITS, NULLPOOL, RESULTS, bouncer, run

from healthz.lab import verdict
from healthz.lab.figures import Placement
from healthz.lab.verdict import (
    BudgetExceeded,
    Exhaustion,
    MaxConnectionsReached,
    Outcome,
    OverflowChurn,
    PoolerEffect,
    PoolTooSmall,
    PortsAtRisk,
)


def test_each_scenario_gets_an_outcome_a_cause_and_its_worst_run():
    verdicts = verdict.judge_all(RESULTS, LIMITS)
    assert list(verdicts) == ["eventlet-nullpool", "eventlet-queuepool-default", "eventlet-queuepool-sized"]
    nullpool = verdicts["eventlet-nullpool"]
    assert (nullpool.outcome, nullpool.cause, nullpool.failed) == (Outcome.FAILED, "address_unavailable", True)
    assert nullpool.worst.error_rate == 0.8
    sized = verdicts["eventlet-queuepool-sized"]
    assert (sized.outcome, sized.cause, sized.worst.concurrency) == (Outcome.HELD, None, 1000)
    assert sized.findings == ()


def test_overflow_churn_is_a_finding_with_its_numbers():
    default = verdict.judge("eventlet-queuepool-default", [RESULTS[1]], LIMITS)
    assert (default.outcome, default.failed) == (Outcome.AT_RISK, False)  # 90 sessions/s x 60 s > 1,000 ports
    churn = default.first(OverflowChurn)
    assert churn == OverflowChurn(
        sessions_opened=900,
        concurrency=500,
        hosts=1,
        workers=2,
        capacity=15,
        rate_per_host=90.0,
        time_wait_peak=400,
        ports=1000,
    )


def test_budget_pool_timeouts_and_refusals_are_findings():
    over = verdict.judge("big", [run("big", pool=("QueuePool", 60, 0), sessions=120)], LIMITS)
    assert over.first(BudgetExceeded) == BudgetExceeded(hosts=1, workers=2, capacity=60, available=97)
    assert over.first(BudgetExceeded).needed == 120
    small = verdict.judge("small", [run("small", failures=50, causes={"pool_timeout": 50})], LIMITS)
    assert small.first(PoolTooSmall) == PoolTooSmall(50, 500)
    full = verdict.judge("full", [run("full", failures=12, causes={"too_many_clients": 12})], LIMITS)
    assert (full.outcome, full.cause) == (Outcome.FAILED, "too_many_clients")
    assert full.first(MaxConnectionsReached) == MaxConnectionsReached(12, 500)
    # No budget finding without limits, nor for a pool that has no bound.
    assert not verdict.judge("big", [run("big", pool=("QueuePool", 60, 0))], None).has(BudgetExceeded)
    assert not verdict.judge("n", [run("n", pool=NULLPOOL)], LIMITS).has(BudgetExceeded)


def test_a_short_run_whose_churn_would_exhaust_the_ports_is_at_risk():
    short = run(
        "eventlet-nullpool",
        concurrency=100,
        requests=1142,
        sessions=1237,
        pool=NULLPOOL,
        time_wait=744,
        seconds=4.0,
        sessions_per_second=306.0,
    )
    judged = verdict.judge("eventlet-nullpool", [short], LIMITS)
    assert (judged.outcome, judged.failed) == (Outcome.AT_RISK, False)
    assert judged.first(PortsAtRisk) == PortsAtRisk(100, 306.0, False, 1, 1000)


def test_churn_on_loopback_is_at_risk_on_an_application_hosts_range_and_a_pool_is_not():
    # Flask-SQLAlchemy's default pool under 16 threads, on loopback: 147 sessions for 2,069 requests.
    churn = run("flask-default", 200, requests=2069, sessions=147, topology="loopback", ports=28232)
    judged = verdict.judge("flask-default", [churn], LIMITS)
    assert (judged.outcome, judged.failed) == (Outcome.AT_RISK, False)
    hidden = judged.first(verdict.ChurnHidden)
    assert hidden == verdict.ChurnHidden(200, 147 / 2069, 28232)
    assert round(hidden.exhausting_rps) == round(28232 / 60 / (147 / 2069))  # 6,623 requests/s
    # A pool that keeps its connections, on loopback; and the same churn where the ports are real (netns).
    pooled = run("sized", 200, requests=2021, sessions=32, topology="loopback", ports=28232)
    assert verdict.judge("sized", [pooled], LIMITS).outcome is Outcome.HELD
    netns = run("flask-default", 200, requests=2069, sessions=147, ports=28232)
    assert verdict.judge("flask-default", [netns], LIMITS).outcome is Outcome.HELD
    # No range read on this host: Linux's default.
    unknown = run("x", 100, requests=1000, sessions=1000, topology="loopback", ports=None)
    assert verdict.judge("x", [unknown], LIMITS).first(verdict.ChurnHidden).ports == verdict.LINUX_PORTS


def test_a_stalled_service_failed_without_failures():
    stuck = run("eventlet-singleton", concurrency=100, requests=191, sessions=251, pool=NULLPOOL, stalled_seconds=8.8)
    judged = verdict.judge("eventlet-singleton", [stuck], LIMITS)
    assert (judged.outcome, judged.cause) == (Outcome.FAILED, "stopped answering")


def test_a_run_not_measured():
    broken = run("x", error="gunicorn exited with status 2")
    judged = verdict.judge("x", [broken], LIMITS)
    assert (judged.outcome, judged.failed, judged.worst, judged.error) == (
        Outcome.NOT_MEASURED,
        None,
        None,
        "gunicorn exited with status 2",
    )


def test_exhaustion_is_churn_or_connections_held_open():
    assert verdict.exhaustion(RESULTS[0]) is Exhaustion.CHURN
    held = run("keepalive", sessions=1000, failures=100, causes={"address_unavailable": 100}, established_peak=1000)
    assert verdict.exhaustion(held) is Exhaustion.HELD_OPEN


def test_what_each_pgbouncer_placement_did_to_the_ports():
    assert verdict.pooler_effect(run("x", pgbouncer=bouncer("app", logins=2500))) is PoolerEffect.REMOVED
    on_app = run("x", pgbouncer=bouncer("app", logins=2500), time_wait=498)
    assert verdict.pooler_effect(on_app) is PoolerEffect.HELD_BY_REUSE
    moved = run("x", pgbouncer=bouncer("app"), time_wait=1000, address_unavailable=12)
    assert verdict.pooler_effect(moved) is PoolerEffect.MOVED
    # On the database host, 2,400 logins over 10 s from 3 hosts = 80/s each: 4,800 ports needed > 1,000.
    short = run("x", pgbouncer=bouncer("db", logins=2400), hosts=3, time_wait=807)
    assert verdict.port_churn_per_host(short) == 80
    assert verdict.pooler_effect(short) is PoolerEffect.MOVED_AT_RISK
    unix = run("x", pgbouncer=bouncer("app-unix", logins=2400), hosts=3, time_wait=807)
    assert unix.placement is Placement.APP_UNIX and verdict.pooler_effect(unix) is PoolerEffect.REMOVED


def test_connection_need_counts_pools_or_pgbouncer():
    sized = verdict.connection_need(RESULTS[2])
    assert (sized.how, sized.needed, sized.per_instance) == (verdict.Counted.IN_PROCESS, 20, 10)
    assert verdict.connection_need(RESULTS[0]).needed is None
    per_host = verdict.connection_need(run("x", hosts=3, pgbouncer=bouncer("app")))
    assert (per_host.how, per_host.needed) == (verdict.Counted.PGBOUNCER_PER_HOST, 30)
    on_db = verdict.connection_need(run("x", hosts=3, pgbouncer=bouncer("db")))
    assert (on_db.how, on_db.needed) == (verdict.Counted.PGBOUNCER_ON_DB, 10)


def test_run_figures_round_trip_through_json():
    import json

    from healthz.lab.figures import RunFigures

    figures = run("x", hosts=3, pgbouncer=bouncer("db", logins=2400))
    again = RunFigures.from_dict(json.loads(json.dumps(figures.to_dict())))
    assert again == figures and again.placement is Placement.DB and again.pool.bounded
