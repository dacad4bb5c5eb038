"""The service under real gunicorn workers (``gunicorn -c python:healthz.gunicorn_conf.<worker> healthz.wsgi:app``)
on a real PostgreSQL: concurrency, sessions opened per pool class, the green driver, metrics."""

from __future__ import annotations

import re
import threading
import time
import urllib.error
import urllib.request

import pytest
from helpers import backends, get_many, metric, pg_value, settled_sessions, wait_until

WORKER_CLASSES = ["eventlet", "gevent", "gthread", "sync"]


@pytest.mark.parametrize("keep_alive", [False, True], ids=["new-connection", "keep-alive"])
@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_each_worker_class_serves_concurrent_requests(run_gunicorn, worker_class, keep_alive):
    server = run_gunicorn(worker_class, workers=2, HEALTHZ_POOL_SIZE=4, HEALTHZ_MAX_OVERFLOW=0)
    statuses = get_many(server.base_url, 120, 12, keep_alive=keep_alive)
    assert statuses == [200] * 120
    assert len(server.worker_pids()) == 2


def _opened(postgres, database, server, **load):
    before = settled_sessions(postgres, database)
    statuses = get_many(server.base_url, **load)
    server.stop()
    return statuses, settled_sessions(postgres, database) - before


def test_nullpool_opens_a_session_per_request(run_gunicorn, postgres, database):
    server = run_gunicorn("gthread", workers=2, HEALTHZ_POOL_CLASS="NullPool")
    statuses, opened = _opened(postgres, database, server, requests=100, concurrency=8)
    assert statuses == [200] * 100
    assert opened == 100


@pytest.mark.parametrize("worker_class", ["eventlet", "gthread"])
def test_queuepool_without_overflow_opens_at_most_pool_size_per_worker(run_gunicorn, postgres, database, worker_class):
    server = run_gunicorn(worker_class, workers=2, HEALTHZ_POOL_SIZE=2, HEALTHZ_MAX_OVERFLOW=0)
    statuses, opened = _opened(postgres, database, server, requests=200, concurrency=20)
    assert statuses == [200] * 200
    assert 1 <= opened <= 2 * 2


def test_singletonthreadpool_opens_a_session_per_thread_under_gthread(run_gunicorn, postgres, database):
    server = run_gunicorn("gthread", workers=1, GUNICORN_THREADS=4, HEALTHZ_POOL_CLASS="SingletonThreadPool")
    statuses, opened = _opened(postgres, database, server, requests=80, concurrency=8)
    assert statuses == [200] * 80
    assert 1 <= opened <= 4


@pytest.mark.parametrize(
    "keep_alive, concurrency, expected", [(True, 4, 4), (False, 1, 40)], ids=["keep-alive", "new-connection"]
)
def test_singletonthreadpool_opens_a_session_per_greenlet_under_eventlet(
    run_gunicorn, postgres, database, keep_alive, concurrency, expected
):
    # Django's CONN_MAX_AGE under eventlet: a connection per greenlet, and gunicorn starts a
    # greenlet per client connection, so without keep-alive every request opens a session.
    # (New connections are made one at a time here: concurrently, SingletonThreadPool's cleanup
    # closes connections that live greenlets are using and the worker freezes; the lab's
    # eventlet-singleton scenario measures that.)
    server = run_gunicorn("eventlet", workers=1, HEALTHZ_POOL_CLASS="SingletonThreadPool")
    statuses, opened = _opened(postgres, database, server, requests=40, concurrency=concurrency, keep_alive=keep_alive)
    assert statuses == [200] * 40
    assert opened == expected


def _waiting_on_lock(postgres, database):
    return pg_value(
        postgres,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = 'healthz' AND wait_event_type = 'Lock'",
        database,
    )


