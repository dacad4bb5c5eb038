"""The idle-clients fault against the lab's gthread service (real gunicorn, PostgreSQL, locust and
nginx on loopback): slow-header clients as many as its threads take the health check down straight
to gunicorn and not through nginx, the liveness listener answers throughout, and the report's table
shows the steps."""

from __future__ import annotations

import dataclasses

import pytest

from healthz.lab import fault_report, idle_clients
from healthz.lab.fault_runner import FaultLab
from healthz.lab.idle_fault import IdleClients
from healthz.lab.runner import LabConfig
from healthz.lab.scenarios import DEFAULTS


@pytest.fixture(scope="module")
def idle(tmp_path_factory):
    output = tmp_path_factory.mktemp("idle")
    # One worker: how the kernel spreads connections over two is its own (a check may land on the worker
    # the slow clients missed); with one, the slow clients hold every thread a check could have.
    scenario = dataclasses.replace(DEFAULTS["gthread-queuepool"], workers=1)
    config = LabConfig(scenarios=[scenario], concurrency=[10], output=output, topology="loopback")
    fault = IdleClients(shares=(1.0,), kinds=("slow-header",))
    (result,) = FaultLab(config, [fault], lead=1.0, tail=1.0, after=0.5).run()
    return output, result


def test_slow_header_clients_as_many_as_the_threads_fail_the_health_check_only_without_nginx(idle):
    _, r = idle
    assert r.error is None and r.backends_left == 0, r.error
    capacity = r.workers * r.threads
    assert r.idle_capacity == capacity == 8
    steps = {s.route: s for s in r.idle_steps}
    assert list(steps) == ["direct", "nginx"]
    direct, nginx = steps["direct"], steps["nginx"]
    for s in (direct, nginx):
        assert (s.kind, s.clients, s.held, s.checks) == ("slow-header", capacity, capacity, idle_clients.CHECKS)
        assert s.livez_checks == idle_clients.LIVEZ_CHECKS and s.livez_failed == 0  # its own listener answers
    # Every thread reads a request that never ends; the checks the worker accepted wait behind them.
    assert direct.failed == idle_clients.CHECKS and direct.open == capacity
    # nginx reads each request whole before gunicorn sees it: the slow clients hold nginx, not a thread.
    assert nginx.failed == 0 and nginx.worst_ms < idle_clients.CHECK_TIMEOUT * 1000
    assert idle_clients.limit(r.idle_steps, "direct", "slow-header") == capacity
    assert idle_clients.limit(r.idle_steps, "nginx", "slow-header") is None
    # Once the holders closed, the service answered again.
    assert r.recovery_seconds is not None


def test_the_report_has_a_row_per_route_with_the_step_and_where_checks_fail(idle):
    output, r = idle
    text = fault_report.write(output)["markdown"].read_text()
    assert "## Idle clients: at how many the health check fails" in text
    rows = [line for line in text.splitlines() if line.startswith("| gthread-queuepool | ")]
    direct = next(line for line in rows if "| direct | slow-header |" in line)
    nginx = next(line for line in rows if "| nginx | slow-header |" in line)
    assert "| 8 |" in direct and "| 8 clients |" in direct
    assert "held at every step" in nginx and "| 0/5 |" in nginx
