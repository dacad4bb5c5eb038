"""locust, the lab's load generator: the locustfile's switches on real gunicorn and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from helpers import metric, settled_sessions

from healthz import locustfiles
from healthz.lab import load
from healthz.postgres import free_port

LOCUSTFILES = sorted(p for p in locustfiles.DIRECTORY.glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("locustfile", LOCUSTFILES, ids=lambda p: p.name)
def test_every_locustfile_loads(locustfile, tmp_path):
    files = ",".join(sorted({str(locustfiles.HEALTHCHECK), str(locustfile)}))
    result = subprocess.run(
        [sys.executable, "-m", "locust", "-f", files, "--list"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "HealthzUser" in result.stdout


def _locust(
    tmp_path,
    base_url,
    users,
    *,
    connection="keep-alive",
    max_requests=0,
    run_time=60,
    name="locust",
    rate=0.0,
    targets=(),
    workers=0,
    timeline=None,
):
    port = free_port() if workers else 0
    command = load.locust_command(
        base_url,
        users,
        run_time,
        connection=connection,
        max_requests=max_requests,
        csv_prefix=tmp_path / name,
        html=tmp_path / f"{name}.html",
        rate=rate,
        targets=targets,
        workers=workers,
        master_port=port,
        timeline=timeline,
    )
    began = time.monotonic()
    worker = load.worker_command("127.0.0.1", port)
    runner = load.Locust(command, tmp_path / f"{name}.log", workers=[(worker, [])] * workers).start()
    runner.wait(run_time + 30)
    return load.read_summary(tmp_path / name), time.monotonic() - began


def _answered(base_url: str) -> int:
    """Health checks the service has answered 200 so far, from its ``/metrics``."""
    try:
        with urllib.request.urlopen(base_url + "/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return 0
    return int(metric(text, "healthz_requests_total", '{endpoint="healthz.healthz",status="200"}') or 0)


def _locked_for_a_second(postgres, database, base_url):
    """A thread (not yet started) that locks table role for 1 s, from 0.5 s after the service at
    ``base_url`` answered its first health check (once the load is running: locust's processes take
    a second or more to start, longer on shared cores); and its connection."""
    lock = postgres.connect(database)

    def hold() -> None:
        deadline = time.monotonic() + 20
        while not _answered(base_url) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        with lock.cursor() as cur:
            cur.execute("BEGIN; LOCK TABLE role IN ACCESS EXCLUSIVE MODE")
        time.sleep(1.0)
        with lock.cursor() as cur:
            cur.execute("ROLLBACK")

    return threading.Thread(target=hold, daemon=True), lock


@pytest.mark.parametrize("connection", ["close", "keep-alive"])
def test_connection_switch_decides_database_connections_under_eventlet(
    tmp_path, run_gunicorn, postgres, database, connection
):
    """One greenlet per TCP connection, one SingletonThreadPool connection per greenlet: with
    ``close`` every request opens a session, with ``keep-alive`` every user does once."""
    server = run_gunicorn("eventlet", workers=1, HEALTHZ_POOL_CLASS="SingletonThreadPool", HEALTHZ_POOL_SIZE="500")
    before = settled_sessions(postgres, database)
    totals, seconds = _locust(tmp_path, server.base_url, 4, connection=connection, max_requests=80)
    server.stop()
    opened = settled_sessions(postgres, database) - before
    assert totals["failures"] == 0, totals
    # Each of the 4 users may have one in flight and send one more before the stop reaches it.
    assert 80 <= totals["requests"] <= 80 + 2 * 4, "--max-requests stops the run"
    assert seconds < 40, "the run stopped by itself at the request cap, long before --run-time"
    if connection == "close":
        assert opened >= totals["requests"], (opened, totals)
    else:
        assert opened <= 4, (opened, totals)


# Whether locust keeps a rate is a figure other tests on the same cores move (335 of 400 due, beside
# three xdist workers): it runs alone.
@pytest.mark.serial
def test_a_fixed_rate_is_kept_and_a_stall_is_timed_from_each_due_time(tmp_path, run_gunicorn, postgres, database):
    """20 users at 100 requests/s in all for 4 s, with the table locked for 1 s once the load runs: the
    rate holds, and the requests due during the lock count the time they waited to be sent."""
    server = run_gunicorn("gthread", workers=1, GUNICORN_THREADS=4, HEALTHZ_POOL_SIZE=4, HEALTHZ_MAX_OVERFLOW=0)
    holder, lock = _locked_for_a_second(postgres, database, server.base_url)
    holder.start()
    try:
        totals, _ = _locust(tmp_path, server.base_url, 20, run_time=4, rate=100)
    finally:
        holder.join(10)
        lock.close()
    assert totals["rate"] == 100 and totals["failures"] == 0
    assert totals["due"] == pytest.approx(400, rel=0.15) and totals["requests"] == pytest.approx(totals["due"], rel=0.1)
    # Each user sends every 0.2 s: during the 1 s lock each is held back, and its next requests were due meanwhile.
    assert totals["late"] >= 20 and totals["p99_ms"] >= 700


@pytest.mark.serial  # late requests are counted against the clock: on shared cores, a lock taken late counts fewer
def test_distributed_workers_share_the_rate_and_the_master_adds_up_their_figures(
    tmp_path, run_gunicorn, postgres, database
):
    """locust's distributed mode with our locustfile: a master and 2 worker processes, 20 users at
    100 requests/s in all over a service that answers and one whose database refuses, the first's
    table locked for 1 s. The master's totals hold the workers' requests, failures by kind, the
    shared rate, late requests and the due-time latency; its timeline holds their outcomes."""
    good = run_gunicorn("gthread", workers=1, GUNICORN_THREADS=4, HEALTHZ_POOL_SIZE=4, HEALTHZ_MAX_OVERFLOW=0)
    unreachable = f"postgresql://healthz:{postgres.password}@127.0.0.1:{free_port()}/healthz"
    broken = run_gunicorn("gthread", workers=1, url=unreachable)
    holder, lock = _locked_for_a_second(postgres, database, good.base_url)
    timeline = tmp_path / "timeline.json"
    holder.start()
    try:
        totals, _ = _locust(
            tmp_path,
            good.base_url,
            20,
            run_time=4,
            rate=100,
            targets=[good.base_url, broken.base_url],
            workers=2,
            timeline=timeline,
        )
    finally:
        holder.join(10)
        lock.close()
    log = (tmp_path / "locust.log").read_text()
    assert "Traceback" not in log, log[-3000:]
    assert totals["rate"] == 100
    # The workers' requests add up to the rate they share (not 2 x 100, not 100 / 2).
    assert totals["due"] == pytest.approx(400, rel=0.15) and totals["requests"] == pytest.approx(
        totals["due"], rel=0.15
    )
    assert list(totals["failures_by_cause"]) == ["connection_refused"]
    assert [host["failures"] > 0 for host in totals["by_host"]] == [False, True]
    # The master runs no users: late requests and the due-time p99 come from its workers' reports (an
    # unlocked request takes milliseconds; those due during the 1 s lock wait up to a second, less
    # when two tests share the cores and the lock is taken late).
    assert totals["late"] >= 20 and totals["p99_ms"] >= 400
    rows = load.read_timeline(timeline)
    assert sum(row["ok"] for row in rows) + sum(sum(row["failed"].values()) for row in rows) == totals["requests"]


def test_a_499_is_a_failure_named_by_its_kind(tmp_path, run_gunicorn, postgres):
    unreachable = f"postgresql://healthz:{postgres.password}@127.0.0.1:{free_port()}/healthz"
    server = run_gunicorn("gthread", workers=1, url=unreachable)
    totals, _ = _locust(tmp_path, server.base_url, 2, max_requests=20)
    assert totals["requests"] >= 20 and totals["failures"] == totals["requests"]
    assert list(totals["failures_by_cause"]) == ["connection_refused"]
    # In locust's own failure table too (its HTML report is written at exit; its CSV every interval).
    assert "499 connection_refused" in (tmp_path / "locust.html").read_text()


def test_targets_spread_the_users_over_services_and_count_each_share(tmp_path, run_gunicorn, postgres):
    good = run_gunicorn("gthread", workers=1)
    unreachable = f"postgresql://healthz:{postgres.password}@127.0.0.1:{free_port()}/healthz"
    broken = run_gunicorn("gthread", workers=1, url=unreachable)
    command = load.locust_command(
        good.base_url,
        4,
        60,
        connection="keep-alive",
        max_requests=200,
        csv_prefix=tmp_path / "locust",
        html=tmp_path / "locust.html",
        targets=[good.base_url, broken.base_url],
    )
    load.Locust(command, tmp_path / "locust.log").start().wait(90)
    totals = load.read_summary(tmp_path / "locust")
    first, second = totals["by_host"]
    assert first["requests"] + second["requests"] == totals["requests"] >= 200
    # Two users on each target; each pair's share of the 200 follows its target's speed (the broken one
    # fails fast, the good one waits on its database), more unequal while another test shares the cores.
    assert first["requests"] >= 10 and second["requests"] >= 10, "two users on each target"
    assert first["failures"] == 0 and second["failures"] == second["requests"] == totals["failures"]
    assert second["failures_by_cause"] == {"connection_refused": second["failures"]}
    # The same error under two names (@1, @2) is summed in the totals, not overwritten.
    command = load.locust_command(
        broken.base_url,
        2,
        60,
        connection="keep-alive",
        max_requests=100,
        csv_prefix=tmp_path / "both",
        html=tmp_path / "both.html",
        targets=[broken.base_url, broken.base_url],
    )
    load.Locust(command, tmp_path / "both.log").start().wait(90)
    both = load.read_summary(tmp_path / "both")
    assert (
        both["failures_by_cause"] == {"connection_refused": both["failures"]}
        and both["failures"] == both["requests"] >= 100
    )


def test_step_ramp_shape_from_the_environment(tmp_path, run_gunicorn):
    server = run_gunicorn("gthread", workers=1)
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(load.LOCUSTFILE),
        "--headless",
        "--host",
        server.base_url,
        "--csv",
        str(tmp_path / "ramp"),
        "--stats-interval",
        "0.2",
        "--step-users",
        "2",
        "--step-seconds",
        "1.5",
        "--steps",
        "2",
    ]
    began = time.monotonic()
    result = subprocess.run(
        command,
        env={**__import__("os").environ, "HEALTHZ_SHAPE": "step-ramp"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert time.monotonic() - began < 30, "the shape stops the run after its last step"
    users = [s["users"] for s in load.read_history(tmp_path / "ramp", 0.2)]
    assert 2 in users and 4 in users and max(users) == 4
    assert users.index(4) > users.index(2)


def test_stages_are_data():
    code = (
        "from step_ramp import stages; print(stages(100, 10, 3))\n"
        "try:\n    stages(0, 10, 3)\nexcept ValueError as e:\n    print(e)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=locustfiles.DIRECTORY, timeout=60
    ).stdout
    assert out.splitlines() == [
        "[(10, 100), (20, 200), (30, 300)]",
        "step ramp needs step_users >= 1, step_seconds > 0, steps >= 1; got 0, 10, 3",
    ]


def test_read_summary_without_files(tmp_path):
    assert load.read_summary(tmp_path / "none") == {
        "requests": 0,
        "failures": 0,
        "p50_ms": None,
        "p95_ms": None,
        "p99_ms": None,
        "seconds": None,
        "failures_by_cause": {},
        "by_host": [],
        "rate": None,
        "due": None,
        "late": None,
    }
    assert load.read_history(tmp_path / "none", 0.2) == [] and load.last_progress(tmp_path / "none") is None


def test_client_failures_keep_locust_s_wording(tmp_path):
    (tmp_path / "x_summary.json").write_text(
        '{"requests": 10, "failures": 4, "failures_by_error": '
        '{"499 pool_timeout": 1, "ConnectionRefusedError(111, \'Connection refused\')": 2, "HTTP 502": 1, '
        '"URL http://198.18.0.5:8000/api/v1/healthz/: 0, original=timed out": 3}}'
    )
    causes = load.read_summary(tmp_path / "x")["failures_by_cause"]
    assert causes == {"client timeout": 3, "client ConnectionRefusedError": 2, "pool_timeout": 1, "502": 1}


def test_stalled_seconds_is_the_longest_stretch_without_a_completed_request():
    history = [{"users": 0, "rps": None}, {"users": 10, "rps": 0.0}, {"users": 10, "rps": 50.0}]
    history += [{"users": 10, "rps": 0.0}] * 4 + [{"users": 10, "rps": 5.0}, {"users": 0, "rps": 0.0}]
    assert load.stalled_seconds(history, 0.2) == 0.8
    assert load.stalled_seconds([], 0.2) == 0.0
