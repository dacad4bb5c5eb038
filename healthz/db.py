"""The database layer: the only place engines are made.

It builds the engine and its pool from :class:`~healthz.config.Settings`, attaches it to the
app, keeps engines apart across ``fork()`` and decides whether psycopg2 waits cooperatively
under green workers (the "green driver").
"""

from __future__ import annotations

import logging
import sys
import weakref

import psycopg2.extensions
import sqlalchemy
from flask import Flask, current_app
from sqlalchemy import event, pool
from sqlalchemy.engine import Engine

from . import metrics
from .config import Settings, SettingsError
from .models import Base, Role

log = logging.getLogger(__name__)

_POOL_CLASSES = {
    "QueuePool": pool.QueuePool,
    "NullPool": pool.NullPool,
    "SingletonThreadPool": pool.SingletonThreadPool,
}
_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def create_engine(settings: Settings, *, instrument: bool | None = None) -> Engine:
    """An engine on ``settings.database_url`` with the pool the settings describe.

    Only the arguments a pool class takes are passed to it: ``NullPool`` gets neither
    ``pool_size`` nor ``max_overflow``. ``instrument`` (default: ``settings.metrics``) hooks
    the pool's events to the Prometheus metrics.
    """
    kwargs: dict[str, object] = {"pool_recycle": settings.pool_recycle, "pool_pre_ping": settings.pool_pre_ping}
    if settings.pool_class == "QueuePool":
        kwargs.update(
            pool_size=settings.pool_size,
            max_overflow=settings.max_overflow,
            pool_timeout=settings.pool_timeout,
            pool_use_lifo=settings.pool_use_lifo,
        )
    elif settings.pool_class == "SingletonThreadPool":
        kwargs.update(pool_size=settings.pool_size)
    connect_args: dict[str, object] = {"application_name": settings.application_name}
    if settings.connect_timeout:
        connect_args["connect_timeout"] = settings.connect_timeout
    if settings.statement_timeout:
        connect_args["options"] = f"-c statement_timeout={settings.statement_timeout}"
    engine = sqlalchemy.create_engine(
        settings.engine_url,
        poolclass=_POOL_CLASSES[settings.pool_class],
        connect_args=connect_args,
        isolation_level=settings.isolation_level,
        hide_parameters=True,
        **kwargs,
    )
    if settings.metrics if instrument is None else instrument:
        _instrument(engine.pool, settings)
    _engines.add(engine)
    return engine


def pool_capacity(settings: Settings) -> float:
    """Connections the pool lets be checked out at once: ``pool_size + max_overflow`` for QueuePool,
    ``inf`` when nothing bounds it (``max_overflow=-1``, NullPool, SingletonThreadPool, which opens
    one per thread however many threads ask)."""
    if settings.pool_class != "QueuePool" or settings.max_overflow < 0:
        return float("inf")
    return settings.pool_size + settings.max_overflow


def _instrument(engine_pool: pool.Pool, settings: Settings) -> None:
    metrics.CAPACITY.set(pool_capacity(settings))
    # A per-process count of checkouts: NullPool and SingletonThreadPool keep none of their own.
    checkedout = 0
    overflow_base = settings.pool_size if settings.pool_class == "QueuePool" else None
    overflow_written = -1  # each write locks and writes a multiprocess file: skip unchanged ones

    def set_gauges() -> None:
        nonlocal overflow_written
        metrics.CHECKEDOUT.set(checkedout)
        if overflow_base is not None:
            overflow = max(0, checkedout - overflow_base)
            if overflow != overflow_written:
                metrics.OVERFLOW.set(overflow)
                overflow_written = overflow

    @event.listens_for(engine_pool, "connect")
    def on_connect(dbapi_connection, record):
        metrics.CONNECTIONS_OPENED.inc()

    @event.listens_for(engine_pool, "close")
    def on_close(dbapi_connection, record):
        metrics.CONNECTIONS_CLOSED.inc()

    @event.listens_for(engine_pool, "close_detached")
    def on_close_detached(dbapi_connection):
        metrics.CONNECTIONS_CLOSED.inc()

    @event.listens_for(engine_pool, "checkout")
    def on_checkout(dbapi_connection, record, proxy):
        nonlocal checkedout
        checkedout += 1
        set_gauges()

    @event.listens_for(engine_pool, "checkin")
    def on_checkin(dbapi_connection, record):
        nonlocal checkedout
        checkedout -= 1
        set_gauges()


