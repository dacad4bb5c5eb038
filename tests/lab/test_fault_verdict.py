"""A fault run measured and judged: pure logic on synthetic timelines and results."""

from __future__ import annotations

import pytest

from healthz.lab import fault_verdict, faults
from healthz.lab.fault_figures import FaultFigures

T0 = 1_800_000_000.0  # the load's start, Unix time


def row(t, ok=0, failed=None, ok_ms=5.0, failed_ms=5.0):
    return {
        "t": round(T0 + t, 1),
        "ok": ok,
        "ok_max_ms": ok_ms if ok else 0.0,
        "failed": failed or {},
        "failed_max_ms": failed_ms if failed else 0.0,
    }


def timeline(spec):
    """``spec``: (start, end, ok per tick, failed per tick) stretches in seconds since T0."""
    rows = []
    for start, end, ok, failed in spec:
        t = start
        while t < end - 1e-9:
            rows.append(row(t, ok, dict(failed)))
            t = round(t + 0.1, 1)
    return rows


def test_measure_counts_errors_by_kind_and_recovery_from_the_faults_end():
    rows = timeline(
        [(0, 2, 10, {}), (2, 3, 0, {"connection_refused": 5}), (3, 3.5, 4, {"connection_lost": 1}), (3.5, 8, 10, {})]
    )
    m = fault_verdict.measure(rows, fault_began=T0 + 2, fault_ended=T0 + 3, load_ended=T0 + 8)
    assert m["errors_before"] == {}
    assert m["errors"] == {"connection_refused": 50, "connection_lost": 5}
    assert m["failed"] == 55 and m["lost_after_end"] == 5
    assert m["recovery_seconds"] == 0.5
    assert m["first_ok_after_seconds"] == 0.0
    assert m["ok_during_fault"] == 0


def test_measure_no_failure_after_the_end_is_zero_recovery():
    rows = timeline([(0, 2, 10, {}), (2, 2.5, 3, {"statement_timeout": 2}), (2.5, 6, 10, {})])
    m = fault_verdict.measure(rows, T0 + 2, T0 + 2.5, T0 + 6)
    assert m["recovery_seconds"] == 0.0 and m["lost_after_end"] == 0 and m["ok_during_fault"] == 15


def test_measure_failures_into_the_last_second_are_not_recovered():
    rows = timeline([(0, 2, 10, {}), (2, 6, 1, {"other": 3})])
    assert fault_verdict.measure(rows, T0 + 2, T0 + 3, T0 + 6)["recovery_seconds"] is None


def test_measure_failures_without_a_success_after_them_are_not_recovered():
    rows = timeline([(0, 2, 10, {}), (2, 4, 0, {"connection_refused": 3}), (4, 6, 0, {})])
    assert fault_verdict.measure(rows, T0 + 2, T0 + 3, T0 + 6)["recovery_seconds"] is None


def test_measure_nothing_served_after_the_fault_is_not_recovered_even_without_failures():
    rows = timeline([(0, 2, 10, {})])  # a stuck service: requests hang, none fails, none succeeds
    m = fault_verdict.measure(rows, T0 + 2, T0 + 3, T0 + 6)
    assert m["recovery_seconds"] is None and m["failed"] == 0


def test_measure_keeps_failures_before_the_fault_apart():
    rows = timeline([(0, 1, 10, {"too_many_clients": 1}), (1, 5, 10, {})])
    m = fault_verdict.measure(rows, T0 + 2, T0 + 3, T0 + 5)
    assert m["errors_before"] == {"too_many_clients": 10} and m["errors"] == {}


def test_measure_slowest_requests_are_taken_from_the_faults_beginning():
    rows = [
        row(0.5, 10, ok_ms=9000.0),
        row(2.0, 1, {"pool_timeout": 1}, ok_ms=700.0, failed_ms=510.0),
        row(2.5, 10, ok_ms=2500.0),
    ]
    rows += timeline([(2.6, 5, 10, {})])
    m = fault_verdict.measure(rows, T0 + 2, T0 + 2.5, T0 + 5)
    assert m["slowest_failure_ms"] == 510.0 and m["slowest_ok_ms"] == 2500.0


