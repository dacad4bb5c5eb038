"""Prometheus metrics of the service and its pool, named in SQLAlchemy's pool vocabulary.

Under gunicorn the config sets ``PROMETHEUS_MULTIPROC_DIR`` before any worker starts, so every
worker writes its values to files there and ``/metrics`` sums them across workers
(prometheus_client's multiprocess mode). Without it, values are this process's own.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE  # noqa: F401  (re-exported)
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

REQUESTS = Counter("healthz_requests", "HTTP responses by endpoint and status.", ["endpoint", "status"], registry=None)
DB_ERRORS = Counter("healthz_db_errors", "Failed health checks by error kind.", ["kind"], registry=None)
CONNECTIONS_OPENED = Counter(
    "healthz_pool_connections_opened", "DBAPI connections the pool opened (pool event 'connect').", registry=None
)
CONNECTIONS_CLOSED = Counter(
    "healthz_pool_connections_closed",
    "DBAPI connections the pool closed (pool events 'close' and 'close_detached').",
    registry=None,
)
CHECKEDOUT = Gauge(
    "healthz_pool_checkedout", "Connections checked out of the pool now.", registry=None, multiprocess_mode="livesum"
)
OVERFLOW = Gauge(
    "healthz_pool_overflow",
    "QueuePool overflow connections in use now (checked out beyond pool_size).",
    registry=None,
    multiprocess_mode="livesum",
)
CAPACITY = Gauge(
    "healthz_pool_capacity",
    "Connections the pool lets be checked out at once (pool_size + max_overflow; +Inf when unbounded). "
    "Saturation is healthz_pool_checkedout / healthz_pool_capacity.",
    registry=None,
    multiprocess_mode="livesum",
)
REQUEST_DURATION = Histogram(
    "healthz_request_duration_seconds",
    "Seconds from the request reaching the app to its response, by endpoint.",
    ["endpoint"],
    # Around the 1 s a Kubernetes probe waits by default, and up to the 10 s a load test gives up after.
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=None,
)
CHECKOUT_WAIT = Histogram(
    "healthz_pool_checkout_wait_seconds",
    "Seconds from asking the pool for a connection to holding one (includes connecting).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=None,
)

CONNECTION_HELD = Histogram(
    "healthz_pool_connection_held_seconds",
    "Seconds a health check held its pooled connection, from checkout to check-in (its hold time: "
    "by Little's law the pool a load needs is requests/s x this).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=None,
)

_ALL = (
    REQUESTS,
    DB_ERRORS,
    CONNECTIONS_OPENED,
    CONNECTIONS_CLOSED,
    CHECKEDOUT,
    OVERFLOW,
    CAPACITY,
    REQUEST_DURATION,
    CHECKOUT_WAIT,
    CONNECTION_HELD,
)


_response_counters: dict[tuple[str, int], object] = {}
_duration_histograms: dict[str, object] = {}


def count_response(endpoint: str, status: int, seconds: float | None = None) -> None:
    """``REQUESTS{endpoint, status} += 1`` and, given ``seconds``, one observation of
    ``REQUEST_DURATION{endpoint}``; each label set is looked up once per process."""
    counter = _response_counters.get((endpoint, status))
    if counter is None:
        counter = _response_counters[(endpoint, status)] = REQUESTS.labels(endpoint, str(status))
    counter.inc()
    if seconds is not None:
        histogram = _duration_histograms.get(endpoint)
        if histogram is None:
            histogram = _duration_histograms[endpoint] = REQUEST_DURATION.labels(endpoint)
        histogram.observe(seconds)


def multiprocess_dir() -> str | None:
    """The multiprocess directory in force, or None when values are per process."""
    # prometheus_client still reads the lower-case name it used before 0.10.
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir") or None  # noqa: SIM112


def render() -> bytes:
    """The exposition text of every metric: summed across workers in multiprocess mode."""
    registry = CollectorRegistry()
    if multiprocess_dir():
        multiprocess.MultiProcessCollector(registry)
    else:
        for metric in _ALL:
            registry.register(metric)
    return generate_latest(registry)
