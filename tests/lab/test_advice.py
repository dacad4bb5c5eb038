"""The advice: the simplest setup that held with margin, its pool sized by the measured load, the
evidence one figure a line, the kernel knobs against their base, and settings that parse."""

from __future__ import annotations

import configparser
import dataclasses
import json

from helpers import bouncer
from helpers import lab_run as run

from healthz.lab import advice, report, scenarios, verdict
from healthz.plan import Bound, DatabaseLimits

LIMITS = DatabaseLimits(100, 3)
NULLPOOL = ("NullPool", 5, 10)
FAILED_NULLPOOL = run(
    "eventlet-nullpool",
    concurrency=1000,
    requests=6000,
    failures=4800,
    causes={"address_unavailable": 4800},
    sessions=1300,
    pool=NULLPOOL,
    time_wait=990,
)


def advise(results, limits=LIMITS, **kwargs):
    return advice.advise(verdict.judge_all(results, limits), results, limits, **kwargs)


def test_the_simplest_setup_that_held_wins_over_a_faster_one_within_the_margin():
    sized = run("eventlet-queuepool-sized", concurrency=1000, requests=19400, hold_ms=4.0)
    bounced = run("eventlet-queuepool-pgbouncer", concurrency=1000, requests=20680, pgbouncer=bouncer("app", logins=20))
    said = advise([FAILED_NULLPOOL, sized, bounced])
    assert said.reply is advice.Reply.YES and said.chosen == "eventlet-queuepool-sized"
    assert said.component is advice.Component.IN_PROCESS and said.needed_because is None
    kinds = [type(e) for e in said.evidence]
    assert kinds[:2] == [advice.Held, advice.Failed] and advice.NotNeeded in kinds
    # Outside the margin the faster one is still not chosen while the simpler one held: speed alone adds no part.
    faster = run("eventlet-queuepool-pgbouncer", concurrency=1000, requests=30000, pgbouncer=bouncer("app"))
    said = advise([FAILED_NULLPOOL, sized, faster])
    assert said.reply is advice.Reply.YES and said.chosen == "eventlet-queuepool-sized"
    assert said.needed_because is None and not [e for e in said.evidence if isinstance(e, advice.Needed)]
    (not_needed,) = [e for e in said.evidence if isinstance(e, advice.NotNeeded)]
    assert (not_needed.scenario, not_needed.component) == (
        "eventlet-queuepool-pgbouncer",
        advice.Component.PGBOUNCER_APP,
    )
    assert "faster here" in not_needed.line() and "within" not in not_needed.line()


def test_pgbouncer_is_added_only_when_the_budget_needs_it_and_says_so():
    over_budget = run("eventlet-queuepool-sized", concurrency=300, workers=6, requests=3000, hosts=3)
    bounced = run("eventlet-queuepool-pgbouncer", concurrency=300, requests=3000, hosts=3, pgbouncer=bouncer("app"))
    said = advise([FAILED_NULLPOOL, over_budget, bounced], DatabaseLimits(50, 3))
    assert said.reply is advice.Reply.WITH_PGBOUNCER and said.chosen == "eventlet-queuepool-pgbouncer"
    assert said.needed_because == "the budget"
    needed = next(e for e in said.evidence if isinstance(e, advice.Needed))
    assert (
        needed.scenario == "eventlet-queuepool-sized" and "exceeds max_connections minus reserved (47)" in needed.line()
    )
    assert "Not alone" in said.headline() and "PgBouncer on the application host did" in said.headline()
    # Behind PgBouncer the workers' pools are its clients: sized by the load alone (100 req/s per host x
    # 20 ms x 1.5 = 3 a host, 2 a worker); its server connections are capped by the cores, shared by 3 instances.
    timed = dataclasses.replace(bounced, hold_ms=20.0)
    sizing = advise([FAILED_NULLPOOL, over_budget, timed], DatabaseLimits(50, 3), db_cores=2).sizing
    assert (sizing.pool_size, sizing.pgbouncer_pool_size, sizing.pgbouncer_instances) == (2, 1, 3)
    assert "capped by 2 database cores" in sizing.reason()


def test_nothing_is_recommended_that_did_not_hold_with_a_bounded_pool():
    overflowing = run("eventlet-queuepool-default", pool=("QueuePool", 10, 5))
    at_risk = run("eventlet-queuepool-sized", concurrency=100, sessions=1237, seconds=4.0, sessions_per_second=306.0)
    said = advise([FAILED_NULLPOOL, overflowing, at_risk])
    assert (said.chosen, said.sizing, said.settings, said.reply) == (None, None, (), advice.Reply.NO)
    assert said.lines()[0] == said.headline() and said.change() is None


