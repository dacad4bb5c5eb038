"""The HTTP contract: ``/api/v1/healthz/`` (database), ``/api/v1/livez/`` (process) and ``/metrics``.

The views are built once per app by :func:`blueprint`, bound to its engine and settings, so a
request does no lookup, no statement construction and no JSON encoding on the success path.
"""

from __future__ import annotations

import time

from flask import Blueprint, Flask, Response, g, jsonify, request
from sqlalchemy.engine import Engine

from . import errors, metrics
from .config import Settings
from .gate import FairGate
from .models import COUNT_ROLES

#: The success body, encoded once.
OK_BODY = b'{"status":"ok"}\n'


def blueprint(engine: Engine, settings: Settings) -> Blueprint:
    """The health endpoints, bound to ``engine``; metrics recorded when ``settings.metrics``."""
    bp = Blueprint("healthz", __name__)
    observe_wait = metrics.CHECKOUT_WAIT.observe if settings.metrics else None
    observe_held = metrics.CONNECTION_HELD.observe if settings.metrics else None
    perf_counter = time.perf_counter
    gate = fair_gate(settings)
    acquire, release = (gate.acquire, gate.release) if gate else (_nothing, _nothing)

    @bp.route("/api/v1/healthz/", methods=["GET", "HEAD"])
    def healthz() -> Response:
        """200 ``{"status": "ok"}`` when ``SELECT count(*) FROM role`` succeeds through the pool;
        ``settings.error_status`` (499 by default) ``{"status": "error", "error": KIND}`` when the
        database call raises, whatever it raised."""
        try:
            started = got = perf_counter()
            acquire()
            try:
                with engine.connect() as conn:
                    if observe_wait is not None:
                        got = perf_counter()
                        observe_wait(got - started)
                    conn.execute(COUNT_ROLES).scalar_one()
            finally:
                release()
            if observe_held is not None:
                observe_held(perf_counter() - got)
        except Exception as exc:  # as the report's view: any failure of the database call is a 499
            return _database_error(exc, settings)
        return Response(OK_BODY, mimetype="application/json")

    @bp.route("/api/v1/livez/", methods=["GET", "HEAD"])
    def livez() -> Response:
        """200 ``{"status": "ok"}`` with no database call: the process answers."""
        return Response(OK_BODY, mimetype="application/json")

    return bp


def _nothing() -> None:
    pass


def fair_gate(settings: Settings) -> FairGate | None:
    """The first-come, first-served gate for a bounded QueuePool (``pool_fair``), sized to what the
    pool lends at once; None for an unbounded pool, which never makes anyone wait."""
    capacity = settings.pool_size + settings.max_overflow
    if not settings.pool_fair or settings.pool_class != "QueuePool" or settings.max_overflow < 0 or capacity < 1:
        return None
    return FairGate(capacity, settings.pool_timeout)


def _database_error(exc: Exception, settings: Settings) -> tuple[Response, int]:
    from flask import current_app

    kind = errors.classify(exc)
    if settings.metrics:
        metrics.DB_ERRORS.labels(kind).inc()
    current_app.logger.warning("healthz %d error=%s: %s", settings.error_status, kind, errors.first_line(exc))
    return jsonify(status="error", error=kind), settings.error_status


def metrics_view() -> Response:
    """Prometheus text exposition, summed across gunicorn workers."""
    return Response(metrics.render(), mimetype=None, content_type=metrics.CONTENT_TYPE)


def start_timer() -> None:
    """before_request hook: when the request reached the app."""
    g.healthz_started = time.perf_counter()


def count_response(response: Response) -> Response:
    """after_request hook: count every response by endpoint and status, and time it."""
    started = g.get("healthz_started")
    seconds = None if started is None else time.perf_counter() - started
    metrics.count_response(request.endpoint or "unmatched", response.status_code, seconds)
    return response


def init_app(app: Flask, engine: Engine, settings: Settings) -> None:
    """Register the health endpoints and, when ``settings.metrics``, ``/metrics`` and the response counter."""
    app.register_blueprint(blueprint(engine, settings))
    if settings.metrics:
        app.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])
        app.before_request(start_timer)
        app.after_request(count_response)
