"""The benchmark end to end, shortened: real PostgreSQL, gunicorn, wrk and pgbench."""

from __future__ import annotations

import json

import pytest

from healthz.bench import cases
from healthz.bench.runner import Bench, BenchConfig

PASSWORD = "bench-test-secret-4711"


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("bench")
    config = BenchConfig(
        cases=cases.default_cases(("eventlet",), ("queuepool-sized", "nullpool"), ()),
        output=output,
        duration=1,
        repeats=2,
        warmup=1,
        connections=20,
        crowd=300,
        crowd_duration=2,
        rate_duration=1,
        rate_connections=200,
        statement_requests=20,
        pgbench_clients=2,
        max_connections=100,
        password=PASSWORD,
    )
    lines: list[str] = []
    results = Bench(config, echo=lines.append).run()
    return results, output, lines


def test_every_figure_is_measured(short_run):
    results, output, lines = short_run
    assert json.loads((output / Bench.RESULTS).read_text()) == results
    sized, unpooled = results["cases"]
    assert sized["name"] == "eventlet-queuepool-sized" and unpooled["name"] == "eventlet-nullpool"
    assert len(sized["healthz"]["rps"]["runs"]) == 2 and len(sized["livez"]["rps"]["runs"]) == 2
    assert "livez" not in unpooled
    for case in (sized, unpooled):
        assert case["healthz"]["failed"] == 0 and case["healthz"]["rps"]["median"] > 0
        assert case["worker_restarts"] == 0 and len(case["rss_mib_per_worker"]) == 2
        assert case["cpu_us_per_request"]["service"] > 0 and case["cpu_us_per_request"]["postgres"] > 0
    assert results["pgbench"]["persistent"]["tps"]["median"] > results["pgbench"]["connect"]["tps"]["median"] > 0
    assert any("pgbench -C run 2/2" in line for line in lines)


def test_the_pooled_path_sends_one_statement_per_request(short_run):
    sized = short_run[0]["cases"][0]
    assert sized["statements"] == {
        "requests": 20,
        "ok": 20,
        "sent": 20,
        "per_request": 1.0,
        "by_statement": {"SELECT count(*) AS count_1 FROM role": 20},
    }


def test_sessions_show_the_pool(short_run):
    sized, unpooled = short_run[0]["cases"]
    assert 1 <= sized["sessions_opened"] <= 10  # two workers, pool_size=5 each
    # NullPool: a session per request served
    assert unpooled["sessions_opened"] >= unpooled["healthz"]["requests"] + unpooled["statements"]["requests"]


def test_ratios_targets_and_crowd(short_run):
    results = short_run[0]
    ratio = results["ratios"]["eventlet-queuepool-sized"]
    assert ratio["nullpool"] > 1 and 0 < ratio["livez"] < 1.5 and 0 < ratio["pgbench"] < 1
    assert results["crowd"]["connections"] == 300 and results["crowd"]["run"]["requests"] > 0
    assert results["crowd"]["worker_restarts"] == 0
    assert [t["met"] is not None for t in results["targets"]] == [True] * 10
    # The crowd ran with the first-come gate and without it, same service otherwise.
    assert results["crowd_unfair"]["name"] == "eventlet-queuepool-sized-unfair"
    assert results["crowd_unfair"]["run"]["requests"] > 0 and results["crowd_unfair"]["connections"] == 300
    assert next(t for t in results["targets"] if "statement" in t["target"])["met"] is True


def test_fixed_rates_are_shares_of_the_measured_maximum_and_the_driver_is_checked(short_run):
    results, _, lines = short_run
    fixed = results["fixed_rate"]
    closed, capacity = fixed["closed"]["rps"], fixed["capacity"]
    # Saturated first at 150% of wrk's maximum; its throughput is the capacity the shares are taken of.
    assert [(r["share"], r["basis"]) for r in fixed["runs"]] == [(1.5, "wrk"), (0.5, "capacity"), (0.9, "capacity")]
    assert fixed["worker_restarts"] == 0 and capacity == fixed["runs"][0]["throughput"] > 0
    for r in fixed["runs"]:
        basis = closed if r["basis"] == "wrk" else capacity
        assert r["rate"] == pytest.approx(r["share"] * basis, rel=0.001) and r["due"] == int(r["rate"] * 1)
        assert r["answered"] + r["dropped"] <= r["due"] and r["p99_ms"] >= r["p50_ms"] > 0
        assert r["cpu_us_per_request"] > 0
    half = fixed["runs"][1]
    assert half["dropped"] == 0 and half["answered"] == half["due"] and half["failed"] == 0
    # Every request due was answered; on cores another test shares, late (the rate is never overshot).
    assert half["throughput"] <= half["rate"] * 1.1
    check = next(t for t in results["targets"] if t["target"].startswith("fixed-rate driver"))
    assert check["met"] is not None and " req/s = " in check["value"]
    assert sum("of its closed-model maximum" in line or "closed-model maximum" in line for line in lines) >= 1


def test_no_password_anywhere(short_run):
    results, output, lines = short_run
    files = [path for path in output.rglob("*") if path.is_file()]
    assert len(files) >= 3  # bench.json and the gunicorn logs
    for path in files:
        assert PASSWORD not in path.read_text(errors="replace"), path
    assert not any(PASSWORD in line for line in lines)
    assert PASSWORD not in repr(results)


def test_the_reports_django_runs_beside_healthz_under_the_same_load(short_run):
    results, _, lines = short_run
    django = results["django"]
    assert [p["name"] for p in django["peers"]] == ["django-gthread-persistent", "django-eventlet-persistent"]
    for peer in django["peers"]:
        assert peer["healthz"]["failed"] == 0 and peer["healthz"]["rps"]["median"] > 0
        assert len(peer["healthz"]["rps"]["runs"]) == 2
    # gthread keeps one connection per thread; eventlet's greenlet connections end with their client connection.
    gthread, eventlet = django["peers"]
    assert gthread["sessions_opened"] <= 2 * 8 < eventlet["sessions_opened"]
    target = next(t for t in results["targets"] if "django-gthread-persistent" in t["target"])
    assert target["met"] is not None and " x (" in target["value"]


def test_healthz_check_is_timed_cold_and_on_a_reused_server(short_run):
    check = short_run[0]["check"]
    for run in (check["cold"], check["reused_server"]):
        assert run["passed"] and run["error"] is None and run["requests"] >= 2000, run
        assert run["sessions_per_request"] <= 0.02 and run["wall_seconds"] > 0
    target = next(t for t in short_run[0]["targets"] if t["target"].startswith("healthz check"))
    assert target["value"].startswith(f"{check['cold']['wall_seconds']} s cold")
