"""A run's figures from what was read during it: pure functions on hand-made totals, samples and
logs, checked against the arithmetic they stand for, and accepted by RunFigures as they are."""

from __future__ import annotations

import pytest

from healthz.lab import measure
from healthz.lab.figures import Sample
from healthz.lab.scenarios import DEFAULTS, own_service

TOTALS = {
    "requests": 1000,
    "failures": 100,
    "seconds": 10.0,
    "p50_ms": 5.0,
    "p95_ms": 40.0,
    "p99_ms": 90.0,
    "failures_by_cause": {"address_unavailable": 100},
}
HISTORY = [{"t": 0.2 * i, "requests": 20 * i, "failures": 0} for i in range(50)]
LOG = (
    "Booting worker with pid 11\nBooting worker with pid 12\nBooting worker with pid 13\n"
    "healthz 499 error=address_unavailable: could not connect to server: Cannot assign requested address\n"
    "[CRITICAL] WORKER TIMEOUT (pid:12)\n"
)


def samples(cpu_start: float = 1.0) -> list[Sample]:
    return [
        Sample(
            t=0.2 * i, at=1000 + 0.2 * i, backends=i, time_wait=10 * i, established=2, cpu={"gunicorn": cpu_start + i}
        )
        for i in range(6)
    ]


def summarised(scenario=DEFAULTS["eventlet-nullpool"], **changes):
    args = dict(
        totals=TOTALS,
        history=HISTORY,
        samples=samples(),
        sessions_before=100,
        sessions_after=1100,
        backends_left=0,
        service_log=LOG,
        scenario=scenario,
        port_range=(40000, 40999),
    )
    return measure.summarise(**{**args, **changes})


def test_rates_are_per_request_per_second_and_per_success():
    figures = summarised()
    assert figures["sessions_opened"] == 1000
    assert figures["sessions_per_request"] == 1.0 and figures["sessions_per_second"] == 100.0
    assert figures["sessions_per_success"] == pytest.approx(1000 / 900)
    assert figures["error_rate"] == 0.1 and figures["rps"] == 100.0 and figures["ports"] == 1000


def test_peaks_and_cpu_come_from_the_samples():
    figures = summarised()
    assert figures["backends_peak"] == 5 and figures["time_wait_peak"] == 50 and figures["ports_held_peak"] == 52
    assert figures["cpu_seconds"] == {"gunicorn": 5.0, "postgres": None, "locust": None}


def test_the_log_gives_error_kinds_restarts_and_timeouts():
    figures = summarised()
    assert figures["address_unavailable"] == 1 and figures["service_errors"] == {"address_unavailable": 1}
    assert figures["worker_restarts"] == 1, "3 boots for the scenario's 2 workers"
    assert figures["worker_timeouts"] == 1
    # A team's service: its workers as counted when it got ready, its log read in libpq's words.
    own = summarised(own_service("gunicorn x:app"), workers_started=3)
    assert own["worker_restarts"] == 0 and own["service_errors"].get("address_unavailable", 0) >= 1


def test_no_request_leaves_rates_unset_rather_than_divided_by_zero():
    figures = summarised(totals={**TOTALS, "requests": 0, "failures": 0, "seconds": None}, history=[])
    assert figures["rps"] is None and figures["sessions_per_request"] is None and figures["error_rate"] is None


def test_locust_cpu_counts_from_zero_and_the_others_from_their_first_reading():
    rows = [
        Sample(t=0, at=0, cpu={"locust": 2.0, "postgres": 7.0}),
        Sample(t=1, at=1, cpu={"locust": 3.5, "postgres": 8.0}),
    ]
    assert measure.cpu_seconds(rows, "locust") == 3.5 and measure.cpu_seconds(rows, "postgres") == 1.0
    assert measure.cpu_seconds(rows, "gunicorn") is None


def test_pooler_figures_are_differences_over_the_run():
    def row(logins, xacts, wait_us, waiting):
        pooler = {
            "pooler_logins": logins,
            "pooler_total_xact_count": xacts,
            "pooler_total_wait_time": wait_us,
            "pooler_cl_waiting": waiting,
            "pooler_sv_active": 3,
            "pooler_maxwait": 0,
            "pooler_maxwait_us": 2500,
        }
        return Sample(t=0, at=0, pooler=pooler)

    figures = measure.pooler_figures([row(10, 100, 0, 0), row(50, 1100, 2_000_000, 7)])
    assert figures["logins"] == 40 and figures["transactions"] == 1000
    assert figures["wait_ms_per_transaction"] == 2.0 and figures["cl_waiting_peak"] == 7
    assert figures["maxwait_ms_peak"] == 2.5
    assert measure.pooler_figures([Sample(t=0, at=0)]) == {"logins": None}


@pytest.mark.parametrize("duration", [4, 8, 15, 60])
def test_the_doctor_window_ends_well_before_the_load(duration):
    assert measure.doctor_lead(duration) + measure.doctor_sample(duration) < duration
