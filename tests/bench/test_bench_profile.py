"""Charging py-spy's samples to libraries (the profile itself runs in docs/benchmark.md's command)."""

from __future__ import annotations

from healthz.bench import profile


def test_each_sample_goes_to_the_library_of_its_innermost_known_frame():
    raw = [
        "<module> (gunicorn/app/base.py:1);handle (gunicorn/workers/base_async.py:2);"
        "healthz (healthz/views.py:41);do_execute (sqlalchemy/engine/default.py:1192) 30",
        "handle (gunicorn/workers/base_async.py:2);parse (gunicorn/http/message.py:433) 20",
        "healthz (healthz/views.py:41);acquire (healthz/gate.py:50) 10",
        "switch (eventlet/hubs/hub.py:310) 25",
        "healthz (healthz/views.py:52);inc (prometheus_client/values.py:115) 10",
        "<frozen> (threading.py:1) 5",
        "",
        "not a sample line",
    ]
    shares = profile.by_library(raw)
    assert shares == {
        "SQLAlchemy": 0.3,
        "eventlet (hub, green sockets)": 0.25,
        "gunicorn (HTTP parsing)": 0.2,
        "healthz (first-come gate)": 0.1,
        "prometheus_client": 0.1,
        "other (interpreter, standard library)": 0.05,
    }
    assert list(shares) == sorted(shares, key=shares.get, reverse=True)
    assert profile.by_library([]) == {}