def test_an_own_service_alone_is_told_its_outcome_and_how_to_get_settings():
    theirs = run("app", concurrency=200, requests=4000, pool=("unknown", 0, 0), own_service=True)
    failing = run(
        "app-eventlet",
        concurrency=200,
        requests=400,
        failures=300,
        causes={"address_unavailable": 300},
        pool=("unknown", 0, 0),
        own_service=True,
    )
    said = advise([theirs, failing])
    assert said.reply is advice.Reply.OWN_SERVICE and said.chosen is None and said.settings == ()
    assert {type(e) for e in said.evidence} == {advice.Held, advice.Failed}
    assert "-s eventlet-queuepool-sized" in said.headline()


def test_the_pool_is_sized_by_the_measured_rate_and_hold_time():
    sized = run("eventlet-queuepool-sized", concurrency=1000, requests=20000, hold_ms=4.0)  # 2,000 req/s
    sizing = advice.advise(verdict.judge_all([sized], LIMITS), [sized], LIMITS).sizing
    # 2,000 req/s x 4 ms x 1.5 = 12 connections for the host, over 2 workers.
    assert (sizing.hold_source, sizing.plan.needed_per_host, sizing.pool_size) == (advice.HoldSource.MEASURED, 12, 6)
    assert sizing.plan.bound is Bound.LOAD
    capped = advise([sized], db_cores=1).sizing  # 2 x 1 + 1 = 3 active connections over 2 workers
    assert (capped.plan.bound, capped.pool_size) == (Bound.DB_CORES, 1)
    assert "capped by 1 database cores" in capped.line()
    unmeasured = run("eventlet-queuepool-sized", concurrency=1000, requests=20000)  # p50 10 ms
    assert advise([unmeasured]).sizing.hold_source is advice.HoldSource.LATENCY


def test_the_answer_is_at_most_eight_lines_and_consistent_with_every_row():
    results = [
        FAILED_NULLPOOL,
        run("eventlet-queuepool-default", concurrency=1000, sessions=900, pool=("QueuePool", 5, 10)),
        run("gevent-queuepool-blocking", concurrency=1000, requests=100, stalled_seconds=9.0),
        run("eventlet-queuepool-sized", concurrency=1000, requests=19400, hold_ms=4.0),
        run(
            "eventlet-nullpool-tw-reuse", concurrency=1000, requests=9000, sessions=9000, pool=NULLPOOL, tcp_tw_reuse=1
        ),
    ]
    said = advise(results, ports_default=1000)
    lines = said.lines()
    assert 3 <= len(lines) <= advice.ANSWER_LINES
    assert lines[0] == said.headline() and lines[1] == said.change()
    verdicts = verdict.judge_all(results, LIMITS)
    for e in said.evidence:
        if isinstance(e, advice.Failed):
            assert verdicts[e.scenario].outcome is verdict.Outcome.FAILED
        if isinstance(e, advice.Held):
            assert verdicts[e.scenario].outcome is verdict.Outcome.HELD
    assert any(isinstance(e, advice.Churned) for e in said.evidence)


def test_a_knob_is_judged_against_the_same_setup_without_it():
    reused = run(
        "eventlet-nullpool-tw-reuse",
        concurrency=1000,
        requests=9000,
        sessions=9000,
        pool=NULLPOOL,
        tcp_tw_reuse=1,
        checkout_ms=2.5,
        time_wait=900,
    )
    sized = run("eventlet-queuepool-sized", concurrency=1000, requests=19400)
    said = advise([FAILED_NULLPOOL, reused, sized], ports_default=1000)
    (effect,) = said.knobs
    assert (effect.knob, effect.base, effect.pooled) == (
        "tcp_tw_reuse=1",
        "eventlet-nullpool",
        "eventlet-queuepool-sized",
    )
    assert (effect.base_address_unavailable, effect.address_unavailable) == (4800, 0)
    assert effect.sessions_per_request == 1.0 and effect.checkout_ms == 2.5 and effect.pooled_rps == 1940
    # Reused after 1 s, 900 sessions/s need about 900 ports, not 54,000: held, not at risk.
    assert verdict.judge("eventlet-nullpool-tw-reuse", [reused], LIMITS).outcome is verdict.Outcome.HELD
    assert said.chosen == "eventlet-queuepool-sized", "a knob is not a setup to recommend"


