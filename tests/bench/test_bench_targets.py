"""Ratios, targets and the table, from results written by hand."""

from __future__ import annotations

import pytest

from healthz.bench import table, targets
from healthz.bench.runner import series


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


def _results(sized_rps=6000, null_rps=500, sent=200, crowd_failed=0, crowd_p99=900.0, crowd_rps=500.0):
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
    assert [t["met"] for t in judged] == [True] * 6
    assert judged[4]["value"] == "p99 900 ms = 0.2 x 4,000 ms (without the gate: p99 30,000 ms = 7.8 x)"
    assert judged[5]["value"] == "0.96 (500 / 520 req/s)"


def test_an_unfair_crowd_or_a_costly_gate_is_not_met():
    judged = _results(crowd_p99=9000.0, crowd_rps=400.0)["targets"]
    # 2,000 / 400 = 5 s mean; p99 9 s is 1.8 x: met; 400 / 520 = 0.77: the gate cost too much.
    assert [t["met"] for t in judged[4:]] == [True, False]
    assert [t["met"] for t in _results(crowd_p99=9000.0)["targets"][4:]] == [False, True]


def test_targets_not_met_say_the_value():
    judged = _results(sized_rps=3000, null_rps=400, sent=600, crowd_failed=7)["targets"]
    assert [t["met"] for t in judged[:4]] == [False, False, False, False]
    assert judged[0]["value"] == "0.30" and judged[1]["value"] == "7.5x"
    assert judged[2]["value"].startswith("600 statements for 200 requests")
    assert judged[3]["value"].startswith("7 failed of 5,000")


def test_targets_not_measured():
    results = _results()
    del results["crowd"]
    results["cases"] = results["cases"][:1]
    results.pop("ratios")
    assert [t["met"] for t in targets.judge(results)] == [True, None, True, None, None, None]


def test_table_shows_every_series_and_the_targets():
    text = table.render(_results(sized_rps=3000))
    assert "eventlet livez (ceiling)" in text and "10,000" in text
    assert "eventlet-queuepool-sized" in text and "3,000" in text and "10%" in text  # the spread
    assert "pgbench, persistent connections (10 clients)" in text
    assert "NOT MET  eventlet-queuepool-sized healthz/livez >= 0.6: 0.30" in text
    assert "at 2,000 connections" in text
    rows = table.markdown(_results()).splitlines()
    assert len(rows) == 2 + 5 and all(row.count("|") == len(table.COLUMNS) + 1 for row in rows)