def good_result(**changes):
    result = {
        "fault": "db-down-at-start",
        "scenario": "s",
        "base_scenario": "s",
        "pool_pre_ping": False,
        "summary": "eventlet workers=2",
        "worker_class": "eventlet",
        "workers": 2,
        "threads": 8,
        "pool_capacity": 10,
        "users": 50,
        "connection": "close",
        "topology": "loopback",
        "hold": 1.0,
        "failed": 10,
        "errors_before": {},
        "errors": {"connection_refused": 10},
        "recovery_seconds": 0.2,
        "slowest_failure_ms": 30.0,
        "slowest_ok_ms": 80.0,
        "worker_restarts": 0,
        "backends_left": 0,
        "failure_bound_s": 1.0,
    }
    result.update(changes)
    return FaultFigures.from_dict(result, strict=True)


T = fault_verdict.Trouble


@pytest.mark.parametrize(
    "changes, trouble, figures, sentence",
    [
        ({}, None, None, None),
        (
            {"errors": {"connection_refused": 3, "other": 2}},
            T.UNEXPECTED_ERRORS,
            {"errors": {"other": 2}},
            "unexpected errors: other 2",
        ),
        ({"errors": {"client timeout": 2}}, T.UNEXPECTED_ERRORS, {"errors": {"client timeout": 2}}, None),
        ({"recovery_seconds": None}, T.NOT_RECOVERED, {}, "not recovered by the end of the load"),
        (
            {"slowest_failure_ms": 2500.0},
            T.SLOW_FAILURE,
            {"ms": 2500.0, "bound_s": 1.0},
            "a failed request took 2.5 s (bound 1 s)",
        ),
        ({"slowest_ok_ms": 9800.0}, T.HANG, {"ms": 9800.0}, "a request took 9.8 s, the client's timeout: a hang"),
        ({"worker_restarts": 1}, T.WORKER_RESTARTS, {"restarts": 1, "expected": 0}, "1 worker restart(s), expected 0"),
        ({"backends_left": 3}, T.BACKENDS_LEFT, {"backends": 3}, "3 backend(s) left after gunicorn stopped"),
        (
            {"errors_before": {"too_many_clients": 1}},
            T.ERRORS_BEFORE,
            {"errors": {"too_many_clients": 1}},
            "errors before the fault: too_many_clients 1",
        ),
        (
            {"livez_during_fault": {"status": 0, "seconds": 10.1, "during_fault": False, "listener": "request port"}},
            T.LIVEZ_BLOCKED,
            {"status": 0, "seconds": 10.1, "listener": "request port"},
            "/api/v1/livez/ (request port) did not answer within a liveness probe's 1 s while the fault lasted (no answer after 10.1 s): every worker was busy waiting on the database",
        ),
        (
            {"livez_during_fault": {"status": 200, "seconds": 2.4, "during_fault": False}},
            T.LIVEZ_BLOCKED,
            {"status": 200, "seconds": 2.4, "listener": None},
            None,
        ),
        ({"livez_during_fault": {"status": 200, "seconds": 0.8, "during_fault": False}}, None, None, None),
        (
            {"livez_during_fault": {"status": 200, "seconds": 1.3, "during_fault": True, "listener": "liveness"}},
            T.LIVEZ_BLOCKED,
            {"status": 200, "seconds": 1.3, "listener": "liveness"},
            None,
        ),
        ({"livez_during_fault": {"status": 200, "seconds": 0.8, "during_fault": True}}, None, None, None),
    ],
)  # fmt: skip  (one case per row: the table reads better than the formatter's layout)
def test_judge_finds_each_trouble_with_its_figures(changes, trouble, figures, sentence):
    found = fault_verdict.judge(faults.FAULTS["db-down-at-start"], good_result(**changes), request_timeout=10)
    assert [(f.trouble, f.figures) for f in found] == ([] if trouble is None else [(trouble, figures)])
    if sentence:  # each sentence rendered once
        assert found[0].sentence() == sentence


