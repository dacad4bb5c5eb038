"""The fourteen default scenarios once in netns, read by the tests that need every one of them: the
report's failure reproduced, a sized pool holding, the advice's rerun, and the doctor agreeing."""

from __future__ import annotations

import dataclasses
import io
import os
import shutil

import pytest

from healthz.lab import report, verdict
from healthz.lab.advice import HoldSource
from healthz.lab.runner import Lab, LabConfig, Progress
from healthz.lab.scenarios import DEFAULTS, select
from healthz.lab.topology import lab_namespaces
from healthz.plan import DatabaseLimits, Deployment, plan

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="the netns topology needs root and iproute2"
)


#: Scenarios that hold a connection per greenlet: ~130 more a second stay open, so on 300 ports they
#: would cross the 90% of the range where a held-open budget overrun starts inside the doctor's window.
HOLDING = ("eventlet-singleton", "eventlet-singleton-keepalive")
#: The in-process bounded pools the advice may choose from the defaults (each holds at 100 clients).
BOUNDED = ("eventlet-queuepool-sized", "gevent-queuepool-sized", "gevent-queuepool-blocking", "gthread-queuepool")


@pytest.fixture(scope="module")
def netns_defaults(tmp_path_factory):
    """Every default scenario once in netns at 100 clients for 5 s, shared by the tests that read it:
    300 ports, so a connection per request exhausts them within seconds (those that hold theirs open
    get 2,000). The doctor starts 1.5 s after the first request completed, past the start-up burst."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("the netns topology needs root and iproute2")
    scenarios = [dataclasses.replace(s, ports=2000) if s.name in HOLDING else s for s in select([])]
    config = LabConfig(
        scenarios=scenarios,
        concurrency=[100],
        duration=5,
        topology="netns",
        ports=300,
        output=tmp_path_factory.mktemp("netns") / "out",
    )
    return config, Lab(config, Progress(io.StringIO())).run()


# Each in a namespace of its own: another test beside them moves their requests per second, never
# their churn, their failures or the doctor's reading of their sockets.
@needs_root
def test_netns_reproduces_the_report_and_a_sized_pool_does_not_fail(tmp_path, netns_defaults):
    config, results = netns_defaults
    runs = {r.scenario: r for r in results}
    nullpool, sized = runs["eventlet-nullpool"], runs["eventlet-queuepool-sized"]
    assert nullpool.failures_by_cause.get("address_unavailable", 0) > 0, nullpool.failures_by_cause
    assert nullpool.address_unavailable > 0, "the service logged libpq's 'Cannot assign requested address'"
    assert nullpool.time_wait_peak > 150, "TIME_WAIT filled the narrowed port range"
    assert sized.failures == 0 and sized.address_unavailable == 0, sized.failures_by_cause
    # 2 pools of 10; the doctor's own connection adds one session. What closes from the app host is
    # the doctor's (a handful of TIME_WAIT at most), never the pool's: the NullPool's fill the range.
    assert sized.sessions_opened <= 20 + 1 and sized.time_wait_peak <= 5
    # The planner's predictions for this deployment, against what was measured.
    predicted = plan(
        Deployment(
            hosts=1, workers=2, worker_class="eventlet", max_connections=4096, pool_size=10, port_range=(40000, 40299)
        )
    )
    assert nullpool.sessions_per_second > predicted.exhaustion_rate  # 300 ports / 60 s = 5 connections/s
    assert predicted.total_connections == 20 and sized.backends_peak <= predicted.total_connections + 1  # + the doctor
    # The doctor, run in the app namespace during the load, says what the measurement says.
    assert nullpool.doctor.status == "connection churn" and nullpool.doctor.exit == 1, nullpool.doctor
    assert nullpool.doctor.seconds_to_exhaustion is not None
    assert sized.doctor.status == "healthy" and sized.doctor.exit == 0, sized.doctor
    assert nullpool.doctor.agrees and sized.doctor.agrees
    # The hold time, from the service's own histogram: short, and shorter than a request takes.
    assert 0 < sized.hold_ms < sized.p50_ms and sized.checkout_ms is not None

    # The lab's recommendation from the whole comparison, sized by its rate and hold time, run at the same load: it holds.
    report.write(config.output)
    said = report.advice_of(report.read(config.output))
    # The bounded pools all held; which is fastest within the margin moves with a test beside it.
    assert said.chosen in BOUNDED and said.sizing.hold_source is HoldSource.MEASURED, said.chosen
    # Rerun with locust distributed over 2 workers on two load hosts of their own: the same answer.
    again = dataclasses.replace(
        config,
        scenarios=select(["recommended"], [config.output / report.RECOMMENDED]),
        output=tmp_path / "again",
        load_workers=2,
        duration=6,
    )
    lab = Lab(again, Progress(io.StringIO()))
    (recommended,) = lab.run()
    assert "2 load hosts" in lab.meta["topology"]["description"] and recommended.load_generator.processes == 2
    commands = (tmp_path / "again" / recommended.run_dir / "commands.txt").read_text()
    assert "--worker --master-host 127.0.0.1" in commands and "--master-host 198.18.2." in commands
    assert recommended.pool.pool_size == said.sizing.pool_size and recommended.concurrency == sized.concurrency
    judged = verdict.judge("recommended", [recommended], DatabaseLimits(4096, 3))
    assert judged.outcome is verdict.Outcome.HELD, report.in_numbers(judged, None)
    assert not [ns for ns in lab_namespaces() if f"-{os.getpid()}-" in ns]


@needs_root
def test_the_doctor_agrees_with_the_measurement_on_every_default_scenario(netns_defaults):
    _, results = netns_defaults
    assert [r.scenario for r in results] == list(DEFAULTS)
    said = {r.scenario: (r.doctor.status, r.doctor.measured_status) for r in results}
    assert all(r.doctor.agrees for r in results), {r.scenario: said[r.scenario] for r in results if not r.doctor.agrees}
    assert said["eventlet-nullpool"][0] == "connection churn"
    assert said["eventlet-queuepool-sized"][0] == "healthy"
    assert said["gthread-queuepool"][0] == "healthy"
    assert said["eventlet-nullpool-pgbouncer-db"][0] == "connection churn"  # PgBouncer across the network: still churn
    assert said["eventlet-queuepool-pgbouncer"][0] == "healthy"
    runs = len(DEFAULTS)
    assert f"agreed with the measurement in {runs} of {runs} runs" in report.verdict_table(
        {"meta": {}, "results": results}
    )
