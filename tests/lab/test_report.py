"""The report and its verdict, from results written as the runner writes them."""

from __future__ import annotations

import json

from healthz.lab import report

META = {
    "topology": {"name": "netns", "description": "netns: test", "faithful": True, "port_range": [40000, 40999]},
    "postgres": {"version": "15", "max_connections": 100, "superuser_reserved_connections": 3, "source": "test"},
    "machine": {"cpus": 2, "platform": "linux", "python": "3.11", "loadavg": [0.1, 0.1, 0.1]},
    "versions": {"gunicorn": "25.3.0"},
    "config": {"duration": 10.0, "max_requests": 1000, "interval": 0.2},
    "command": "healthz lab run",
}


def run(
    scenario,
    concurrency=500,
    *,
    requests=10000,
    failures=0,
    causes=None,
    sessions=20,
    capacity=10,
    workers=2,
    summary="QueuePool(pool_size=10, max_overflow=0)",
    time_wait=0,
    **extra,
):
    result = {
        "scenario": scenario,
        "description": f"{scenario} stands for",
        "summary": summary,
        "worker_class": "eventlet",
        "workers": workers,
        "pool_capacity": capacity,
        "concurrency": concurrency,
        "connection": "close",
        "topology": "netns",
        "run_dir": f"runs/{scenario}",
        "commands": {"rerun": f"healthz lab run -s {scenario}", "gunicorn": "g", "locust": "l"},
        "error": None,
        "seconds": 10.0,
        "requests": requests,
        "failures": failures,
        "error_rate": failures / requests if requests else None,
        "rps": requests / 10,
        "p50_ms": 10,
        "p95_ms": 20,
        "p99_ms": 30,
        "failures_by_cause": causes or {},
        "service_errors": causes or {},
        "address_unavailable": (causes or {}).get("address_unavailable", 0),
        "pool_timeouts": (causes or {}).get("pool_timeout", 0),
        "sessions_opened": sessions,
        "sessions_per_second": sessions / 10,
        "sessions_per_request": sessions / requests,
        "sessions_per_success": sessions / max(1, requests - failures),
        "backends_peak": min(sessions, 20),
        "backends_mean": 10.0,
        "backends_left": 0,
        "time_wait_peak": time_wait,
        "established_peak": 20,
        "ports": 1000,
        "cpu_seconds": {"gunicorn": 5.0, "postgres": 1.0, "locust": 2.0},
        "worker_restarts": 0,
        "worker_timeouts": 0,
        "samples": [{"t": 0.0, "time_wait": 0}, {"t": 0.2, "time_wait": time_wait}],
        "history": [],
    }
    result.update(extra)
    return result


RESULTS = [
    run(
        "eventlet-nullpool",
        requests=6000,
        failures=4800,
        causes={"address_unavailable": 4800},
        sessions=1300,
        capacity=None,
        summary="NullPool",
        time_wait=990,
    ),
    run(
        "eventlet-queuepool-default",
        sessions=900,
        capacity=15,
        summary="QueuePool(pool_size=5, max_overflow=10)",
        time_wait=400,
    ),
    run("eventlet-queuepool-sized", sessions=20),
    run("eventlet-queuepool-sized", concurrency=1000, sessions=20),
]


def test_verdict_per_scenario_in_numbers():
    nullpool = report.scenario_verdict([RESULTS[0]], META)
    assert nullpool["failed"] is True and nullpool["cause"] == "address_unavailable"
    assert "opened 1,300 sessions for 6,000 requests" in nullpool["text"]
    assert "TIME_WAIT peaked at 990 of 1,000 ports" in nullpool["text"]
    assert "80% of requests failed: address_unavailable 4,800 (80%)" in nullpool["text"]
    sized = report.scenario_verdict(RESULTS[2:], META)
    assert sized["failed"] is False and sized["worst"]["concurrency"] == 1000
    assert "no failed requests" in sized["text"]


def test_overflow_churn_and_budget_are_named():
    default = report.scenario_verdict([RESULTS[1]], META)
    assert default["failed"] is False
    assert any(
        n.startswith(
            "Overflow churn: 900 sessions opened at 500 clients although 2 workers x pool of 15 hold at most 30"
        )
        for n in default["notes"]
    )
    assert any(
        "Sustained, 90 sessions/s keep 5,400 client ports in TIME_WAIT (peak here 400 of 1,000 ports in range)." in n
        for n in default["notes"]
    )
    over = run("big", capacity=60, sessions=120)
    notes = report.pooling_notes([over], META)
    assert "Budget: 2 workers x 60 connections = 120 exceeds max_connections minus reserved (97)." in notes
    timeouts = run("small", failures=50, causes={"pool_timeout": 50})
    assert any("50 requests waited longer than pool_timeout" in n for n in report.pooling_notes([timeouts], META))