def test_the_settings_parse_and_carry_the_sized_pool():
    sized = run("eventlet-queuepool-sized", concurrency=1000, requests=20000, hold_ms=4.0)
    said = advise([FAILED_NULLPOOL, sized])
    by_title = {s.title: s for s in said.settings}
    assert set(by_title) >= {
        "Flask / SQLAlchemy",
        "Django under gthread: persistent connections (one per thread)",
        "Django 5.1+ with psycopg 3: Django's own pool",
        "Django through PgBouncer on the application host, over its Unix socket",
        "gunicorn",
        "PgBouncer (pgbouncer.ini), when the budget or the ports need it",
    }
    for snippet in said.settings:
        assert snippet.backed_by
        if snippet.language == "python":
            compile(snippet.code, snippet.title, "exec")
    assert (
        "pool_size=6," in by_title["Flask / SQLAlchemy"].code
        and "max_overflow=0" in by_title["Flask / SQLAlchemy"].code
    )
    assert '"max_size": 6' in by_title["Django 5.1+ with psycopg 3: Django's own pool"].code
    # Wherever gthread is advised, the proxy that keeps it answering is said with it.
    gthread = by_title["Django under gthread: persistent connections (one per thread)"].code
    assert "behind a buffering proxy (nginx: deploy/nginx/healthz.conf" in gthread
    ini = configparser.ConfigParser(inline_comment_prefixes=(";",))
    ini.read_string(by_title["PgBouncer (pgbouncer.ini), when the budget or the ports need it"].code)
    assert ini["pgbouncer"]["pool_mode"] == "transaction" and ini["pgbouncer"]["default_pool_size"] == "12"
    assert int(ini["pgbouncer"]["max_client_conn"]) == 2 * 1000
    assert "not measured in this run" in by_title["Django 5.1+ with psycopg 3: Django's own pool"].backed_by
    assert by_title["Flask / SQLAlchemy"].backed_by.endswith(
        "eventlet-queuepool-sized: held, 0% failed at 1,000 clients, 20 sessions in 10 s, 2,000 req/s"
    )


def test_a_setting_rests_on_a_run_that_held_before_one_that_failed():
    stalled = run(
        "eventlet-nullpool-pgbouncer-unix", concurrency=1000, requests=300, pool=NULLPOOL, stalled_seconds=8.4
    )
    kept = run("eventlet-queuepool-pgbouncer", concurrency=1000, requests=19000, pgbouncer=bouncer("app"))
    results = [stalled, kept]
    backing = advice.Backing({r.scenario: [r] for r in results}, verdict.judge_all(results, LIMITS))
    assert (
        backing.pick("eventlet-nullpool-pgbouncer-unix", "eventlet-queuepool-pgbouncer")
        == "eventlet-queuepool-pgbouncer"
    )
    assert backing.line("eventlet-nullpool-pgbouncer-unix").startswith(
        "eventlet-nullpool-pgbouncer-unix: FAILED (stopped answering, 0% failed) at 1,000 clients"
    )
    assert backing.line("django-pool") == "django-pool: not measured in this run"


def test_the_recommendation_is_a_scenario_file_to_rerun(tmp_path):
    sized = run("eventlet-queuepool-sized", concurrency=1000, requests=20000, hold_ms=4.0)
    data = {"meta": {"postgres": {"max_connections": 100, "superuser_reserved_connections": 3}}, "results": [sized]}
    path = tmp_path / report.RECOMMENDED
    path.write_text(report.recommended_scenario(report.advice_of(data), [sized]))
    (loaded,) = scenarios.load_file(path, scenarios.DEFAULTS).values()
    assert loaded.name == "recommended" and loaded.worker_class == "eventlet"
    assert loaded.pool_shape().to_dict() == {"pool_class": "QueuePool", "pool_size": 6, "max_overflow": 0}


def test_the_report_and_the_terminal_begin_with_the_answer(tmp_path):
    sized = run("eventlet-queuepool-sized", concurrency=1000, requests=20000, hold_ms=4.0)
    meta = {"postgres": {"max_connections": 100, "superuser_reserved_connections": 3}, "config": {}}
    (tmp_path / "results.json").write_text(
        json.dumps({"meta": meta, "results": [FAILED_NULLPOOL.to_dict(), sized.to_dict()]})
    )
    paths = report.write(tmp_path)
    said = report.advice_of(report.read(tmp_path))
    md = paths["markdown"].read_text().splitlines()
    answer = md[md.index("# healthz lab report") + 1 : md.index("## Settings to paste")]
    assert [line for line in answer if line.strip()] == [
        f"**{said.lines()[0]}**",
        *(f"- {x}" for x in said.lines()[1:]),
    ]
    printed = report.terminal(report.read(tmp_path)).splitlines()
    assert printed[0] == said.headline() and printed.index("Verdict") <= advice.ANSWER_LINES + 1
    assert (tmp_path / report.RECOMMENDED).exists()
