"""The HTTP contract on a real PostgreSQL: 200 when the count works, 499 with the cause's kind
when the database call raises, 404/405 as Flask does."""

from __future__ import annotations

import logging
import time

import pytest

from healthz import Settings, create_app, db
from healthz.postgres import PostgreSQL

HEALTHZ = "/api/v1/healthz/"


def test_ok(client):
    response = client.get(HEALTHZ)
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
    assert response.mimetype == "application/json"


def test_head(client):
    response = client.head(HEALTHZ)
    assert response.status_code == 200
    assert response.data == b""


@pytest.mark.parametrize("method", ["post", "put", "delete", "patch"])
def test_other_methods_are_405(client, method):
    assert getattr(client, method)(HEALTHZ).status_code == 405


@pytest.mark.parametrize("path", ["/", "/api/v1/healthz/extra", "/api/v2/healthz/", "/metricsx"])
def test_other_paths_are_404(client, path):
    assert client.get(path).status_code == 404


def test_livez_needs_no_database(postgres):
    app = create_app({"database_url": postgres.url_for("no_such_database")})
    client = app.test_client()
    assert client.get("/api/v1/livez/").get_json() == {"status": "ok"}
    assert client.get(HEALTHZ).status_code == 499


@pytest.fixture
def own_postgres():
    """A server of the test's own, to stop or fill up without disturbing the others."""
    with PostgreSQL(max_connections=8) as pg:
        db.seed(Settings.from_mapping({"database_url": pg.url}), 3)
        yield pg


def _errors_logged(caplog, kind):
    return [r for r in caplog.records if r.name == "healthz" and f"error={kind}" in r.getMessage()]


def test_database_stopped_is_499_connection_refused_then_200_when_back(own_postgres, caplog):
    app = create_app({"database_url": own_postgres.url, "pool_size": 2, "max_overflow": 0})
    client = app.test_client()
    assert client.get(HEALTHZ).status_code == 200

    own_postgres.stop("fast")
    caplog.set_level(logging.WARNING, logger="healthz")
    responses = [client.get(HEALTHZ) for _ in range(3)]
    kinds = [r.get_json()["error"] for r in responses]
    assert [r.status_code for r in responses] == [499] * 3
    # The pooled connection dies with the server; the next checkouts find nobody listening.
    assert kinds[0] in ("connection_lost", "connection_refused")
    assert kinds[1:] == ["connection_refused", "connection_refused"]
    assert len(_errors_logged(caplog, "connection_refused")) == 2
    assert all(r.get_json() == {"status": "error", "error": k} for r, k in zip(responses, kinds))

    own_postgres.start()
    assert client.get(HEALTHZ).status_code == 200
    app.extensions["healthz.engine"].dispose()


def test_no_free_slot_is_499_too_many_clients(own_postgres):
    # max_connections 8, 3 of them reserved for superusers: the app role gets 5.
    held = [own_postgres.connect("healthz", "healthz") for _ in range(5)]
    try:
        client = create_app({"database_url": own_postgres.url, "pool_class": "NullPool"}).test_client()
        response = client.get(HEALTHZ)
        assert response.status_code == 499
        assert response.get_json()["error"] == "too_many_clients"
    finally:
        for conn in held:
            conn.close()
    assert client.get(HEALTHZ).status_code == 200


def test_locked_table_is_499_statement_timeout_within_the_timeout(make_app, postgres, database):
    client = make_app(statement_timeout=200).test_client()
    assert client.get(HEALTHZ).status_code == 200
    with postgres.connect(database, "healthz") as locker:
        locker.autocommit = False
        locker.cursor().execute("LOCK TABLE role IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        response = client.get(HEALTHZ)
        elapsed = time.monotonic() - started
        locker.rollback()
    assert response.status_code == 499
    assert response.get_json()["error"] == "statement_timeout"
    assert elapsed < 5


def test_exhausted_pool_is_499_pool_timeout_bounded_by_pool_timeout(make_app):
    app = make_app(pool_size=1, max_overflow=0, pool_timeout=0.3)
    client = app.test_client()
    engine = app.extensions["healthz.engine"]
    with engine.connect():
        started = time.monotonic()
        response = client.get(HEALTHZ)
        elapsed = time.monotonic() - started
    assert response.status_code == 499
    assert response.get_json()["error"] == "pool_timeout"
    assert 0.25 < elapsed < 5
    assert client.get(HEALTHZ).status_code == 200


def test_missing_table_is_499_other(postgres, database):
    with postgres.connect(database, "healthz") as conn:
        conn.cursor().execute("DROP TABLE role")
    client = create_app({"database_url": postgres.url_for(database), "pool_class": "NullPool"}).test_client()
    response = client.get(HEALTHZ)
    assert response.status_code == 499
    assert response.get_json() == {"status": "error", "error": "other"}


def test_error_status_is_the_setting(postgres, database, caplog):
    caplog.set_level(logging.WARNING, logger="healthz")
    with postgres.connect(database, "healthz") as conn:
        conn.cursor().execute("DROP TABLE role")
    client = create_app(
        {"database_url": postgres.url_for(database), "pool_class": "NullPool", "error_status": 503}
    ).test_client()
    response = client.get(HEALTHZ)
    assert (response.status_code, response.get_json()) == (503, {"status": "error", "error": "other"})
    assert "healthz 503 error=other" in caplog.text


def test_error_body_and_log_hold_no_password(own_postgres, caplog):
    caplog.set_level(logging.WARNING, logger="healthz")
    wrong = own_postgres.url.replace(own_postgres.password, "wrong-" + own_postgres.password)
    client = create_app({"database_url": wrong, "pool_class": "NullPool"}).test_client()
    response = client.get(HEALTHZ)
    assert response.status_code == 499
    assert response.get_json() == {"status": "error", "error": "authentication_failed"}
    assert own_postgres.password not in response.get_data(as_text=True)
    assert own_postgres.password not in caplog.text
    assert "password authentication failed" in caplog.text
