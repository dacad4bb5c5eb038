"""The report: rendering of the verdicts (judged in test_verdict) and every file, from results
written as the runner writes them. Each sentence is checked once here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import bouncer
from helpers import lab_run as run

from healthz.lab import report, tables, verdict
from healthz.plan import DatabaseLimits

META = {
    "topology": {"name": "netns", "description": "netns: test", "faithful": True, "port_range": [40000, 40999]},
    "postgres": {"version": "15", "max_connections": 100, "superuser_reserved_connections": 3, "source": "test"},
    "machine": {"cpus": 2, "platform": "linux", "python": "3.11", "loadavg": [0.1, 0.1, 0.1]},
    "versions": {"gunicorn": "25.3.0"},
    "config": {"duration": 10.0, "max_requests": 1000, "interval": 0.2},
    "command": "healthz lab run",
}


NULLPOOL = ("NullPool", 5, 10)
LIMITS = DatabaseLimits(100, 3)
RESULTS = [
    run(
        "eventlet-nullpool",
        requests=6000,
        failures=4800,
        causes={"address_unavailable": 4800},
        sessions=1300,
        pool=NULLPOOL,
        time_wait=990,
    ),
    run(
        "eventlet-queuepool-default",
        sessions=900,
        pool=("QueuePool", 5, 10),
        time_wait=400,
    ),
    run("eventlet-queuepool-sized", sessions=20),
    run("eventlet-queuepool-sized", concurrency=1000, sessions=20),
]


def judged(results, limits=LIMITS):
    return verdict.judge_all(results, limits)


def test_the_verdict_in_numbers():
    verdicts = judged(RESULTS)
    text = report.in_numbers(verdicts["eventlet-nullpool"], LIMITS)
    assert text.startswith("at 500 clients (close) opened 1,300 sessions for 6,000 requests in 10 s")
    assert "TIME_WAIT peaked at 990 of 1,000 ports; backends peaked at 20 of max_connections 100" in text
    assert "80% of requests failed: address_unavailable 4,800 (80%)." in text
    assert report.in_numbers(verdicts["eventlet-queuepool-sized"], LIMITS).endswith(
        "no failed requests, 1,000 requests/s, p99 30 ms."
    )
    churn = report.in_numbers(verdicts["eventlet-queuepool-default"], LIMITS)
    assert (
        "Overflow churn: 900 sessions opened at 500 clients although 2 workers x pool of 15 hold at most 30: "
        "connections beyond pool_size are closed on check-in and reopened on the next burst. Sustained, 90 sessions/s "
        "keep 5,400 client ports in TIME_WAIT (peak here 400 of 1,000 ports in range)." in churn
    )


def test_each_finding_says_its_numbers():
    assert verdict.BudgetExceeded(1, 2, 60, 97).sentence() == (
        "Budget: 2 workers x 60 connections = 120 exceeds max_connections minus reserved (97)."
    )
    assert verdict.PoolTooSmall(50, 500).sentence() == (
        "Pool smaller than the load: 50 requests waited longer than pool_timeout at 500 clients."
    )
    assert (
        verdict.MaxConnectionsReached(12, 300).sentence()
        == "max_connections reached: 12 too_many_clients at 300 clients."
    )
    assert verdict.PortsAtRisk(100, 306.0, False, 1, 1000).sentence() == (
        "but at 100 clients it opened 306 sessions/s, which keep 18,360 client ports in TIME_WAIT when sustained, "
        "more than the 1,000 in range: a longer run exhausts them"
    )


def test_loopback_says_it_cannot_show_exhaustion():
    meta = {
        **META,
        "topology": {"name": "loopback", "description": "loopback", "faithful": False, "port_range": [32768, 60999]},
    }
    results = [run("eventlet-nullpool", sessions=5000, pool=NULLPOOL), RESULTS[2]]
    said = report.advice_of({"meta": meta, "results": results})
    assert not said.faithful and any(line.startswith("Loopback:") for line in said.lines())
    blocks = report.build({"meta": meta, "results": results}, [])
    assert any(b[0] == "p" and b[1].startswith("**Loopback caveat:**") for b in blocks)


def test_a_run_that_was_not_measured_is_reported_as_such():
    broken = run("x", error="gunicorn (eventlet) exited with status 2: healthz: HEALTHZ_POOL_SIZE='x'")
    assert all(len(row) == len(tables.STEP_COLUMNS) for row in tables.step_rows(RESULTS, 500))
    rows = tables.step_rows([broken], 500)
    assert rows[0][1].startswith("not measured: gunicorn (eventlet) exited")
    table = report.verdict_table({"meta": META, "results": [broken]})
    assert table.split()[:3] == ["x", "not", "measured"]


def test_write_makes_every_file(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"meta": META, "results": [r.to_dict() for r in RESULTS]}))
    paths = report.write(tmp_path)
    md = paths["markdown"].read_text()
    for needle in (
        "## Verdict",
        "### 500 concurrent clients",
        "### 1,000 concurrent clients",
        "![requests/s against concurrency]",
        "healthz lab run -s eventlet-nullpool",
        "Client ports held toward PostgreSQL",
    ):
        assert needle in md, needle
    for name in (
        "requests_per_second.png",
        "p99_latency.png",
        "error_rate.png",
        "sessions_per_second.png",
        "peak_backends.png",
        "ports_in_use.png",
    ):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    html = paths["html"].read_text()
    assert html.count("data:image/png;base64,") == 6 and 'src="requests_per_second.png"' not in html
    rows = paths["csv"].read_text().splitlines()
    assert len(rows) == 1 + len(RESULTS) and rows[0].startswith("scenario,concurrency,connection")
    table = report.verdict_table({"meta": META, "results": RESULTS})
    assert table.splitlines()[0].split()[:2] == ["eventlet-nullpool", "FAILED"]


def test_a_stalled_service_is_said_to_stop_answering():
    stuck = run("eventlet-singleton", concurrency=100, requests=191, sessions=251, pool=NULLPOOL, stalled_seconds=8.8)
    text = report.in_numbers(verdict.judge("eventlet-singleton", [stuck], LIMITS), LIMITS)
    assert "the service stopped answering: no request completed for 8.8 s while 100 clients waited" in text


def test_exhaustion_effect_says_what_each_placement_did_in_numbers():
    short = run("x", pgbouncer=bouncer("db", logins=2400), hosts=3, time_wait=807)
    assert tables.exhaustion_effect(short) == (
        "only moved: 80 connections/s to PgBouncer per host keep 4,800 ports in TIME_WAIT when sustained, more than "
        "the 1,000 in range (peak here 807): a longer run exhausts them"
    )
    on_app = run("x", pgbouncer=bouncer("app", logins=2500), time_wait=498)
    assert tables.exhaustion_effect(on_app) == (
        "held only by TIME_WAIT reuse on loopback (tcp_tw_reuse=2): 498 of 1,000 ports in TIME_WAIT"
    )


def test_every_section_renders_for_hosts_pgbouncer_and_the_doctor():
    share = {
        "host": "app1",
        "address": "198.18.1.2",
        "requests": 100,
        "failures": 0,
        "failures_by_cause": {},
        "sessions_opened": 4,
        "refused": 0,
        "backends_peak": 4,
        "time_wait_peak": 2,
        "established_peak": 4,
        "address_unavailable": 0,
    }
    doctor = {
        "exit": 1,
        "status": "connection churn",
        "opened": 40,
        "window": 4.0,
        "opened_per_second": 10.0,
        "measured_status": "connection churn",
        "measured_sessions_per_second": 9.5,
        "agrees": True,
    }
    runs = [
        run("eventlet-nullpool-pgbouncer-db", hosts=3, pgbouncer=bouncer("db", logins=2400), by_host=[share] * 3),
        run("eventlet-nullpool", pool=NULLPOOL, doctor=doctor),
        run("eventlet-nullpool", concurrency=1000, pool=NULLPOOL, doctor={"exit": 2, "error": "no answer"}),
    ]
    blocks = report.build({"meta": META, "results": runs}, [])
    titles = [b[1] for b in blocks if b[0] == "h2"]
    for title in ("Application hosts", "PgBouncer", "healthz doctor against the measurement", "The connection budget"):
        assert any(t.startswith(title) for t in titles), (title, titles)
    rendered = {b[1]: b[2] for b in blocks if b[0] == "table"}
    (bouncer_row,) = rendered[tables.PGBOUNCER_COLUMNS]
    assert bouncer_row[2] == "database host" and bouncer_row[4] == "240.0"
    assert [row[2] for row in rendered[tables.DOCTOR_COLUMNS]] == ["connection churn", "did not run: no answer"]


def test_an_own_service_is_judged_by_the_kinds_its_log_names_and_paired_with_its_stand_in():
    django = run(
        "django-eventlet",
        failures=900,
        causes={"499": 880, "client timeout": 20},
        pool=("unknown", 0, 0),
        own_service=True,
        counterpart="eventlet-nullpool",
        service_errors={"address_unavailable": 870},
        time_wait=800,
    )
    nullpool = run("eventlet-nullpool", failures=800, causes={"address_unavailable": 800}, pool=("NullPool", 5, 10))
    elsewhere = run("django-eventlet", concurrency=1000, own_service=True, counterpart="eventlet-nullpool")
    # The bare status gives way to the kind the log names; the client's own cause stays.
    assert django.causes == {"address_unavailable": 870, "client timeout": 20}
    assert nullpool.causes == nullpool.failures_by_cause  # ours: locust's causes are already kinds
    assert verdict.judge("django-eventlet", [django], None).cause == "address_unavailable"
    # Paired at the same step only: the 1,000-client run has no stand-in beside it.
    (row,) = tables.pair_rows([django, nullpool, elsewhere])
    assert dict(zip(tables.PAIR_COLUMNS, row))["own service"] == "django-eventlet"
    assert dict(zip(tables.PAIR_COLUMNS, row))["TIME_WAIT peak"] == "800 / 0"


EXAMPLES = sorted(p.parent for p in (Path(__file__).resolve().parents[2] / "docs").glob("example-*/results.json"))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_each_example_report_is_what_its_results_make(example, tmp_path):
    # The results.json of a real `make lab` run, kept beside its report: it still loads into the
    # typed figures, and the report, the CSV and recommended.toml are remade from it unchanged.
    shutil.copy(example / "results.json", tmp_path)
    report.write(tmp_path)
    for name in ("report.md", "results.csv", report.RECOMMENDED):
        if (example / name).exists():
            assert (tmp_path / name).read_text() == (example / name).read_text(), f"{example.name}/{name}: remake it"