@pytest.mark.parametrize(
    "worker_class, green_driver, concurrent, driver",
    [
        ("eventlet", "auto", 4, "psycopg2"),
        ("gevent", "auto", 4, "psycopg2"),
        ("gevent", "on", 4, "psycopg2"),
        ("gevent", "off", 1, "psycopg2"),
        ("eventlet", "off", 1, "psycopg2"),
        ("gevent", "auto", 4, "psycopg"),  # psycopg 3 waits cooperatively under gevent by itself
    ],
)
def test_green_driver_decides_whether_queries_overlap(
    run_gunicorn, postgres, database, worker_class, green_driver, concurrent, driver
):
    # One worker, four clients, and the role table locked: every health check waits on the lock
    # inside PostgreSQL. A cooperative driver lets the worker start all four; a blocking one
    # stops the whole worker in the first.
    server = run_gunicorn(
        worker_class,
        workers=1,
        HEALTHZ_GREEN_DRIVER=green_driver,
        HEALTHZ_POOL_SIZE=5,
        HEALTHZ_MAX_OVERFLOW=0,
        HEALTHZ_DRIVER=driver,
    )
    in_force = "off" if green_driver == "off" or driver == "psycopg" else worker_class
    assert f"driver {driver}, green driver {in_force} (HEALTHZ_GREEN_DRIVER={green_driver})" in server.log_text()
    with postgres.connect(database, "healthz") as locker:
        locker.autocommit = False
        locker.cursor().execute("LOCK TABLE role IN ACCESS EXCLUSIVE MODE")
        results: list[list[int]] = []
        clients = [threading.Thread(target=lambda: results.append(get_many(server.base_url, 1, 1))) for _ in range(4)]
        for client in clients:
            client.start()
        wait_until(lambda: _waiting_on_lock(postgres, database) >= concurrent, timeout=10)
        time.sleep(1.0)  # long enough for a blocked worker to have shown a second query if it could
        seen = _waiting_on_lock(postgres, database)
        locker.rollback()
    for client in clients:
        client.join(30)
    assert seen == concurrent
    assert sorted(s for r in results for s in r) == [200] * 4


def _metric(text, name, labels=""):
    value = metric(text, name, labels)
    assert value is not None, f"{name}{labels} not in /metrics"
    return value


def test_metrics_are_summed_across_workers(run_gunicorn, postgres, database):
    server = run_gunicorn("gthread", workers=2, HEALTHZ_POOL_CLASS="NullPool")
    before = settled_sessions(postgres, database)
    assert get_many(server.base_url, 60, 6) == [200] * 60
    wait_until(lambda: backends(postgres, database) == 0)
    text = urllib.request.urlopen(server.base_url + "/metrics", timeout=10).read().decode()
    opened = settled_sessions(postgres, database) - before
    assert _metric(text, "healthz_requests_total", '{endpoint="healthz.healthz",status="200"}') == 60
    assert _metric(text, "healthz_pool_connections_opened_total") == opened == 60
    assert _metric(text, "healthz_pool_connections_closed_total") == 60
    assert _metric(text, "healthz_pool_checkedout") == 0
    assert _metric(text, "healthz_pool_checkout_wait_seconds_count") == 60
    assert len(set(re.findall(r'pid="(\d+)"', text))) <= 2


def test_metrics_count_errors_by_kind(run_gunicorn, postgres):
    url = postgres.url_for("no_such_database")
    server = run_gunicorn("gevent", workers=1, url=url)
    assert get_many(server.base_url, 5, 1) == [499] * 5
    text = urllib.request.urlopen(server.base_url + "/metrics", timeout=10).read().decode()
    assert _metric(text, "healthz_db_errors_total", '{kind="other"}') == 5
    assert _metric(text, "healthz_requests_total", '{endpoint="healthz.healthz",status="499"}') == 5
    assert server.log_text().count("healthz 499 error=other") == 5


def test_metrics_can_be_switched_off(run_gunicorn):
    server = run_gunicorn("sync", workers=1, HEALTHZ_METRICS="off")
    assert get_many(server.base_url, 3, 1) == [200] * 3
    assert get_many(server.base_url, 1, 1, path="/metrics") == [404]


def test_a_wrong_password_is_in_no_response_metric_or_log(run_gunicorn, postgres, database):
    wrong = "wrong-" + postgres.password
    server = run_gunicorn("eventlet", workers=1, url=postgres.url_for(database).replace(postgres.password, wrong))
    assert get_many(server.base_url, 3, 1) == [499] * 3
    bodies = [
        urllib.request.urlopen(server.base_url + path, timeout=10).read().decode()
        for path in ("/metrics", "/api/v1/livez/")
    ]
    try:
        urllib.request.urlopen(server.base_url + "/api/v1/healthz/", timeout=10)
    except urllib.error.HTTPError as exc:
        bodies.append(exc.read().decode())
    assert bodies[-1] == '{"error":"authentication_failed","status":"error"}\n'
    assert _metric(bodies[0], "healthz_db_errors_total", '{kind="authentication_failed"}') == 3
    server.stop()
    log = server.log_text()
    assert "password authentication failed" in log and "database_url=postgresql+psycopg2://healthz:***@" in log
    for text in (*bodies, log):
        assert wrong not in text and postgres.password not in text
