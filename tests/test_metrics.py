"""Metrics in one process (no multiprocess directory): the pool events feed the counters."""

from __future__ import annotations

import re

from healthz import metrics


def value(text, name, labels=""):
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_pool_events_and_requests_are_counted(make_app, monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    client = make_app(pool_class="QueuePool", pool_size=1, max_overflow=1).test_client()
    before = client.get("/metrics").get_data(as_text=True)
    for _ in range(3):
        assert client.get("/api/v1/healthz/").status_code == 200
    after = client.get("/metrics").get_data(as_text=True)
    delta = lambda name, labels="": value(after, name, labels) - value(before, name, labels)  # noqa: E731
    assert delta("healthz_requests_total", '{endpoint="healthz.healthz",status="200"}') == 3
    assert delta("healthz_requests_total", '{endpoint="metrics",status="200"}') == 1
    assert delta("healthz_pool_connections_opened_total") == 1
    assert delta("healthz_pool_checkout_wait_seconds_count") == 3
    assert delta("healthz_pool_connection_held_seconds_count") == 3
    assert 0 < delta("healthz_pool_connection_held_seconds_sum") < 3 * 5
    assert value(after, "healthz_pool_checkedout") == 0
    assert value(after, "healthz_pool_capacity") == 2
    assert delta("healthz_request_duration_seconds_count", '{endpoint="healthz.healthz"}') == 3
    assert delta("healthz_request_duration_seconds_bucket", '{endpoint="healthz.healthz",le="10.0"}') == 3


def test_capacity_is_what_the_pool_lets_out_at_once(make_app, monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    for settings, capacity in [
        ({"pool_size": 5, "max_overflow": 0}, 5.0),
        ({"pool_size": 5, "max_overflow": 10}, 15.0),
        ({"max_overflow": -1}, float("inf")),
        ({"pool_class": "NullPool"}, float("inf")),
    ]:
        make_app(**settings)
        assert value(metrics.render().decode(), "healthz_pool_capacity") == capacity, settings


def test_overflow_gauge_counts_checkouts_beyond_pool_size(make_app):
    app = make_app(pool_class="QueuePool", pool_size=1, max_overflow=2)
    engine = app.extensions["healthz.engine"]
    with engine.connect(), engine.connect(), engine.connect():
        text = metrics.render().decode()
        assert value(text, "healthz_pool_checkedout") == 3
        assert value(text, "healthz_pool_overflow") == 2
    text = metrics.render().decode()
    assert value(text, "healthz_pool_checkedout") == 0 and value(text, "healthz_pool_overflow") == 0
    assert value(text, "healthz_pool_connections_closed_total") >= 2


def test_no_metrics_route_when_switched_off(make_app):
    assert make_app(metrics=False).test_client().get("/metrics").status_code == 404
