"""Reading PostgreSQL's own counters, independently of the code under test."""

from __future__ import annotations

import re
import time


def pg_value(postgres, sql, *args):
    """One value from the admin connection (a new one each time: no stats snapshot kept)."""
    with postgres.connect() as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()[0]


def sessions(postgres, database):
    """``pg_stat_database.sessions`` of ``database``: sessions opened since the server started."""
    return pg_value(postgres, "SELECT sessions FROM pg_stat_database WHERE datname = %s", database)


def backends(postgres, database, application_name="healthz"):
    """Backends on ``database`` opened by the service."""
    return pg_value(
        postgres,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
        database,
        application_name,
    )


def wait_until(predicate, timeout=10.0, interval=0.05):
    """Poll ``predicate`` until true or ``timeout``; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def settled_sessions(postgres, database):
    """Sessions opened on ``database`` once every service backend has ended (a backend reports
    its session to the statistics when it exits)."""
    assert wait_until(lambda: backends(postgres, database) == 0), "service backends left behind"
    previous = None
    for _ in range(40):
        current = sessions(postgres, database)
        if current == previous:
            return current
        previous = current
        time.sleep(0.25)
    return previous


def metric(text, name, labels=""):
    """The sum of a metric's samples (``labels`` as written, ``{k="v"}``) in a ``/metrics`` text; None
    when it has none."""
    pattern = rf"^{re.escape(name)}{re.escape(labels)} (\S+)$"
    values = [float(m.group(1)) for m in re.finditer(pattern, text, re.M)]
    return sum(values) if values else None


def get_many(base_url, requests, concurrency, keep_alive=False, path="/api/v1/healthz/", timeout=30.0):
    """``requests`` GETs of ``path`` from ``concurrency`` threads; the list of statuses.

    With ``keep_alive`` each thread reuses one TCP connection (one greenlet per thread on a
    green worker); without, every request opens a new one, as ``ab`` without ``-k`` does.
    """
    import http.client
    import threading
    from urllib.parse import urlsplit

    host, port = urlsplit(base_url).hostname, urlsplit(base_url).port
    statuses: list[int] = []
    lock = threading.Lock()
    per_thread = [requests // concurrency + (1 if i < requests % concurrency else 0) for i in range(concurrency)]

    def work(count):
        conn = None
        for _ in range(count):
            if conn is None:
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                status = response.status
            except OSError:
                status = 0
                conn.close()
                conn = None
            with lock:
                statuses.append(status)
            if not keep_alive and conn is not None:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in per_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout * 4)
    return statuses


def lab_run(
    scenario,
    concurrency=500,
    *,
    requests=10000,
    failures=0,
    causes=None,
    sessions=20,
    pool=("QueuePool", 10, 0),
    workers=2,
    time_wait=0,
    **extra,
):
    """A :class:`RunFigures` as the runner writes one: a scenario at a step, its figures from the arguments."""
    from healthz.lab.figures import PoolShape, RunFigures

    shape = PoolShape(*pool)
    summary = f"{shape.pool_class}(pool_size={shape.pool_size}, max_overflow={shape.max_overflow})"
    result = {
        "scenario": scenario,
        "description": f"{scenario} stands for",
        "summary": summary,
        "worker_class": "eventlet",
        "workers": workers,
        "pool_capacity": shape.capacity,
        "pool": shape.to_dict(),
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
        "samples": [{"t": 0.0, "at": 0.0, "time_wait": 0}, {"t": 0.2, "at": 0.2, "time_wait": time_wait}],
        "history": [],
    }
    result.update(extra)
    return RunFigures.from_dict(result)


def bouncer(placement, **figures):
    """PgBouncer's figures of a run, as :func:`lab_run` takes them."""
    return {"placement": placement, "pool_mode": "transaction", "default_pool_size": 10, **figures}
