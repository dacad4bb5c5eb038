"""The HTTP contract: ``/api/v1/healthz/`` (database), ``/api/v1/livez/`` (process) and ``/metrics``."""

from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, jsonify, request

from . import errors, metrics
from .db import get_engine
from .models import COUNT_ROLES

bp = Blueprint("healthz", __name__)

#: The status the report's view returns when the database call raises.
DB_ERROR_STATUS = 499


@bp.route("/api/v1/healthz/", methods=["GET", "HEAD"])
def healthz():
    """200 ``{"status": "ok"}`` when ``SELECT count(*) FROM role`` succeeds through the pool;
    499 ``{"status": "error", "error": KIND}`` when the database call raises, whatever it raised."""
    engine = get_engine()
    with_metrics = current_app.config["HEALTHZ_SETTINGS"].metrics
    try:
        started = time.perf_counter()
        with engine.connect() as conn:
            if with_metrics:
                metrics.CHECKOUT_WAIT.observe(time.perf_counter() - started)
            conn.execute(COUNT_ROLES).scalar_one()
    except Exception as exc:  # as the report's view: any failure of the database call is a 499
        kind = errors.classify(exc)
        if with_metrics:
            metrics.DB_ERRORS.labels(kind).inc()
        current_app.logger.warning("healthz %d error=%s: %s", DB_ERROR_STATUS, kind, errors.first_line(exc))
        return jsonify(status="error", error=kind), DB_ERROR_STATUS
    return jsonify(status="ok")


@bp.route("/api/v1/livez/", methods=["GET", "HEAD"])
def livez():
    """200 ``{"status": "ok"}`` with no database call: the process answers."""
    return jsonify(status="ok")


def metrics_view():
    """Prometheus text exposition, summed across gunicorn workers."""
    return Response(metrics.render(), mimetype=None, content_type=metrics.CONTENT_TYPE)


def count_response(response: Response) -> Response:
    """after_request hook: count every response by endpoint and status."""
    endpoint = request.endpoint or "unmatched"
    metrics.REQUESTS.labels(endpoint, str(response.status_code)).inc()
    return response