def init_app(app: Flask, settings: Settings) -> None:
    """Attach an engine for ``settings`` to ``app`` and apply the green driver (psycopg2's; psycopg 3
    needs none, and eventlet, which it does not support, is refused)."""
    if settings.driver == "psycopg" and green_library() == "eventlet":
        raise SettingsError(
            "HEALTHZ_DRIVER", "psycopg", "psycopg2 under eventlet (psycopg 3 does not support eventlet)"
        )
    app.extensions["healthz.engine"] = create_engine(settings)
    mode = settings.green_driver if settings.driver == "psycopg2" else "off"
    app.extensions["healthz.green_driver"] = apply_green_driver(mode)


def get_engine(app: Flask | None = None) -> Engine:
    """``app``'s engine (default: the current app's)."""
    return (app or current_app).extensions["healthz.engine"]


def after_fork() -> None:
    """Forget, without closing, every connection inherited from the parent process.

    Call it in the child right after ``fork()`` (gunicorn's ``post_fork``): the parent's sockets
    stay the parent's, and the child's pools start empty.
    """
    for engine in list(_engines):
        engine.dispose(close=False)


def dispose_all() -> None:
    """Close every pooled connection of this process (gunicorn's ``worker_exit``)."""
    for engine in list(_engines):
        engine.dispose()


def green_library() -> str | None:
    """``"eventlet"`` or ``"gevent"`` when that library has monkey-patched ``socket`` in this
    process, else None."""
    if "eventlet" in sys.modules:
        from eventlet import patcher

        if patcher.is_monkey_patched("socket"):
            return "eventlet"
    if "gevent" in sys.modules:
        from gevent import monkey

        if monkey.is_module_patched("socket"):
            return "gevent"
    return None


def apply_green_driver(mode: str) -> str:
    """Install or remove psycopg2's wait callback; return what is in force.

    ``on`` installs psycogreen's callback for the green library in use, so a query yields to
    other greenlets instead of blocking the worker; it is refused outside eventlet and gevent.
    ``off`` removes any callback (eventlet's ``monkey_patch()`` installs one of its own).
    ``auto`` is ``on`` under a green library and ``off`` otherwise. Returns ``"eventlet"``,
    ``"gevent"`` or ``"off"``.
    """
    library = green_library()
    if mode == "off" or (mode == "auto" and library is None):
        psycopg2.extensions.set_wait_callback(None)
        return "off"
    if library is None:
        raise SettingsError("HEALTHZ_GREEN_DRIVER", mode, "auto or off outside an eventlet or gevent worker")
    if library == "eventlet":
        import psycogreen.eventlet as green
    else:
        import psycogreen.gevent as green
    green.patch_psycopg()
    return library


def init_db(engine: Engine, roles: int) -> int:
    """Create the ``role`` table if missing and make sure roles ``role-1`` .. ``role-N`` exist.

    Idempotent: existing rows are kept, so running it twice adds nothing. Returns the number of
    rows in ``role`` afterwards.
    """
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        if roles > 0:
            rows = [{"name": f"role-{i}"} for i in range(1, roles + 1)]
            conn.execute(pg_insert(Role).on_conflict_do_nothing(index_elements=["name"]), rows)
        return conn.execute(sqlalchemy.select(sqlalchemy.func.count()).select_from(Role)).scalar_one()


def seed(settings: Settings, roles: int) -> int:
    """:func:`init_db` on ``settings.database_url`` through a short-lived, uninstrumented
    NullPool engine, disposed afterwards. Returns the rows in ``role``."""
    engine = create_engine(settings.replace(pool_class="NullPool"), instrument=False)
    try:
        return init_db(engine, roles)
    finally:
        engine.dispose()


__all__ = [
    "create_engine",
    "init_app",
    "get_engine",
    "after_fork",
    "dispose_all",
    "apply_green_driver",
    "init_db",
    "seed",
]
