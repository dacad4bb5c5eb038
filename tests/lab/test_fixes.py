"""The fixes the lab tries on a team's code: chosen from the stack it read, at the steps it failed,
sized by its load (pure: no service runs here)."""

from __future__ import annotations

import dataclasses

import pytest
from helpers import lab_run as run

from healthz.lab import fixes, scenarios
from healthz.lab.advice import HoldSource
from healthz.lab.stack import Stack
from healthz.plan import DatabaseLimits

LIMITS = DatabaseLimits(100, 3)
GUNICORN = {"worker_class": "eventlet", "workers": 2, "threads": 1, "worker_connections": 1000}
REPORT = {"django": "4.1.3", "djangorestframework": "3.14.0", "psycopg2-binary": "2.9.5", "gunicorn": "21.2.0"}
DJANGO_51 = {"django": "5.2.1", "psycopg": "3.2.3", "psycopg-pool": "3.2.4", "gunicorn": "23.0.0"}


def django(packages=REPORT, gunicorn=GUNICORN, conn_max_age=0) -> Stack:
    return Stack(
        packages=dict(packages),
        module="mysite.wsgi",
        imports=["django", "psycopg2"],
        gunicorn=dict(gunicorn) if gunicorn else None,
        django={"conn_max_age": conn_max_age, "conn_health_checks": False, "pool": None},
    )


def flask(gunicorn=GUNICORN) -> Stack:
    packages = {"flask": "3.1.0", "flask-sqlalchemy": "3.1.1", "sqlalchemy": "2.0.36", "psycopg2-binary": "2.9.10"}
    return Stack(
        packages=packages, module="app", imports=["flask_sqlalchemy", "flask", "sqlalchemy"], gunicorn=gunicorn
    )


def names(found):
    return [f.name for f in found]


def test_django_on_the_reports_versions_gets_persistent_connections_and_gthread_and_is_told_what_the_pool_needs():
    tried, skipped = fixes.candidates(django(), 4, "netns", server_pool_size=6)
    assert names(tried) == ["conn-max-age", "pgbouncer", "gthread-conn-max-age", "tcp-tw-reuse"]
    assert tried[0].keys == {"django_databases": {"CONN_MAX_AGE": 600, "CONN_HEALTH_CHECKS": True}}
    assert tried[2].keys["gunicorn_args"] == "--worker-class gthread --threads 4"
    assert [f.rank for f in tried] == [fixes.SETTING, fixes.POOLER, fixes.WORKER_CLASS, fixes.KNOB] and tried[3].knob
    assert [f.pooling for f in tried] == [True, True, False, False]
    assert sorted(tried, key=lambda f: f.size) == tried  # smallest change first
    (pool,) = skipped
    assert "Django 4.1.3" in pool.reason and "pip install 'django>=5.1' 'psycopg[binary,pool]'" in pool.reason


def test_pgbouncer_for_django_sits_on_the_app_hosts_unix_socket_sized_for_the_server_and_keeps_their_code():
    (bouncer,) = [f for f in fixes.candidates(django(), 4, "loopback", server_pool_size=6)[0] if f.name == "pgbouncer"]
    assert bouncer.keys["pgbouncer"] == "app-unix" and bouncer.keys["pgbouncer_pool_mode"] == "transaction"
    assert bouncer.keys["pgbouncer_pool_size"] == 6
    assert bouncer.keys["django_databases"] == {"DISABLE_SERVER_SIDE_CURSORS": True}  # no CONN_MAX_AGE of ours
    assert "gunicorn_args" not in bouncer.keys
    assert [f.name for f in fixes.candidates(flask(), 4, "loopback")[0]] == [
        "sqlalchemy-pool",
        "gthread-sqlalchemy-pool",
    ]


def test_django_51_with_psycopg_3_gets_its_own_pool_sized_and_no_persistent_connections():
    tried, _ = fixes.candidates(django(DJANGO_51), 3, "loopback")
    (pool,) = [f for f in tried if f.name == "django-pool"]
    assert pool.keys["django_databases"]["CONN_MAX_AGE"] == 0  # Django refuses a pool with persistent connections
    assert pool.keys["django_databases"]["OPTIONS"]["pool"]["max_size"] == 3
    assert "tcp-tw-reuse" not in names(tried)  # loopback reuses TIME_WAIT ports already: said, not run


def test_what_a_service_runs_already_is_not_tried_again():
    on_gthread = {**GUNICORN, "worker_class": "gthread", "threads": 8}
    tried, skipped = fixes.candidates(django(gunicorn=on_gthread, conn_max_age=600), 4, "loopback")
    assert names(tried) == ["pgbouncer"]  # a pooler in front is the one change left
    assert {s.reason for s in skipped} >= {"it runs with CONN_MAX_AGE=600 already", "it runs gthread already"}
    tried, skipped = fixes.candidates(flask(gunicorn=None), 4, "loopback")
    assert names(tried) == ["sqlalchemy-pool"]
    assert any("not gunicorn's" in s.reason for s in skipped)


