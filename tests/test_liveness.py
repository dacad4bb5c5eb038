"""The liveness listener (healthz.liveness): its answers, and under real gunicorn workers on a real
PostgreSQL whose table is locked, livez on its own listener answers at once while livez on the
request port waits behind requests stuck on the database."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from healthz import liveness
from healthz.config import Settings, SettingsError, parse_bind
from healthz.postgres import free_port


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_answers_livez_alone_and_closes_each_connection():
    ok = liveness.answer(b"GET /api/v1/livez/ HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = ok.partition(b"\r\n\r\n")
    assert status_of(ok) == 200 and body == liveness.BODY and b"Connection: close" in head
    assert liveness.answer(b"GET /api/v1/livez/?probe=1 HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200")
    assert liveness.answer(b"HEAD /api/v1/livez/ HTTP/1.1\r\n\r\n").endswith(b"\r\n\r\n")
    assert status_of(liveness.answer(b"POST /api/v1/livez/ HTTP/1.1\r\n\r\n")) == 405
    assert status_of(liveness.answer(b"GET /api/v1/healthz/ HTTP/1.1\r\n\r\n")) == 404
    assert status_of(liveness.answer(b"")) == 404


@pytest.mark.parametrize("raw", ["8001", "0.0.0.0", "0.0.0.0:0", "0.0.0.0:65536", "host name:80", ":80", "h:x"])
def test_a_bad_address_names_the_variable_and_what_is_accepted(raw):
    with pytest.raises(SettingsError) as caught:
        parse_bind("HEALTHZ_LIVENESS_BIND", raw)
    assert caught.value.variable == "HEALTHZ_LIVENESS_BIND" and "HOST:PORT" in caught.value.accepted
    with pytest.raises(SettingsError):
        Settings.from_env({"DATABASE_URL": "postgresql://u:p@h/d", "HEALTHZ_LIVENESS_BIND": raw})


def test_parses_ipv4_and_ipv6_addresses():
    assert parse_bind("V", "0.0.0.0:8001") == ("0.0.0.0", 8001)
    assert parse_bind("V", "[::1]:8001") == ("::1", 8001)
    assert Settings.from_env({"DATABASE_URL": "postgresql://u:p@h/d"}).liveness_bind is None


def test_two_listeners_share_one_port_and_both_answer():
    address = f"127.0.0.1:{free_port()}"
    first, second = liveness.start(address), liveness.start(address)
    try:
        for _ in range(4):
            assert get(f"http://{address}/api/v1/livez/") == 200
    finally:
        first.close()
        second.close()


def test_a_silent_client_does_not_keep_the_listener(monkeypatch):
    monkeypatch.setattr(liveness, "READ_TIMEOUT", 0.2)
    address = f"127.0.0.1:{free_port()}"
    listener = liveness.start(address)
    host, port = parse_bind("V", address)
    try:
        with socket.create_connection((host, port)):  # sends nothing
            assert get(f"http://{address}/api/v1/livez/", timeout=3) == 200
    finally:
        listener.close()


def get(url: str, timeout: float = 5.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def timed_get(url: str, timeout: float = 10.0) -> tuple[int, float]:
    began = time.monotonic()
    return get(url, timeout), time.monotonic() - began


@pytest.mark.parametrize("worker_class", ["gthread", "sync", "gevent", "eventlet"])
def test_livez_on_its_listener_answers_while_every_request_waits_on_a_locked_table(
    run_gunicorn, postgres, database, worker_class
):
    address = f"127.0.0.1:{free_port()}"
    server = run_gunicorn(
        worker_class,
        GUNICORN_THREADS=2,
        HEALTHZ_POOL_SIZE=2,
        HEALTHZ_MAX_OVERFLOW=0,
        HEALTHZ_LIVENESS_BIND=address,
    )
    assert "livez also on " + address in server.log_text()
    lock = postgres.connect(database)
    try:
        with lock.cursor() as cur:
            cur.execute("BEGIN; LOCK TABLE role IN ACCESS EXCLUSIVE MODE")
        # More requests than threads and connections, each waiting on the lock.
        stuck = [
            threading.Thread(target=get, args=(server.base_url + "/api/v1/healthz/", 10), daemon=True) for _ in range(8)
        ]
        for thread in stuck:
            thread.start()
        time.sleep(0.5)
        status, seconds = timed_get(f"http://{address}/api/v1/livez/", timeout=5)
        assert status == 200 and seconds < 1.0, (status, seconds)
        if worker_class in ("gthread", "sync"):  # a thread per request: livez on the request port waits
            waited = timed_get(server.base_url + "/api/v1/livez/", timeout=1.0)
            assert waited[0] == 0, waited
    finally:
        with lock.cursor() as cur:
            cur.execute("ROLLBACK")
        lock.close()
    for thread in stuck:
        thread.join(15)


def test_gunicorn_refuses_an_address_it_cannot_bind_before_it_binds(run_gunicorn):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(Exception) as caught:
            run_gunicorn("gthread", HEALTHZ_LIVENESS_BIND=address)
        assert f"HEALTHZ_LIVENESS_BIND={address} cannot be bound" in str(caught.value)
    finally:
        taken.close()
