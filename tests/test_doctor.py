"""The doctor: its rules on observations written by hand, and its command on a real PostgreSQL with
real connections held, churned and refused."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import psycopg2
import pytest
from click.testing import CliRunner

from healthz import sockets
from healthz.cli import main
from healthz.doctor import CHURN, OVERRUN, UNREACHABLE, Observation, diagnose, render
from healthz.postgres import PostgreSQL, free_port
from healthz.sockets import OpenedCounter


def observation(**changes) -> Observation:
    values = dict(
        database="postgresql://healthz:***@db/healthz",
        transport="tcp",
        port_range=(40000, 40999),
        tcp_tw_reuse=2,
        window=10.0,
        opened=0,
        sockets_by_state={"ESTABLISHED": 20},
        sessions_opened=0,
        max_connections=100,
        reserved_connections=3,
        backends=[{"application_name": "healthz", "client_addr": "198.18.0.2", "count": 20}],
    )
    return Observation(**{**values, **changes})


def test_a_pool_that_keeps_its_connections_is_healthy():
    result = diagnose(observation())
    assert result.problems == () and result.healthy and result.changes == []
    # A few reconnections (a restart, pool_recycle) are not churn.
    assert diagnose(observation(opened=4, sockets_by_state={"ESTABLISHED": 1})).healthy


def test_churn_worked_by_hand():
    # 500 opened in 10 s = 50/s; 50 x 60 s = 3,000 in TIME_WAIT > 1,000 ports: exhausted.
    # 400 ports in use now, so (1,000 - 400) / 50 = 12 s left.
    obs = observation(opened=500, sockets_by_state={"ESTABLISHED": 100, "TIME_WAIT": 300})
    result = diagnose(obs)
    assert result.problems == (CHURN,)
    assert result.opened_per_second == 50 and result.time_wait_share == 3.0
    assert result.seconds_to_exhaustion == 12
    assert any("EADDRNOTAVAIL" in f for f in result.findings)
    assert any("HEALTHZ_MAX_OVERFLOW=0" in c for c in result.changes)
    assert any("now 40000-40999" in c for c in result.changes)


def test_churn_toward_a_loopback_pooler_with_tw_reuse_does_not_run_out():
    obs = observation(opened=500, sockets_by_state={"ESTABLISHED": 100, "TIME_WAIT": 300}, loopback=True)
    result = diagnose(obs)
    assert result.problems == (CHURN,) and result.seconds_to_exhaustion is None
    assert any(
        "tcp_tw_reuse=2 lets connect() reuse those ports toward this loopback address" in f for f in result.findings
    )
    # tcp_tw_reuse=1 reuses toward any address; 0 nowhere.
    assert diagnose(observation(opened=500, tcp_tw_reuse=1)).seconds_to_exhaustion is None
    assert diagnose(observation(opened=500, tcp_tw_reuse=0, loopback=True)).seconds_to_exhaustion is not None


def test_churn_below_the_port_range_has_no_exhaustion_time():
    # 10/s x 60 = 600 > 20 held: churn, but 600 < 1,000 ports.
    result = diagnose(observation(opened=100))
    assert (
        result.problems == (CHURN,)
        and result.seconds_to_exhaustion is None
        and result.time_wait_share == pytest.approx(0.6)
    )


def test_a_host_out_of_ports_is_churn_even_when_the_database_is_unreachable():
    # The doctor's own connect() failed: only the host's figures remain; the range is full.
    obs = observation(
        unreachable="connection to server failed: Cannot assign requested address",
        opened=16,
        sockets_by_state={"TIME_WAIT": 990, "ESTABLISHED": 10},
        sessions_opened=None,
        max_connections=None,
        reserved_connections=None,
        backends=[],
    )
    result = diagnose(obs)
    # 1.6/s is all that TIME_WAIT's expiry lets through now; the range is exhausted already.
    assert result.problems == (CHURN,) and result.seconds_to_exhaustion == 0
    assert any("no ephemeral port left" in f and "1,000 sockets of 1,000 ports" in f for f in result.findings)
    assert any("not reachable" in f for f in result.findings)


def test_a_database_with_no_slot_for_the_doctor_is_an_overrun():
    obs = observation(
        unreachable="FATAL: sorry, too many clients already (for 3 s)",
        refused="FATAL: sorry, too many clients already (for 3 s)",
        sessions_opened=None,
        max_connections=None,
        reserved_connections=None,
        backends=[],
    )
    result = diagnose(obs)
    assert result.problems == (OVERRUN,) and result.seconds_to_exhaustion is None
    assert any("refused the doctor's own connection" in f for f in result.findings)
    assert any("healthz plan" in c for c in result.changes)


def test_the_backends_peak_of_the_window_counts():
    assert diagnose(observation(backends_peak=88)).problems == (OVERRUN,)  # the breakdown at the end says 20


def test_a_host_holding_most_of_its_ports_open_is_an_overrun_not_churn():
    # A connection per greenlet: 950 held of 1,000 ports, hardly any opened in the window.
    held = diagnose(observation(opened=2, sockets_by_state={"ESTABLISHED": 950, "TIME_WAIT": 3}))
    assert held.problems == (OVERRUN,) and any(
        "holds 950 connections to the database open, 95%" in f for f in held.findings
    )
    # Out of ports with most of them held open: the same, even when the doctor's connect() failed.
    full = observation(
        unreachable="Cannot assign requested address",
        opened=0,
        sockets_by_state={"ESTABLISHED": 700, "TIME_WAIT": 300},
        sessions_opened=None,
        max_connections=None,
        reserved_connections=None,
        backends=[],
    )
    assert diagnose(full).problems == (OVERRUN,)
    # Out of ports with most of them in TIME_WAIT: churn.
    assert diagnose(
        observation(**{**full.__dict__, "sockets_by_state": {"ESTABLISHED": 100, "TIME_WAIT": 900}})
    ).problems == (CHURN,)


def test_over_a_unix_socket_the_session_rate_decides():
    obs = observation(transport="unix", port_range=None, opened=None, sockets_by_state={}, sessions_opened=300)
    result = diagnose(obs)
    assert result.problems == (CHURN,) and result.time_wait_share is None and result.opened_per_second == 30
    assert diagnose(observation(transport="unix", opened=None, sockets_by_state={}, sessions_opened=3)).healthy


def test_budget_overrun_and_both_problems():
    # 88 backends >= 0.9 x 97.
    full = [{"application_name": "healthz", "client_addr": "198.18.0.2", "count": 88}]
    assert diagnose(observation(backends=full)).problems == (OVERRUN,)
    assert diagnose(observation(backends=full, opened=500)).problems == (CHURN, OVERRUN)
    assert diagnose(observation(backends=[{**full[0], "count": 87}])).healthy


def test_opened_counter_counts_live_sockets_and_ones_seen_only_closed():
    def s(port, state, inode):
        return sockets.Socket("198.18.0.2", port, "198.18.0.1", 5432, state, inode)

    counter = OpenedCounter([s(1, "ESTABLISHED", 11), s(2, "TIME_WAIT", 0)])
    counter.add([s(1, "ESTABLISHED", 11), s(3, "ESTABLISHED", 33), s(2, "TIME_WAIT", 0)])  # 3 is new
    # 4 opened and closed; 2 reused; 1, open at the start, closed: not opened in the window.
    counter.add([s(3, "TIME_WAIT", 0), s(4, "TIME_WAIT", 0), s(2, "ESTABLISHED", 22), s(1, "TIME_WAIT", 0)])
    assert counter.opened == 3


def _doctor(url: str, sample: str = "2") -> tuple[int, str]:
    result = CliRunner().invoke(main, ["doctor", "--database-url", url, "--sample", sample])
    return result.exit_code, result.output


@pytest.mark.serial
def test_doctor_calls_held_connections_healthy(postgres, database_url):
    held = [psycopg2.connect(database_url.replace("+psycopg2", ""), application_name="held") for _ in range(5)]
    try:
        code, output = _doctor(database_url)
    finally:
        for conn in held:
            conn.close()
    assert code == 0, output
    assert "Diagnosis: healthy" in output and "ESTABLISHED 5" in output
    assert "5  held  127.0.0.1" in output
    assert postgres.password not in output


@pytest.mark.serial
def test_doctor_finds_churn_and_counts_what_postgresql_counts(database_url):
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            psycopg2.connect(database_url.replace("+psycopg2", "")).close()

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        result = CliRunner().invoke(main, ["doctor", "--database-url", database_url, "--sample", "2", "--json"])
    finally:
        stop.set()
        thread.join()
    assert result.exit_code == 1, result.output
    import json

    data = json.loads(result.output)
    opened, sessions = data["observation"]["opened"], data["observation"]["sessions_opened"]
    assert data["diagnosis"]["problems"] == [CHURN.value] and opened >= 20
    # Two independent counts of one thing: the host's sockets and PostgreSQL's session counter
    # (which reports up to a second late, at either end of the window).
    assert abs(opened - sessions) <= 0.25 * opened + 5, (opened, sessions)


@pytest.mark.serial
def test_doctor_finds_a_budget_overrun():
    with PostgreSQL(max_connections=20) as pg, contextlib.ExitStack() as stack:  # 20 - 3 reserved = 17; 16 >= 0.9 x 17
        for _ in range(16):
            stack.callback(psycopg2.connect(pg.dsn(), application_name="hog").close)
        code, output = _doctor(pg.url, "1")
        assert code == 1, output
        assert "Diagnosis: budget overrun" in output and "16 of 17" in output
        # The seventeenth takes the last slot: the doctor is refused, retries for 3 s, and says so.
        stack.callback(psycopg2.connect(pg.dsn(), application_name="hog").close)
        code, refused = _doctor(pg.url, "1")
    assert code == 1, refused
    assert "Diagnosis: budget overrun" in refused and "refused the doctor's own connection" in refused
    assert pg.password not in output + refused


def test_doctor_exits_2_when_it_cannot_inspect():
    url = f"postgresql://healthz:s3cret-pw@127.0.0.1:{free_port()}/healthz"
    code, output = _doctor(url, "1")
    assert code == 2 and "cannot connect to postgresql://healthz:***@127.0.0.1" in output
    assert "s3cret-pw" not in output
    code, output = _doctor("postgresql://healthz:s3cret-pw@127.0.0.1:notaport/healthz", "1")
    assert code == 2 and "s3cret-pw" not in output
    result = CliRunner().invoke(main, ["doctor"], env={"DATABASE_URL": ""})
    assert result.exit_code == 2 and "no database" in result.output


@pytest.mark.parametrize("opened, window", [(107, 10.0), (49, 10.0), (0, 5.0)])
def test_a_range_full_of_time_wait_is_exhausted_now_whatever_the_rate(opened, window):
    # A Django host from the issue: its 1,000 ports all in TIME_WAIT while 92% of requests failed. Connections
    # that fail to open are not counted as opened, so the rate in the window looks calm.
    obs = observation(
        opened=opened, window=window, sockets_by_state={"TIME_WAIT": 960, "ESTABLISHED": 12}, tcp_tw_reuse=0
    )
    result = diagnose(obs)
    assert result.exhausted and result.seconds_to_exhaustion == 0
    assert result.problems == (CHURN,)
    assert result.findings[1].startswith("exhausted now: 972 of 1,000")
    assert "(exhausted now)" in render(obs, result)


def test_a_range_at_risk_is_not_exhausted_and_reuse_is_not_exhaustion():
    below = diagnose(observation(opened=500, sockets_by_state={"TIME_WAIT": 500, "ESTABLISHED": 10}, tcp_tw_reuse=0))
    assert not below.exhausted and below.seconds_to_exhaustion and below.seconds_to_exhaustion > 0
    # tcp_tw_reuse=1 lets connect() take a TIME_WAIT port: full of TIME_WAIT is not out of ports.
    reused = diagnose(observation(opened=500, sockets_by_state={"TIME_WAIT": 990}, tcp_tw_reuse=1))
    assert not reused.exhausted and reused.problems == (CHURN,)
    # Held open, it is the budget, not churn, that is spent.
    held = diagnose(observation(opened=0, sockets_by_state={"ESTABLISHED": 950}, tcp_tw_reuse=0))
    assert held.exhausted and held.problems == (OVERRUN,)


def test_an_unreachable_address_with_ports_to_spare_is_not_churn():
    """EADDRNOTAVAIL from connecting to ::1 where IPv6 is disabled: no port is short, so neither churn
    nor exhaustion; the doctor names the address and the change."""
    obs = observation(
        unreachable='connection to server at "::1", port 5432 failed: Cannot assign requested address',
        unroutable={"::1": "Cannot assign requested address"},
        opened=0,
        sockets_by_state={},
        sessions_opened=None,
        max_connections=None,
        reserved_connections=None,
        backends=[],
    )
    result = diagnose(obs)
    assert result.problems == (UNREACHABLE,) and not result.exhausted and result.seconds_to_exhaustion is None
    assert result.findings[0].startswith("not port exhaustion: this host cannot reach ::1")
    assert result.changes[0].startswith("use 127.0.0.1 or enable IPv6")
    # The same error with the range full is exhaustion, whatever the address.
    full = diagnose(observation(**{**obs.__dict__, "sockets_by_state": {"TIME_WAIT": 1000}}))
    assert UNREACHABLE not in full.problems and full.exhausted


needs_netns = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="a namespace with IPv6 disabled needs root and iproute2"
)


@needs_netns
def test_doctor_tells_an_ipv6_loopback_it_cannot_reach_from_port_exhaustion(tmp_path):
    """In a namespace whose loopback has IPv6 disabled, PostgreSQL listening on 127.0.0.1: ``::1``
    and a ``localhost`` that resolves to ::1 alone exit 3 with the address named; 127.0.0.1 is healthy."""
    namespace = f"healthz-t{os.getpid()}-v6"
    hosts = Path("/etc/netns") / namespace / "hosts"
    prefix = ["ip", "netns", "exec", namespace]
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        subprocess.run([*prefix, "ip", "link", "set", "lo", "up"], check=True)
        for key in ("all", "default", "lo"):
            subprocess.run([*prefix, "sysctl", "-q", "-w", f"net.ipv6.conf.{key}.disable_ipv6=1"], check=True)
        # ip netns exec mounts /etc/netns/NAME/hosts over /etc/hosts: localhost is ::1 alone there.
        hosts.parent.mkdir(parents=True)
        hosts.write_text("::1 localhost\n")
        with PostgreSQL(host="127.0.0.1", command_prefix=prefix) as pg:
            healthz = str(Path(sys.executable).parent / "healthz")
            outputs = {}
            for host in ("[::1]", "localhost", "127.0.0.1"):
                url = pg.url.replace("127.0.0.1", host)
                done = subprocess.run(
                    [*prefix, healthz, "doctor", "--database-url", url, "--sample", "1"],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                outputs[host] = (done.returncode, done.stdout + done.stderr)
                assert pg.password not in done.stdout + done.stderr
    finally:
        subprocess.run(["ip", "netns", "del", namespace])
        if hosts.exists():
            hosts.unlink()
            hosts.parent.rmdir()
    for host in ("[::1]", "localhost"):
        code, output = outputs[host]
        assert code == 3, output
        assert "Diagnosis: address unreachable" in output and "this host cannot reach ::1" in output, output
        assert "use 127.0.0.1 or enable IPv6" in output
    assert outputs["127.0.0.1"][0] == 0, outputs["127.0.0.1"][1]
