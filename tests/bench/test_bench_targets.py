"""Ratios, targets and the table, from results written by hand."""

from __future__ import annotations

import pytest

from healthz.bench import table, targets
from healthz.bench.readings import series


def _case(name, worker_class, pool, rps, *, variant="", livez=None, sent=200, ok=200):
    case = {
        "name": name,
        "worker_class": worker_class,
        "pool": pool,
        "variant": variant,
        "healthz": {
            "rps": series([rps * 0.95, rps, rps * 1.05]),
            "p50_ms": series([1, 1, 1]),
            "p99_ms": series([9, 10, 11]),
            "requests": 3000,
            "failed": 0,
            "errors": {},
        },
        "statements": {"requests": 200, "ok": ok, "sent": sent, "per_request": sent / 200, "by_statement": {}},
        "sessions_opened": 10,
        "rss_mib_per_worker": [60.0, 61.5],
    }
    if livez:
        case["livez"] = {
            "rps": series([livez]),
            "p50_ms": series([1]),
            "p99_ms": series([5]),
            "requests": 1,
            "failed": 0,
            "errors": {},
        }
    return case


def _crowd(name, rps, p99_ms, failed=0):
    return {
        "name": name,
        "connections": 2000,
        "sessions_opened": 10,
        "run": {
            "requests": 5000,
            "failed": failed,
            "rps": rps,
            "p50_ms": 3.0,
            "p90_ms": 800.0,
            "p99_ms": p99_ms,
            "errors": {"timeout": failed},
        },
    }


def _rate_run(share, rate, throughput, p99_ms, dropped=0):
    due = int(rate * 8)
    return {
        "share": share,
        "basis": "wrk" if share > 1 else "capacity",
        "cpu_us_per_request": 110.0,
        "rate": rate,
        "seconds": 8,
        "elapsed": 8.1,
        "due": due,
        "answered": due - dropped,
        "failed": 0,
        "late": 10,
        "dropped": dropped,
        "p50_ms": 2.0,
        "p99_ms": p99_ms,
        "p999_ms": p99_ms * 1.1,
        "max_ms": p99_ms * 1.2,
        "sent_p99_ms": 5.0,
        "connections_opened": 40,
        "throughput": throughput,
    }


def _fixed_rate(p99_at_90=400.0, saturated=5800.0):
    return {
        "name": "eventlet-queuepool-sized",
        "closed": {"connections": 100, "rps": 6000.0},
        "capacity": saturated,
        "runs": [
            _rate_run(1.5, 9000.0, saturated, 3000.0, dropped=20000),
            _rate_run(0.5, saturated * 0.5, saturated * 0.5, 20.0),
            _rate_run(0.9, saturated * 0.9, saturated * 0.9, p99_at_90),
        ],
        "worker_restarts": 0,
    }


def _django(rps=3000, p99=(20, 20, 20)):
    peer = _case("django-gthread-persistent", "gthread", "", rps)
    peer["healthz"]["p99_ms"] = series(p99)
    return {"project": "examples/django-report", "peers": [peer]}


def _results(
    sized_rps=6000,
    null_rps=500,
    sent=200,
    crowd_failed=0,
    crowd_p99=900.0,
    crowd_rps=500.0,
    fixed_rate=None,
    django=None,
):
    results = {
        "config": {
            "connections": 100,
            "reconnect_every": 100,
            "repeats": 3,
            "duration": 3.0,
            "warmup": 1.0,
            "crowd_duration": 10.0,
        },
        "machine": {"cpu": "cpu", "cores": 2, "memory_gib": 24, "kernel": "6", "python": "3.11"},
        "postgresql": {"version": "15", "statements_from": "log_statement"},
        "pgbench": {
            "clients": 10,
            "persistent": {"tps": series([60000]), "failed": 0},
            "connect": {"tps": series([400]), "failed": 0},
        },
        "cases": [
            _case("eventlet-queuepool-sized", "eventlet", "queuepool-sized", sized_rps, livez=10000, sent=sent),
            _case("eventlet-nullpool", "eventlet", "nullpool", null_rps),
        ],
        # Little's mean: 2,000 connections / 500 req/s = 4 s.
        "crowd": _crowd("eventlet-queuepool-sized", crowd_rps, crowd_p99, crowd_failed),
        "crowd_unfair": _crowd("eventlet-queuepool-sized-unfair", 520.0, 30000.0),
        "fixed_rate": fixed_rate or _fixed_rate(),
        "django": django or _django(),
        "check": {
            "clients": 100,
            "requests": 2000,
            "budget_s": 30.0,
            "cold": {"wall_seconds": 9.4, "passed": True},
            "reused_server": {"wall_seconds": 6.1, "passed": True},
        },
        "seconds": 12,
    }
    results["ratios"] = targets.ratios(results)
    results["targets"] = targets.judge(results)
    return results


