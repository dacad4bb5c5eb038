"""The lab end to end on real parts: its figures against PostgreSQL's own counters, the netns
reproduction of the report, and nothing left behind after an interrupted run."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from helpers import settled_sessions, wait_until

from healthz.lab import probes, report, tables
from healthz.lab.runner import Lab, LabConfig, LabError, Progress
from healthz.lab.scenarios import select
from healthz.lab.topology import lab_namespaces
from healthz.plan import DatabaseLimits, Deployment, plan

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="the netns topology needs root and iproute2"
)
#: Sessions the lab itself opens on a --database-url database: the reachability check, the check
#: for table role, and the probe's connection.
LAB_OWN_SESSIONS = 3


def _all_text(folder) -> str:
    return "".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file() and p.suffix != ".png")


def _writes(postgres, database):
    """Rows inserted, updated and deleted in ``database``'s own tables as PostgreSQL counts them (not
    its catalogs, which autovacuum's ANALYZE writes to), and its tables."""
    with postgres.connect(database) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT coalesce(sum(n_tup_ins), 0), coalesce(sum(n_tup_upd), 0), coalesce(sum(n_tup_del), 0) FROM pg_stat_user_tables"
        )
        counts = cur.fetchone()
        cur.execute(
            "SELECT array_agg(relname ORDER BY relname) FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
        )
        return counts, cur.fetchone()[0]


def test_a_small_run_agrees_with_postgres(tmp_path, postgres, database):
    url = postgres.url_for(database)
    writes_before = _writes(postgres, database)  # its own session ends before the baseline is read
    before = settled_sessions(postgres, database)
    config = LabConfig(
        scenarios=select(["eventlet-nullpool:workers=1", "eventlet-queuepool-sized:workers=1,pool_size=2"]),
        concurrency=[5],
        duration=3,
        topology="loopback",
        database_url=url,
        output=tmp_path / "out",
    )
    nullpool, pooled = Lab(config, Progress(io.StringIO())).run()
    opened = settled_sessions(postgres, database) - before
    assert _writes(postgres, database) == writes_before, "the lab wrote to a --database-url database without --seed"

    assert opened == nullpool.sessions_opened + pooled.sessions_opened + LAB_OWN_SESSIONS
    assert pooled.hold_ms > 0 and pooled.checkout_ms > 0, "read from the service's /metrics"
    assert nullpool.checkout_ms > pooled.checkout_ms, "without a pool, every checkout connects"
    for run in (nullpool, pooled):
        assert run.error is None and run.failures == 0 and run.requests > 20, run
        assert run.rps == pytest.approx(run.requests / run.seconds)
        assert run.backends_left == 0 and run.time_wait_peak is not None
        assert run.ports_held_peak >= run.time_wait_peak  # TIME_WAIT + ESTABLISHED at once
        # Five a second when alone (test_probes); beside the netns tests, a loopback socket table of
        # thousands of their TIME_WAIT entries is read for each sample: at least two a second.
        assert len(run.samples) >= 2 * 3, "probes sampled throughout the run"
        assert run.cpu_seconds["gunicorn"] > 0 and run.cpu_seconds["locust"] > 0
        assert run.cpu_seconds["postgres"] is None, "not our process: a --database-url server"

    # NullPool: one session per request served (the readiness check's included; locust stops its
    # users without waiting, so up to one request per user is served but not counted).
    assert nullpool.requests + 1 <= nullpool.sessions_opened <= nullpool.requests + 1 + 5
    assert pooled.sessions_opened <= 2 and pooled.backends_peak <= 2

    out = tmp_path / "out"
    data = json.loads((out / "results.json").read_text())
    assert [r["sessions_opened"] for r in data["results"]] == [nullpool.sessions_opened, pooled.sessions_opened]
    paths = report.write(out)
    assert "eventlet-nullpool:workers=1" in paths["markdown"].read_text()
    for run in data["results"]:
        folder = out / run["run_dir"]
        for name in (
            "locust_stats.csv",
            "locust_stats_history.csv",
            "locust.html",
            "gunicorn.log",
            "commands.txt",
            "gunicorn-config.txt",
        ):
            assert (folder / name).exists(), name
        assert "worker_class" in (folder / "gunicorn-config.txt").read_text()
    assert postgres.password not in _all_text(out)


def test_an_unreachable_database_is_refused_before_anything_starts(tmp_path, postgres):
    url = f"postgresql://healthz:{postgres.password}@127.0.0.1:1/healthz"
    config = LabConfig(
        scenarios=select(["eventlet-nullpool"]), concurrency=[5], duration=1, database_url=url, output=tmp_path / "out"
    )
    with pytest.raises(LabError) as info:
        Lab(config, Progress(io.StringIO())).run()
    assert "is not reachable" in str(info.value) and postgres.password not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_an_output_folder_with_an_earlier_run_is_refused_before_anything_starts(tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / Lab.RESULTS).write_text("{}")
    config = LabConfig(scenarios=select(["eventlet-nullpool"]), concurrency=[10], output=tmp_path / "o")
    with pytest.raises(LabError, match="already holds results.json from an earlier run"):
        Lab(config, Progress(io.StringIO())).run()
    assert (tmp_path / "o" / Lab.RESULTS).read_text() == "{}" and len(list((tmp_path / "o").iterdir())) == 1


