"""Faults on a team's own service (tests/projects.py's Flask-SQLAlchemy project, written outside the
repository): the faults that need nothing of the lab's service run on its unchanged code and empty
database of its own, judged by its statuses; those that set a knob of the lab's are skipped, saying
which; nothing in the project is written."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from projects import flask_project, tree

from healthz.lab import fault_report, faults
from healthz.lab.fault_runner import FaultLab
from healthz.lab.idle_fault import IdleClients
from healthz.lab.runner import LabConfig
from healthz.lab.scenarios import own_service

FAULTS = ["worker-kill", "db-restart-fast", "lock-wait", "statement-timeout", "db-down-at-start"]


@pytest.fixture(scope="module")
def own_run(tmp_path_factory):
    project = flask_project(tmp_path_factory.mktemp("team") / "shop")
    before = tree(project)
    scenario = own_service(
        "gunicorn app:app -k gthread --threads 4 -w 2 -b {bind}",
        "/health",
        app_dir=project,
        python=Path(sys.prefix),
        setup="flask --app app init-db",
    )
    output = tmp_path_factory.mktemp("faults")
    config = LabConfig(scenarios=[scenario], concurrency=[20], output=output, topology="loopback", max_connections=60)
    # Slow-header clients as many as the threads their command starts (2 x 4), straight to gunicorn.
    idle = IdleClients(shares=(1.0,), kinds=("slow-header",), routes=("direct",))
    results = FaultLab(config, [*faults.select(FAULTS), idle], lead=1.2, tail=1.5, after=1.0).run()
    assert tree(project) == before, "the team's project was written"
    return output, {r.fault: r for r in results}


def test_the_faults_that_need_nothing_of_ours_ran_on_their_code_as_expected(own_run):
    _, runs = own_run
    ran = [r for r in runs.values() if not r.skipped]
    assert [r.fault for r in ran] == ["worker-kill", "db-restart-fast", "lock-wait", "idle-clients"]
    for r in ran:
        assert r.error is None and r.own_service and r.problems == [], (r.fault, r.error, r.problems)
        assert r.backends_left == 0 and not r.password_in_log


def test_a_database_restart_is_answered_with_their_statuses_and_recovered(own_run):
    r = own_run[1]["db-restart-fast"]
    assert r.errors and all(kind.isdigit() for kind in r.errors), r.errors  # Flask's 500s: no error kind
    assert r.recovery_seconds is not None and r.recovery_seconds < 3


def test_a_lock_on_their_tables_makes_their_statements_wait_and_then_answer(own_run):
    r = own_run[1]["lock-wait"]
    assert r.budget == "1 table(s) locked"  # the project's role table, made by its own create_all
    assert r.slowest_ok_ms > 1500 and not r.errors


def test_a_killed_worker_of_theirs_is_replaced_once(own_run):
    r = own_run[1]["worker-kill"]
    assert r.worker_restarts == 1 and r.killed_worker_backends_left == 0


def test_idle_clients_are_stepped_by_what_their_command_serves_at_once(own_run):
    r = own_run[1]["idle-clients"]
    # Read from gunicorn's own resolved config (-k gthread --threads 4 -w 2), not the lab's defaults.
    assert r.idle_capacity == 8 and [s.clients for s in r.idle_steps] == [8]
    (step,) = r.idle_steps
    # How many checks fail depends on how the kernel spread the clients over the two workers.
    assert step.held == 8 and step.checks == 20 and step.livez_checks == 0  # livez is the lab's service's


def test_faults_that_need_the_labs_service_or_a_ready_path_without_the_database_say_why(own_run):
    output, runs = own_run
    assert "needs the lab's own service" in runs["statement-timeout"].skipped
    assert "ready_path /health is the health check" in runs["db-down-at-start"].skipped
    paths = fault_report.write(output)
    assert "| lock-wait | app | as expected |" in paths["markdown"].read_text()