def test_judge_accepts_client_side_errors_for_a_killed_worker_but_not_timeouts():
    kill = faults.FAULTS["worker-kill"]
    ok = good_result(
        errors={"client ConnectionResetError": 2, "client RemoteDisconnected": 1},
        worker_restarts=1,
        failure_bound_s=None,
    )
    assert fault_verdict.judge(kill, ok, 10) == []
    assert [f.trouble for f in fault_verdict.judge(kill, ok.replace(worker_restarts=0), 10)] == [T.WORKER_RESTARTS]
    (left,) = fault_verdict.judge(kill, ok.replace(killed_worker_backends_left=2), 10)
    assert (left.trouble, left.figures) == (T.KILLED_WORKER_BACKENDS, {"backends": 2})
    assert left.sentence() == "2 backend(s) of the killed worker still open"


def test_an_own_services_statuses_are_its_answer_to_the_fault_and_its_password_in_the_log_is_not():
    restart = faults.FAULTS["db-restart-fast"]
    theirs = good_result(errors={"500": 40, "503": 2}, own_service=True)
    assert fault_verdict.judge(restart, theirs, 10) == []
    # Ours names a kind: a bare status from it is not what the fault should cause.
    assert [f.trouble for f in fault_verdict.judge(restart, theirs.replace(own_service=False), 10)] == [
        T.UNEXPECTED_ERRORS
    ]
    # A client's timeout is a hang for theirs too.
    assert T.UNEXPECTED_ERRORS in [
        f.trouble for f in fault_verdict.judge(restart, theirs.replace(errors={"client timeout": 1}), 10)
    ]
    (leaked,) = fault_verdict.judge(restart, theirs.replace(password_in_log=True), 10)
    assert leaked.trouble is T.PASSWORD_IN_LOG and "password" in leaked.sentence()


def test_faults_that_set_the_labs_knobs_are_skipped_for_a_teams_service_saying_which():
    from healthz.lab.scenarios import DEFAULTS, own_service

    theirs, ours = own_service("gunicorn app:app -b {bind}", "/health"), DEFAULTS["eventlet-queuepool-sized"]
    for name in ("pool-exhausted", "statement-timeout"):
        assert "needs the lab's own service" in faults.FAULTS[name].skipped_for(theirs, None)
        assert faults.FAULTS[name].skipped_for(ours, None) is None
    assert faults.FAULTS["db-restart-fast"].scenarios(theirs) == [theirs]  # no pool_pre_ping variant of theirs
    assert faults.FAULTS["lock-wait"].skipped_for(theirs, None) is None


def test_the_rate_is_back_when_200s_come_at_three_quarters_of_their_rate_before_the_fault():
    rows = timeline(
        [(0, 2, 10, {}), (2, 2.3, 0, {"client ConnectionRefusedError": 4}), (2.3, 3.5, 5, {}), (3.5, 7, 10, {})]
    )
    # Half the rate until 3.5 s: the first second at three quarters of it begins at 3.0 s (5 x 5 + 5 x 10 of 100).
    assert fault_verdict.rate_back(rows, T0 + 2, T0 + 2) == 1.0
    m = fault_verdict.measure(rows, T0 + 2, T0 + 2, T0 + 7)
    assert m["rate_back_seconds"] == 1.0 and m["recovery_seconds"] == 0.3
    never = timeline([(0, 2, 10, {}), (2, 7, 5, {})])
    assert fault_verdict.rate_back(never, T0 + 2, T0 + 2) is None
    assert fault_verdict.rate_back(timeline([(0, 0.8, 10, {})]), T0 + 0.7, T0 + 0.7) is None  # no rate before it
