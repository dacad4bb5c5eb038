"""The idle clients' program: where checks start failing, its steps' arguments, and one step against
a real listener that never answers (every check fails, every holder stays open) and one that does."""

from __future__ import annotations

import socket
import threading

import pytest

from healthz.lab import idle_clients
from healthz.lab.idle_clients import IdleStep
from healthz.lab.idle_fault import IdleClients, served_at_once


def step(route="direct", kind="slow-header", clients=16, failed=0) -> IdleStep:
    return IdleStep(route, kind, clients, clients, clients, 20, failed, 5.0)


def test_the_limit_is_the_fewest_clients_at_which_a_check_failed_per_route_and_kind():
    steps = [step(clients=8), step(clients=16, failed=3), step(clients=32, failed=20), step("nginx", clients=32)]
    assert idle_clients.limit(steps, "direct", "slow-header") == 16
    assert idle_clients.limit(steps, "nginx", "slow-header") is None
    assert idle_clients.limit(steps, "direct", "idle") is None


def test_steps_are_shares_of_what_the_workers_serve_at_once_and_never_zero():
    assert IdleClients().steps(16) == [8, 16, 32]
    assert IdleClients(shares=(0.01, 1.0)).steps(2) == [1, 2]
    fault = IdleClients(shares=(1.0,), kinds=("slow-header",), routes=("direct",))
    assert fault.hold < IdleClients().hold  # the run's load is as long as its steps


@pytest.mark.parametrize(
    ("args", "wrong"),
    [
        (["--route", "http://127.0.0.1:1", "--steps", "8"], "NAME=http"),
        (["--route", "d=http://127.0.0.1:1", "--steps", "8,0"], "positive whole numbers"),
        (["--route", "d=http://127.0.0.1:1", "--steps", "8", "--kinds", "sleepy"], "idle, slow-header"),
    ],
)
def test_bad_arguments_are_one_line_naming_what_is_accepted(args, wrong, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        idle_clients.main([*args, "--out", str(tmp_path / "out.json")])
    assert exit_.value.code == 2
    assert wrong in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "out.json").exists()


@pytest.fixture
def listener():
    """A TCP listener that accepts and never answers (its backlog holds what it has not accepted)."""
    server = socket.create_server(("127.0.0.1", 0), backlog=64)
    accepted = []

    def accept():
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:  # closed
                return

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()
    server.close()
    for conn in accepted:
        conn.close()


def test_a_step_against_a_service_that_never_answers_fails_every_check_and_holds_every_client(listener, monkeypatch):
    monkeypatch.setattr(idle_clients, "CHECK_TIMEOUT", 0.3)
    monkeypatch.setattr(idle_clients, "SETTLE", 0.05)
    s = idle_clients.step("direct", "slow-header", 5, listener, "/", None, "/")
    assert (s.held, s.open, s.checks, s.failed, s.worst_ms) == (5, 5, idle_clients.CHECKS, idle_clients.CHECKS, None)
    assert s.livez_checks == 0


def test_a_check_counts_a_2xx_and_not_another_status(tmp_path):
    answers = iter([b"HTTP/1.1 200 OK\r\n\r\n", b"HTTP/1.1 503 Service Unavailable\r\n\r\n"])
    server = socket.create_server(("127.0.0.1", 0))

    def serve():
        for answer in answers:
            conn, _ = server.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    address = server.getsockname()
    assert idle_clients.check(address, "/", timeout=2) is not None
    assert idle_clients.check(address, "/", timeout=2) is None
    server.close()


def test_idle_clients_ask_once_for_the_idle_path_and_the_checks_for_the_health_path(monkeypatch):
    # A thousand idle clients asking for the health path at once are a crowd on the database, not idle
    # clients (NullPool answered too_many_clients under it): they ask for what needs no database.
    monkeypatch.setattr(idle_clients, "SETTLE", 0.05)
    asked: list[bytes] = []
    conns: list[socket.socket] = []
    server = socket.create_server(("127.0.0.1", 0), backlog=64)

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conns.append(conn)
            asked.append(conn.recv(4096).split(b"\r\n", 1)[0])
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    s = idle_clients.step("direct", "idle", 3, server.getsockname(), "/health", None, "/", idle_path="/livez")
    server.shutdown(socket.SHUT_RDWR)  # wakes the accept (close alone does not)
    thread.join(5)
    server.close()
    for conn in conns:
        conn.close()
    assert s.failed == 0 and s.held == 3
    assert asked.count(b"GET /livez HTTP/1.1") == 3 and asked.count(b"GET /health HTTP/1.1") == idle_clients.CHECKS


@pytest.mark.parametrize(
    ("worker_class", "threads", "served"),
    [
        ("gthread", 4, 4),
        ("gunicorn.workers.gthread.ThreadWorker", 8, 8),
        ("sync", 1, 1),
        ("sync", 3, 3),  # gunicorn runs sync with more than one thread as gthread
        ("gevent", 1, 1000),
        ("eventlet", 8, 1000),
    ],
)
def test_what_a_worker_serves_at_once_follows_gunicorns_own_rules(worker_class, threads, served):
    assert served_at_once(worker_class, threads, 1000) == served
