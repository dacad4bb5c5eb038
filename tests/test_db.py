"""The database layer on a real PostgreSQL: what each pool class opens, read from
``pg_stat_database.sessions``; the green driver switch; fork hygiene; seeding."""

from __future__ import annotations

import os
import threading

import psycopg2.extensions
import pytest
import sqlalchemy
from helpers import backends, settled_sessions

from healthz import db
from healthz.config import Settings, SettingsError

HEALTHZ = "/api/v1/healthz/"


def _hammer(client, threads, per_thread):
    statuses = []

    def work():
        for _ in range(per_thread):
            statuses.append(client.get(HEALTHZ).status_code)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(60)
    return statuses


def _opened(postgres, database, app, work):
    before = settled_sessions(postgres, database)
    work()
    app.extensions["healthz.engine"].dispose()
    return settled_sessions(postgres, database) - before


@pytest.mark.parametrize(
    "pool, threads, opened_at_most, opened_at_least",
    [
        ({"pool_class": "NullPool"}, 4, 40, 40),  # one per request
        ({"pool_class": "QueuePool", "pool_size": 3, "max_overflow": 0}, 8, 3, 1),  # never above pool_size
        ({"pool_class": "SingletonThreadPool", "pool_size": 5}, 4, 4, 4),  # one per thread
    ],
    ids=["NullPool", "QueuePool-no-overflow", "SingletonThreadPool"],
)
def test_sessions_opened_per_pool_class(make_app, postgres, database, pool, threads, opened_at_most, opened_at_least):
    app = make_app(**pool)
    statuses = []
    opened = _opened(postgres, database, app, lambda: statuses.extend(_hammer(app.test_client(), threads, 10)))
    assert statuses == [200] * threads * 10
    assert opened_at_least <= opened <= opened_at_most


def test_queuepool_overflow_is_closed_on_checkin(make_app, postgres, database):
    # With the pool full, an overflow connection is closed when it comes back: a burst of two
    # checkouts on pool_size=1 opens a new session every time.
    app = make_app(pool_class="QueuePool", pool_size=1, max_overflow=1)
    engine = app.extensions["healthz.engine"]

    def bursts():
        for _ in range(5):
            with engine.connect() as a, engine.connect() as b:
                a.exec_driver_sql("SELECT 1")
                b.exec_driver_sql("SELECT 1")

    assert _opened(postgres, database, app, bursts) == 1 + 5


def test_pool_arguments_follow_the_pool_class(database_url):
    for pool_class, expected in [
        ("QueuePool", sqlalchemy.pool.QueuePool),
        ("NullPool", sqlalchemy.pool.NullPool),
        ("SingletonThreadPool", sqlalchemy.pool.SingletonThreadPool),
    ]:
        engine = db.create_engine(
            Settings.from_mapping({"database_url": database_url, "pool_class": pool_class, "pool_size": 7})
        )
        assert type(engine.pool) is expected
        if pool_class == "QueuePool":
            assert engine.pool.size() == 7 and engine.pool._max_overflow == 10
        engine.dispose()


def test_connect_args_reach_the_server(make_app, postgres, database):
    app = make_app(statement_timeout=1234, application_name="healthz")
    with app.extensions["healthz.engine"].connect() as conn:
        assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "1234ms"
        assert conn.exec_driver_sql("SELECT current_setting('application_name')").scalar() == "healthz"
        assert backends(postgres, database) == 1


def test_green_driver_outside_green_workers():
    assert db.green_library() is None
    assert db.apply_green_driver("auto") == "off"
    assert psycopg2.extensions.get_wait_callback() is None
    assert db.apply_green_driver("off") == "off"
    with pytest.raises(SettingsError, match="HEALTHZ_GREEN_DRIVER='on' is not accepted"):
        db.apply_green_driver("on")


def test_after_fork_leaves_the_parents_connections_alone(database_url):
    engine = db.create_engine(Settings.from_mapping({"database_url": database_url, "pool_size": 1}), instrument=False)
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")  # one connection now idles in the pool
    pid = os.fork()
    if pid == 0:  # child: forget the inherited connection, then close "its" pool for real
        try:
            db.after_fork()
            engine.dispose()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    with engine.connect() as conn:  # the parent's pooled connection still works
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1
    assert engine.pool.checkedin() == 1
    engine.dispose()


def test_init_db_is_idempotent(database_url):
    engine = db.create_engine(
        Settings.from_mapping({"database_url": database_url, "pool_class": "NullPool"}), instrument=False
    )
    assert db.init_db(engine, 10) == 10
    assert db.init_db(engine, 10) == 10
    assert db.init_db(engine, 12) == 12
    engine.dispose()