def test_the_answer_follows_the_figures():
    verdicts = {
        n: report.scenario_verdict([r for r in RESULTS if r["scenario"] == n], META)
        for n in dict.fromkeys(r["scenario"] for r in RESULTS)
    }
    text = "\n".join(report.answer(verdicts, RESULTS, META))
    assert "occurred in: eventlet-nullpool (80% failed; a new database connection per request, 130 sessions/s" in text
    assert "that rate needs 7,800 ports: TIME_WAIT peaked at 990 of 1,000 ports" in text
    assert (
        "Yes, when the pool is bounded" in text
        and "eventlet-queuepool-sized (20 sessions for 10,000 requests at 1,000 clients" in text
    )
    assert "Not with overflow" in text
    assert "2 workers x pool_size 10 = 20 connections per application host" in text
    assert "up to 4 such hosts fit" in text  # (100 - 3) // 20
    # Nothing held: no "Yes", no recommendation.
    failing = [RESULTS[0]]
    verdicts = {"eventlet-nullpool": report.scenario_verdict(failing, META)}
    text = "\n".join(report.answer(verdicts, failing, META))
    assert "Yes" not in text and "Recommended" not in text


def test_persistent_connections_beyond_the_port_range_are_told_apart():
    held = run(
        "eventlet-singleton-keepalive",
        concurrency=1000,
        requests=5000,
        failures=100,
        causes={"address_unavailable": 100},
        sessions=1000,
        capacity=None,
        summary="SingletonThreadPool",
        established_peak=1000,
    )
    assert report.exhaustion_reason(held).startswith(
        "database connections held open: 1,000 toward PostgreSQL at once of 1,000 ports"
    )


def test_loopback_says_it_cannot_show_exhaustion():
    meta = {
        **META,
        "topology": {"name": "loopback", "description": "loopback", "faithful": False, "port_range": [32768, 60999]},
    }
    results = [run("eventlet-nullpool", sessions=5000, capacity=None, summary="NullPool"), RESULTS[2]]
    verdicts = {r["scenario"]: report.scenario_verdict([r], meta) for r in results}
    text = "\n".join(report.answer(verdicts, results, meta))
    assert "loopback topology, where Linux reuses TIME_WAIT ports" in text and "eventlet-nullpool 500/s" in text
    blocks = report.build({"meta": meta, "results": results}, [])
    assert any(b[0] == "p" and b[1].startswith("**Loopback caveat:**") for b in blocks)


def test_a_run_that_was_not_measured_is_reported_as_such():
    broken = {**run("x"), "error": "gunicorn (eventlet) exited with status 2: healthz: HEALTHZ_POOL_SIZE='x'"}
    verdict = report.scenario_verdict([broken], META)
    assert verdict["failed"] is None and "not measured" in verdict["text"]
    rows = report.step_rows([broken], 500)
    assert rows[0][1].startswith("not measured: gunicorn (eventlet) exited")


def test_write_makes_every_file(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"meta": META, "results": RESULTS}))
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


def test_a_service_that_stops_answering_failed_even_without_failures():
    stuck = run(
        "eventlet-singleton:pool_size=100",
        concurrency=100,
        requests=191,
        sessions=251,
        capacity=None,
        stalled_seconds=8.8,
    )
    verdict = report.scenario_verdict([stuck], META)
    assert verdict["failed"] is True and verdict["cause"] == "stopped answering"
    assert "no request completed for 8.8 s while 100 clients waited" in verdict["text"]


def test_a_run_too_short_to_exhaust_the_ports_is_at_risk_not_held():
    short = run(
        "eventlet-nullpool",
        concurrency=100,
        requests=1142,
        sessions=1237,
        capacity=None,
        summary="NullPool",
        time_wait=744,
        seconds=4.0,
        sessions_per_second=306.0,
    )
    verdict = report.scenario_verdict([short], META)
    assert verdict["failed"] is False and verdict["at_risk"] is True and report.outcome(verdict) == "at risk"
    assert (
        "306 sessions/s, which keep 18,360 client ports in TIME_WAIT when sustained, more than the 1,000 in range"
        in verdict["text"]
    )
    sized = report.scenario_verdict([RESULTS[2]], META)
    assert sized["at_risk"] is False and report.outcome(sized) == "held"
    text = "\n".join(report.answer({"eventlet-nullpool": verdict}, [short], META))
    assert "Recommended" not in text


def test_exhaustion_effect_says_what_each_placement_did():
    base = {"ports": 1000, "time_wait_peak": 0, "address_unavailable": 0, "failures_by_cause": {}}
    assert report.exhaustion_effect(base) == "removed"
    on_app = {**base, "pgbouncer": {"placement": "app", "logins": 2500}, "seconds": 10}
    assert report.exhaustion_effect({**on_app, "time_wait_peak": 498}).startswith(
        "held only by TIME_WAIT reuse on loopback"
    )
    moved = {**base, "time_wait_peak": 1000, "address_unavailable": 12}
    assert report.exhaustion_effect(moved).startswith("only moved")
    # On the database host, 240 logins/s over 10 s from 3 hosts = 80/s each: 4,800 ports needed > 1,000.
    short = {**base, "pgbouncer": {"placement": "db", "logins": 2400}, "seconds": 10, "hosts": 3, "time_wait_peak": 807}
    assert report.port_churn_per_host(short) == 80
    assert report.exhaustion_effect(short).startswith(
        "only moved: 80 connections/s to PgBouncer per host keep 4,800 ports"
    )
    assert report.exhaustion_effect({**short, "pgbouncer": {"placement": "app-unix", "logins": 2400}}) == "removed"
