"""Probes on real sockets, real processes and the real PostgreSQL, checked against independent reads."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time

import psycopg2
import pytest
from helpers import sessions as sessions_of
from helpers import wait_until

from healthz.lab import probes
from healthz.lab.figures import Sample


def test_tcp_states_sees_a_real_time_wait_socket():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        assert probes.tcp_states(os.getpid(), port)["ESTABLISHED"] == 1  # the client end: its remote port is ours
        client.close()  # the side that closes first keeps TIME_WAIT
        accepted.close()
        assert wait_until(lambda: probes.tcp_states(os.getpid(), port).get("TIME_WAIT", 0) >= 1, timeout=5)


def test_parse_stat_survives_odd_command_names():
    line = "1234 (a) b (c)) R 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 1 0 100 0 0"
    assert probes.parse_stat(line) == (250, 50, 7, 3)


def test_cpu_seconds_counts_a_busy_child_and_its_children():
    script = (
        "import subprocess, sys, time\np = subprocess.Popen([sys.executable, '-c', 'while True: pass'])\ntime.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        assert wait_until(lambda: (probes.cpu_seconds(parent.pid) or 0) > 0.5, timeout=15)
    finally:
        for child in probes.children(parent.pid):
            os.kill(child, 9)
        parent.kill()
        parent.wait()
    assert probes.cpu_seconds(parent.pid) is None
    assert probes.cpu_seconds(None) is None


def test_log_counts():
    log = (
        'healthz 499 error=address_unavailable: connection to server at "db", port 5432 failed: Cannot assign requested address\n'
        "healthz 499 error=pool_timeout: QueuePool limit of size 1 overflow 0 reached\n"
        "healthz 499 error=address_unavailable: could not connect to server: Cannot assign requested address\n"
    )
    assert probes.log_counts(log) == {
        "address_unavailable_lines": 2,
        "error_kinds": {"address_unavailable": 2, "pool_timeout": 1},
    }
    assert probes.log_counts("") == {"address_unavailable_lines": 0, "error_kinds": {}}


def test_postgres_counters_agree_with_an_independent_read(postgres, database):
    counters = probes.PostgresCounters(postgres.local_dsn("postgres"), database)
    try:
        before = counters.settled_sessions()
        assert before == sessions_of(postgres, database)
        held = [psycopg2.connect(postgres.url_for(database)) for _ in range(3)]
        assert counters.backends() == 3
        # One of them inside a transaction, as a request holds its connection: in use; the others idle.
        held[0].cursor().execute("SELECT 1")
        assert counters.backends_in_use() == (3, 1)
        for conn in held:
            conn.close()
        assert counters.wait_backends(0) == 0
        assert counters.settled_sessions() - before == 3
        assert counters.settled_sessions() == sessions_of(postgres, database)
    finally:
        counters.close()


def test_sampler_samples_five_times_a_second(postgres, database):
    counters = probes.PostgresCounters(postgres.local_dsn("postgres"), database)
    sampler = probes.Sampler(
        counters, db_port=postgres.port, netns_pid=os.getpid, cpu_pids={"self": os.getpid}, interval=0.2
    )
    held = psycopg2.connect(postgres.url_for(database))
    try:
        sampler.start()
        time.sleep(1.1)
        samples = sampler.stop()
    finally:
        held.close()
        counters.close()
    assert 5 <= len(samples) <= 8
    assert all(s.backends == 1 for s in samples)
    assert all(s.established >= 1 for s in samples)  # our own connection, seen in /proc
    times = [s.t for s in samples]
    assert times == sorted(times) and times[-1] >= 1.0
    assert all(s.cpu["self"] is not None for s in samples)
    assert all(Sample.from_dict(json.loads(json.dumps(s.to_dict()))) == s for s in samples)


def test_sampler_keeps_going_when_the_database_goes_away_and_reconnects_when_back(postgres, database):
    counters = probes.PostgresCounters(postgres.local_dsn("postgres"), database)
    real_dsn = counters.dsn
    counters.dsn = postgres.local_dsn("postgres", port=1)  # nothing listens there: the server is gone
    counters.conn.close()  # as if the server had dropped it
    sampler = probes.Sampler(counters, db_port=postgres.port, netns_pid=lambda: None, cpu_pids={}, interval=0.05)
    row = sampler.sample()
    assert row.sessions is None and row.backends is None and row.time_wait is None
    counters.dsn = real_dsn  # the server is back
    row = sampler.sample()
    assert row.sessions is not None and row.backends == 0
    counters.close()


@pytest.mark.parametrize("values, peak, mean", [([1, None, 3], 3, 2.0), ([None], None, None), ([], None, None)])
def test_peak_and_mean_skip_missing_values(values, peak, mean):
    assert probes.peak(values) == peak and probes.mean(values) == mean


def test_worker_restarts_are_workers_booted_beyond_the_first():
    log = "[INFO] Booting worker with pid: 11\n[INFO] Booting worker with pid: 12\n[ERROR] Worker (pid:11) was sent SIGKILL!\n[INFO] Booting worker with pid: 13\n"
    assert probes.worker_restarts(log, workers=2) == 1
    assert probes.worker_restarts("", workers=2) == 0


def test_measured_observation_takes_the_doctors_window_from_the_samples():
    samples = [
        Sample(t=float(i), at=100.0 + i, sessions=10 * i, backends=5 + i, established=4, time_wait=7 * i)
        for i in range(10)
    ]
    obs = probes.measured_observation(
        samples, 102.0, 105.0, port_range=(40000, 40999), max_connections=100, reserved_connections=3
    )
    # Samples at 102..105: sessions 20 -> 50 over 3 s, backends peak 10, TIME_WAIT 35 at the end.
    assert (obs.opened, obs.window, obs.sessions_opened) == (30, 3.0, 30)
    assert obs.sockets_by_state == {"ESTABLISHED": 4, "TIME_WAIT": 35} and obs.backends_total == 10
    logins = [dataclasses.replace(row, host_opened=100 * i) for i, row in enumerate(samples)]
    through = probes.measured_observation(
        logins, 102.0, 105.0, port_range=None, max_connections=100, reserved_connections=3, opened_key="host_opened"
    )
    assert (through.opened, through.sessions_opened) == (300, 30)
    unix = probes.measured_observation(
        logins, 102.0, 105.0, port_range=None, max_connections=100, reserved_connections=3, transport="unix"
    )
    assert (unix.opened, unix.sessions_opened, unix.transport) == (None, 30, "unix")
    assert obs.unreachable is None
    full = probes.measured_observation(
        samples, 102.0, 105.0, port_range=(40000, 40038), max_connections=100, reserved_connections=3
    )
    assert full.unreachable == "the port range was full (39 sockets of 39 ports)"  # 4 ESTABLISHED + 35 TIME_WAIT
    assert (
        probes.measured_observation(samples, 102.0, 102.5, port_range=None, max_connections=100, reserved_connections=3)
        is None
    )


def test_doctor_probe_runs_the_real_command(postgres, database_url, tmp_path):
    probe = probes.DoctorProbe(database_url, 1, tmp_path / "doctor.log").start()
    data = probe.result(timeout=60)
    assert data["exit"] == 0 and data["diagnosis"]["status"] == "healthy", data
    assert postgres.password not in probe.command and postgres.password not in (tmp_path / "doctor.log").read_text()


def test_line_counter_counts_new_complete_lines_only(tmp_path):
    log = tmp_path / "postgresql.log"
    log.write_bytes(b"LOG:  connection received: host=198.18.0.2 port=1\n")
    counter = probes.LineCounter(log, probes.attempts_pattern("198.18.0.2"), from_end=True)
    assert counter() == 0, "what was logged before it was made is not counted"
    with open(log, "ab") as fh:
        fh.write(b"LOG:  connection received: host=198.18.0.2 port=2\n")
        fh.write(b"LOG:  connection received: host=198.18.0.20 port=3\n")  # another host
        fh.write(b"LOG:  connection received: host=198.18.0.2 port=4")  # still being written
    assert counter() == 1
    with open(log, "ab") as fh:
        fh.write(b"\n")
    assert counter() == 2
