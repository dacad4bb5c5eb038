"""Error kinds: libpq's own messages classified (pure logic); the real errors are produced
against a real server in test_views.py."""

from __future__ import annotations

import psycopg2
import pytest
import sqlalchemy.exc

from healthz import errors


def wrapped(message: str) -> sqlalchemy.exc.OperationalError:
    """A psycopg2 error as SQLAlchemy hands it to the view."""
    return sqlalchemy.exc.OperationalError("SELECT count(*) FROM role", {}, psycopg2.OperationalError(message))


@pytest.mark.parametrize(
    "message, kind",
    [
        # The report's error, as libpq 14 and as libpq 12 word it.
        (
            'connection to server at "198.18.0.2", port 5432 failed: Cannot assign requested address\n'
            "\tIs the server running on that host and accepting TCP/IP connections?",
            errors.ADDRESS_UNAVAILABLE,
        ),
        (
            "could not connect to server: Cannot assign requested address\n\tIs the server running on host "
            '"db.example" and accepting\n\tTCP/IP connections on port 5432?',
            errors.ADDRESS_UNAVAILABLE,
        ),
        ('connection to server at "127.0.0.1", port 1 failed: Connection refused', errors.CONNECTION_REFUSED),
        ("FATAL:  sorry, too many clients already", errors.TOO_MANY_CLIENTS),
        (
            "FATAL:  remaining connection slots are reserved for roles with the SUPERUSER attribute",
            errors.TOO_MANY_CLIENTS,
        ),
        ('connection to server at "198.18.0.2", port 5432 failed: timeout expired', errors.CONNECT_TIMEOUT),
        ("FATAL:  the database system is starting up", errors.DATABASE_UNAVAILABLE),
        ("FATAL:  the database system is shutting down", errors.DATABASE_UNAVAILABLE),
        (
            "server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally",
            errors.CONNECTION_LOST,
        ),
        ('FATAL:  password authentication failed for user "healthz"', errors.AUTHENTICATION_FAILED),
        (
            'FATAL:  no pg_hba.conf entry for host "198.18.0.2", user "healthz", database "healthz", no encryption',
            errors.AUTHENTICATION_FAILED,
        ),
        (
            "FATAL:  the database system is not yet accepting connections\nDETAIL:  Consistent recovery state has not been yet reached.",
            errors.DATABASE_UNAVAILABLE,
        ),
        ("could not receive data from server: Connection reset by peer", errors.CONNECTION_LOST),
        ("Connection reset by peer", errors.CONNECTION_LOST),
    ],
)
def test_libpq_messages(message, kind):
    assert errors.classify(wrapped(message)) == kind
    assert errors.classify(psycopg2.OperationalError(message)) == kind


def test_queuepool_limit_is_pool_timeout():
    exc = sqlalchemy.exc.TimeoutError(
        "QueuePool limit of size 1 overflow 0 reached, connection timed out, timeout 0.50"
    )
    assert errors.classify(exc) == errors.POOL_TIMEOUT


def test_unrelated_exception_is_other():
    assert errors.classify(RuntimeError("boom")) == errors.OTHER


def test_first_line_drops_sqlalchemys_addenda():
    exc = wrapped("FATAL:  sorry, too many clients already\n")
    assert errors.first_line(exc) == "FATAL:  sorry, too many clients already"
    assert errors.first_line(psycopg2.OperationalError("")) == "OperationalError"


def test_kinds_are_unique_words():
    assert len(set(errors.KINDS)) == len(errors.KINDS)
    assert all(kind.replace("_", "").isalpha() and kind.islower() for kind in errors.KINDS)
