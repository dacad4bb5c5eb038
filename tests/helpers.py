"""Reading PostgreSQL's own counters, independently of the code under test."""

from __future__ import annotations

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