def test_sqlalchemy_gets_a_bounded_pool_and_gthread_and_an_unknown_framework_gets_none():
    tried, _ = fixes.candidates(flask(), 5, "netns")
    assert names(tried) == ["sqlalchemy-pool", "gthread-sqlalchemy-pool", "tcp-tw-reuse"]
    assert tried[0].keys["sqlalchemy_pool"] == {"pool_size": 5, "max_overflow": 0, "pool_timeout": 10}
    tried, skipped = fixes.candidates(Stack(packages={"fastapi": "0.1"}, imports=[]), 5, "netns")
    assert tried == [] and "framework unknown" in skipped[0].reason and "Django" in skipped[0].reason


def test_fixes_run_at_the_first_step_that_failed_or_was_at_risk_and_the_next_one_above():
    held = run("app", 100, sessions=5, own_service=True)
    failed = run("app", 500, failures=3000, causes={"address_unavailable": 3000}, sessions=9000, own_service=True)
    assert fixes.fix_steps([100, 500, 1000], [held, failed, dataclasses.replace(failed, concurrency=1000)], LIMITS) == (
        500,
        1000,
    )
    assert fixes.fix_steps([100, 500], [held, failed], LIMITS) == (500,)
    assert fixes.fix_steps([100], [held], LIMITS) == ()


def test_the_plan_sizes_the_pool_by_the_load_and_says_why_none_runs():
    as_is = [run("app", 500, failures=3000, causes={"address_unavailable": 3000}, sessions=9000, own_service=True)]
    planned = fixes.plan("app", [500], as_is, flask(), LIMITS, 2, "netns")
    assert planned.steps == (500,) and planned.pool_size >= 1 and "database cores" in planned.sizing
    assert all(
        f.keys.get("sqlalchemy_pool", {}).get("pool_size", planned.pool_size) == planned.pool_size
        for f in planned.fixes
    )
    held = [run("app", 500, sessions=4, own_service=True)]
    assert fixes.plan("app", [500], held, flask(), LIMITS, 2, "netns").why == "it held at every step as it is"
    assert fixes.plan("app", [500], as_is, None, LIMITS, 2, "netns").why == "its stack could not be read"
    assert fixes.plan("app", [500], [], flask(), LIMITS, 2, "netns").why == "it was not measured as it is"


def test_django_is_sized_by_latency_and_sqlalchemy_by_the_connections_pg_stat_activity_saw_in_use():
    measured = run("app", 500, own_service=True, hold_ms=None, in_use_mean=2.0)
    assert fixes.sized(measured, flask(), LIMITS, None).hold_source is HoldSource.ACTIVITY
    # Django holds its connection idle between autocommit statements, where pg_stat_activity does not count it.
    assert fixes.sized(measured, django(), LIMITS, None).hold_source is HoldSource.LATENCY
    # The workers gunicorn resolved for the team's command, not the scenario's declared default.
    four = fixes.sized(measured, flask({**GUNICORN, "workers": 4}), LIMITS, None)
    assert four.plan.deployment.workers == 4


def test_a_fix_is_their_scenario_with_the_fix_laid_over_and_named_after_both(tmp_path):
    (base,) = scenarios.select([], [], [scenarios.own_service("gunicorn app:app -b {bind}", try_fixes=True)])
    fix = fixes.Fix(
        "sqlalchemy-pool", "pool_size=4, max_overflow=0", fixes.SETTING, {"sqlalchemy_pool": {"pool_size": 4}}
    )
    fixed = fixes.scenario_for(base, fix)
    assert fixed.name == "app+sqlalchemy-pool" and fixed.fix["of"] == "app" and not fixed.tries_fixes
    assert (
        fixed.service.spec.sqlalchemy_pool == {"pool_size": 4}
        and fixed.service.spec.command == base.service.spec.command
    )
    knob = fixes.scenario_for(base, fixes.Fix("tcp-tw-reuse", "t", fixes.KNOB, {"tcp_tw_reuse": 1}))
    assert knob.tcp_tw_reuse == 1 and knob.knobs == {"tcp_tw_reuse": 1}


@pytest.mark.parametrize(
    ("keys", "accepted"),
    [
        ({"sqlalchemy_pool": {"pool_size": "many"}}, "expected int"),
        ({"django_databases": {"CONN_MAX_AGE": -1}}, "seconds >= 0"),
        ({"django_databases": {"ATOMIC_REQUESTS": True}}, "expected one of CONN_MAX_AGE"),
        ({"try_fixes": "yes"}, "expected true or false"),
    ],
)
def test_a_wrong_fix_key_is_one_line_naming_it_and_what_is_accepted(keys, accepted):
    with pytest.raises(scenarios.ScenarioError, match=accepted) as caught:
        scenarios.own_service("gunicorn app:app").with_changes("mine", keys)
    assert "\n" not in str(caught.value)


def test_djangos_pool_is_not_tried_where_the_settings_keep_psycopg_3_from_django():
    stack = django(DJANGO_51)
    hidden = Stack(**{**stack.__dict__, "django": {**stack.django, "driver": "psycopg2"}})
    tried, skipped = fixes.candidates(hidden, 3, "loopback")
    assert "django-pool" not in names(tried)
    assert any("it runs psycopg2" in s.reason for s in skipped)
