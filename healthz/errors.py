"""What went wrong on a failed health check, as one word a client, a metric and a report share.

The client sees only the kind; the log gets the driver's first line of the message too
(libpq messages hold host and port, never the password).
"""

from __future__ import annotations

import sqlalchemy.exc

ADDRESS_UNAVAILABLE = "address_unavailable"
CONNECTION_REFUSED = "connection_refused"
TOO_MANY_CLIENTS = "too_many_clients"
POOL_TIMEOUT = "pool_timeout"
STATEMENT_TIMEOUT = "statement_timeout"
CONNECT_TIMEOUT = "connect_timeout"
CONNECTION_LOST = "connection_lost"
DATABASE_UNAVAILABLE = "database_unavailable"
AUTHENTICATION_FAILED = "authentication_failed"
OTHER = "other"

#: Every kind, in the order reports list them.
KINDS = (
    ADDRESS_UNAVAILABLE,
    CONNECTION_REFUSED,
    TOO_MANY_CLIENTS,
    POOL_TIMEOUT,
    STATEMENT_TIMEOUT,
    CONNECT_TIMEOUT,
    CONNECTION_LOST,
    DATABASE_UNAVAILABLE,
    AUTHENTICATION_FAILED,
    OTHER,
)

# SQLSTATE codes (PostgreSQL appendix A) for errors the server reports itself.
_BY_SQLSTATE = {
    "53300": TOO_MANY_CLIENTS,  # too_many_connections
    "57014": STATEMENT_TIMEOUT,  # query_canceled (statement_timeout, lock_timeout)
    "57P01": CONNECTION_LOST,  # admin_shutdown
    "57P02": CONNECTION_LOST,  # crash_shutdown
    "57P03": DATABASE_UNAVAILABLE,  # cannot_connect_now: starting up or shutting down
    "28P01": AUTHENTICATION_FAILED,  # invalid_password
    "28000": AUTHENTICATION_FAILED,  # invalid_authorization_specification (pg_hba.conf)
    "08006": CONNECTION_LOST,
    "08003": CONNECTION_LOST,
}

# libpq reports client-side failures as text only: strerror() and its own phrases.
_BY_TEXT = (
    ("cannot assign requested address", ADDRESS_UNAVAILABLE),
    ("connection refused", CONNECTION_REFUSED),
    ("too many clients", TOO_MANY_CLIENTS),
    ("remaining connection slots are reserved", TOO_MANY_CLIENTS),
    ("canceling statement due to statement timeout", STATEMENT_TIMEOUT),
    ("timeout expired", CONNECT_TIMEOUT),
    ("connection timed out", CONNECT_TIMEOUT),
    ("the database system is starting up", DATABASE_UNAVAILABLE),
    ("the database system is shutting down", DATABASE_UNAVAILABLE),
    ("the database system is in recovery mode", DATABASE_UNAVAILABLE),
    ("the database system is not yet accepting connections", DATABASE_UNAVAILABLE),
    ("password authentication failed", AUTHENTICATION_FAILED),
    ("no pg_hba.conf entry", AUTHENTICATION_FAILED),
    ("connection reset by peer", CONNECTION_LOST),
    ("server closed the connection unexpectedly", CONNECTION_LOST),
    ("terminating connection", CONNECTION_LOST),
    ("connection already closed", CONNECTION_LOST),
    ("ssl connection has been closed unexpectedly", CONNECTION_LOST),
    ("could not receive data from server", CONNECTION_LOST),
    ("could not send data to server", CONNECTION_LOST),
    ("no route to host", CONNECTION_REFUSED),
    ("network is unreachable", CONNECTION_REFUSED),
)


def classify(exc: BaseException) -> str:
    """Return the kind of a database failure: one of :data:`KINDS`.

    ``sqlalchemy.exc.TimeoutError`` (``QueuePool limit of size ... reached``) is
    ``pool_timeout``; driver errors are classified by SQLSTATE when the server sent one,
    else by libpq's message; anything unrecognised is ``other``.
    """
    if isinstance(exc, sqlalchemy.exc.TimeoutError):
        return POOL_TIMEOUT
    orig = getattr(exc, "orig", None) or exc
    code = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)  # psycopg2, psycopg 3
    if code in _BY_SQLSTATE:
        if code == "57014" and "lock timeout" in str(orig).lower():
            return STATEMENT_TIMEOUT
        return _BY_SQLSTATE[code]
    return classify_text(str(orig))


def kind_in_text(text: str) -> str | None:
    """The kind libpq's wording of an error gives (``could not connect to server: Cannot assign
    requested address`` is ``address_unavailable``), or None when the text holds no phrase known:
    for errors read from another service's log."""
    lowered = text.lower()
    return next((kind for phrase, kind in _BY_TEXT if phrase in lowered), None)


def classify_text(text: str) -> str:
    """:func:`kind_in_text`, ``other`` when no phrase is known."""
    return kind_in_text(text) or OTHER


def first_line(exc: BaseException) -> str:
    """The first non-empty line of the driver's message, without SQLAlchemy's SQL and URL
    addenda, for a one-line log entry."""
    orig = getattr(exc, "orig", None) or exc
    for line in str(orig).splitlines():
        if line.strip():
            return line.strip()
    return type(orig).__name__