def test_a_kernel_knob_on_loopback_is_refused_with_nothing_started(tmp_path, postgres, database):
    config = LabConfig(
        scenarios=select(["eventlet-nullpool-tw-reuse"]),
        concurrency=[5],
        duration=1,
        topology="loopback",
        database_url=postgres.url_for(database),
        output=tmp_path / "out",
    )
    (refused,) = Lab(config, Progress(io.StringIO())).run()
    assert refused.error == (
        "scenario eventlet-nullpool-tw-reuse: tcp_tw_reuse is set per application namespace: it needs "
        "--topology netns (loopback shares this host's sysctls)"
    )
    assert refused.requests == 0 and not (tmp_path / "out" / refused.run_dir / "gunicorn.log").exists()


def test_a_database_without_role_needs_seed(tmp_path, postgres):
    url = postgres.create_database("unseeded")
    try:
        config = LabConfig(
            scenarios=select(["eventlet-nullpool"]),
            concurrency=[5],
            duration=1,
            database_url=url,
            output=tmp_path / "o",
        )
        with pytest.raises(LabError, match="has no table role: pass --seed"):
            Lab(config, Progress(io.StringIO())).run()
    finally:
        postgres.drop_database("unseeded")


@needs_root
def test_three_hosts_pass_max_connections_without_pgbouncer_and_stay_under_it_with_it(tmp_path):
    # 50 - 3 reserved = 47 available. In-process pools: 3 hosts x 2 workers x 10 = 60, over.
    # PgBouncer on each host: 3 x default_pool_size 10 = 30 server connections, under.
    config = LabConfig(
        scenarios=select(["eventlet-queuepool-sized", "eventlet-queuepool-pgbouncer"]),
        concurrency=[150],
        duration=5,
        topology="netns",
        hosts=3,
        ports=1000,
        max_connections=50,
        output=tmp_path / "out",
    )
    lab = Lab(config, Progress(io.StringIO()))
    sized, bounced = lab.run()
    for run in (sized, bounced):
        assert run.error is None, run.error
        hosts = run.by_host
        assert [h.host for h in hosts] == ["app1", "app2", "app3"]
        assert sum(h.requests for h in hosts) == run.requests and all(h.requests > 0 for h in hosts)
        # Sessions per host from PostgreSQL's log add up to its session counter (the lab's own come over the Unix socket).
        assert sum(h.sessions_opened for h in hosts) == run.sessions_opened, (hosts, run.sessions_opened)
    assert sized.failures_by_cause.get("too_many_clients", 0) > 0, sized.failures_by_cause
    assert sized.backends_peak <= 47
    assert bounced.failures == 0, bounced.failures_by_cause
    assert bounced.backends_peak <= 30 + 1  # + the doctor's connection, which goes through PgBouncer on app1
    # The planner's arithmetic, as the report shows it.
    predicted = plan(Deployment(hosts=3, workers=2, worker_class="eventlet", max_connections=50, pool_size=10))
    assert predicted.max_hosts == 2 and predicted.pooler_needed
    data = {"meta": lab.meta, "results": [sized, bounced]}
    budget = {row[0]: row for row in tables.budget_rows(data["results"], DatabaseLimits.from_meta(data["meta"]))}
    assert budget["eventlet-queuepool-sized"][4] == "no: 13 over" and budget["eventlet-queuepool-sized"][5] == "2"
    assert budget["eventlet-queuepool-pgbouncer"][4] == "yes"
    text = report.to_markdown(report.build(data, []))
    assert "## Application hosts" in text and "**all 3 hosts**" in text and "## The connection budget" in text


def _descendants(pid: int) -> set[int]:
    found, stack = set(), [pid]
    while stack:
        for child in probes.children(stack.pop()):
            found.add(child)
            stack.append(child)
    return found


# Ctrl-C in netns (its namespaces must go) and SIGTERM on loopback (the handler that turns it into
# the same unwinding): each signal once, each topology once.
@pytest.mark.parametrize(
    "topology, signum",
    [
        pytest.param("netns", signal.SIGINT, marks=needs_root, id="netns-SIGINT"),
        pytest.param("loopback", signal.SIGTERM, id="loopback-SIGTERM"),
    ],
)
def test_an_interrupted_run_leaves_no_namespace_and_no_process(tmp_path, topology, signum):
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "healthz",
        "lab",
        "run",
        "--topology",
        topology,
        "-s",
        "eventlet-nullpool",
        "-c",
        "50",
        "-d",
        "60",
        "--max-connections",
        "200",
        "-o",
        str(out),
    ]
    lab = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_until(lambda: list(out.glob("runs/*/locust_stats_history.csv")), timeout=60), "locust never started"
        started = _descendants(lab.pid)
        assert len(started) >= 3, "postgres, gunicorn and locust run as the lab's descendants"
        lab.send_signal(signum)
        try:
            output, _ = lab.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            lab.send_signal(signal.SIGUSR1)  # the lab dumps every thread's stack: where it is stuck
            time.sleep(2)
            lab.kill()
            output, _ = lab.communicate(timeout=10)
            pytest.fail(f"the lab did not stop within 60 s of signal {signum}:\n{output[-6000:]}")
    finally:
        if lab.poll() is None:
            lab.kill()
        if lab.returncode != 130:  # clean up after a failed lab, so that later tests are not slowed by it
            for pid in _descendants(lab.pid) | set(locals().get("started", ())):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for ns in lab_namespaces():
                if ns.startswith(f"healthz-{lab.pid}-"):
                    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    assert lab.returncode == 130, output
    assert "interrupted: every process and namespace the lab started has been stopped" in output
    assert not [ns for ns in lab_namespaces() if ns.startswith(f"healthz-{lab.pid}-")]
    time.sleep(0.5)
    alive = [pid for pid in started if os.path.exists(f"/proc/{pid}")]
    assert not alive, f"still running: {alive}"