def test_series_median_and_spread():
    s = series([90, 100, 120])
    assert (s["median"], s["min"], s["max"]) == (100, 90, 120) and s["spread"] == pytest.approx(0.3)


def test_ratios_against_livez_nullpool_and_pgbench():
    ratios = _results()["ratios"]
    assert ratios["eventlet-queuepool-sized"] == {"livez": 0.6, "nullpool": 12.0, "pgbench": 0.1}
    assert ratios["eventlet-nullpool"]["livez"] == 0.05  # the worker class's livez, measured beside the sized pool


def test_every_target_met():
    judged = _results()["targets"]
    assert [t["met"] for t in judged] == [True] * 10
    assert judged[9]["value"] == "9.4 s cold, 6.1 s on a reused server"
    assert judged[4]["value"] == "p99 900 ms = 0.2 x 4,000 ms (without the gate: p99 30,000 ms = 7.8 x)"
    assert judged[5]["value"] == "0.96 (500 / 520 req/s)"


def test_an_unfair_crowd_or_a_costly_gate_is_not_met():
    judged = _results(crowd_p99=9000.0, crowd_rps=400.0)["targets"]
    # 2,000 / 400 = 5 s mean; p99 9 s is 1.8 x: met; 400 / 520 = 0.77: the gate cost too much.
    assert [t["met"] for t in judged[4:6]] == [True, False]
    assert [t["met"] for t in _results(crowd_p99=9000.0)["targets"][4:6]] == [False, True]


def test_targets_not_met_say_the_value():
    judged = _results(sized_rps=3000, null_rps=400, sent=600, crowd_failed=7)["targets"]
    assert [t["met"] for t in judged[:4]] == [False, False, False, False]
    assert judged[0]["value"] == "0.30" and judged[1]["value"] == "7.5x"
    assert judged[2]["value"].startswith("600 statements for 200 requests")
    assert judged[3]["value"].startswith("7 failed of 5,000")


def test_targets_not_measured():
    results = _results()
    del results["crowd"]
    del results["fixed_rate"]
    results["django"] = {"skipped": "django not installed: pip install 'healthz[django]'"}
    results["cases"] = results["cases"][:1]
    results.pop("ratios")
    del results["check"]
    judged = targets.judge(results)
    assert [t["met"] for t in judged] == [True, None, True, None, None, None, None, None, None, None]
    assert judged[-2]["value"] == "django not installed: pip install 'healthz[django]'"


def test_fixed_rate_and_driver_targets():
    # 90%: p99 from the due time against 1 s; saturated: 5,800 / 6,000 = 0.97 of wrk's maximum.
    judged = _results()["targets"][6:8]
    assert [t["met"] for t in judged] == [True, True] and judged[1]["value"] == "5,800 / 6,000 req/s = 0.97"
    slow = _results(fixed_rate=_fixed_rate(p99_at_90=1500.0, saturated=3000.0))["targets"][6:8]
    assert [t["met"] for t in slow] == [False, False] and slow[0]["value"].startswith("p99 1,500 ms")


def test_healthz_against_the_reports_django():
    # healthz 6,000 req/s, p99 10 ms; Django 3,000 (2.0 x) then 5,000 (1.2 x), or with a better p99.
    assert _results()["targets"][8]["met"] is True
    assert _results()["targets"][8]["value"] == "2.00 x (6,000 / 3,000 req/s), p99 10 ms against 20 ms"
    assert _results(django=_django(rps=5000))["targets"][8]["met"] is False
    assert _results(django=_django(p99=(5, 5, 5)))["targets"][8]["met"] is False
    assert targets.over_django(_results()) == {"django-gthread-persistent": 2.0}


def test_table_shows_every_series_and_the_targets():
    text = table.render(_results(sized_rps=3000))
    assert "eventlet livez (ceiling)" in text and "10,000" in text
    assert "eventlet-queuepool-sized" in text and "3,000" in text and "10%" in text  # the spread
    assert "pgbench, persistent connections (10 clients)" in text
    assert "NOT MET  eventlet-queuepool-sized healthz/livez >= 0.6: 0.30" in text
    assert "at 2,000 connections" in text
    assert "fixed rate: eventlet-queuepool-sized" in text and "150% of wrk" in text and "90% of capacity" in text
    assert "req/s over the report's Django" in text
    rows = table.markdown(_results()).splitlines()
    assert len(rows) == 2 + 6 and all(row.count("|") == len(table.COLUMNS) + 1 for row in rows)
