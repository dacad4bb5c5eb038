"""The report's own stack, examples/django-report (Django, DRF, its gunicorn.conf.py), in the lab
from its own command: under eventlet with CONN_MAX_AGE=0 it fails as the report did, under gthread
with persistent connections it holds; each beside the Flask scenario that stands for it."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest

from healthz.lab import report, tables
from healthz.lab.runner import Lab, LabConfig, Progress
from healthz.lab.scenarios import load_file, select

pytest.importorskip("django", reason="the django extra: pip install 'healthz[django]'")
pytest.importorskip("rest_framework", reason="the django extra: pip install 'healthz[django]'")

SCENARIOS = Path(__file__).resolve().parents[2] / "examples" / "django-report" / "scenarios.toml"
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="the netns topology needs root and iproute2"
)


def test_every_django_scenario_names_a_lab_scenario_that_stands_for_it():
    scenarios = load_file(SCENARIOS, {})
    assert {"django-eventlet", "django-eventlet-persistent", "django-gthread-persistent", "django-pool"} <= set(
        scenarios
    )
    known = {s.name for s in select([])}
    for scenario in scenarios.values():
        assert scenario.own_service and scenario.counterpart in known, scenario.name
        assert scenario.service.spec.app_dir == SCENARIOS.parent


@needs_root
@pytest.mark.timeout(400)
def test_the_report_stack_fails_under_eventlet_and_holds_under_gthread_beside_its_stand_ins(tmp_path):
    chosen = select(["django-eventlet", "eventlet-nullpool", "django-gthread-persistent"], [SCENARIOS])
    config = LabConfig(
        scenarios=chosen,
        scenarios_files=[SCENARIOS],
        # ~100 new connections a second on 300 ports: the range runs out within 3 s of the 6.
        concurrency=[200],
        duration=6,
        topology="netns",
        ports=300,
        output=tmp_path / "out",
        doctor=False,
    )
    results = Lab(config, Progress(io.StringIO())).run()
    runs = {r.scenario: r for r in results}
    assert all(r.error is None for r in results), {r.scenario: r.error for r in results}
    eventlet, gthread = runs["django-eventlet"], runs["django-gthread-persistent"]
    # The report's failure, read from Django's own log and from PostgreSQL's and the kernel's counters.
    assert eventlet.failures > 0 and eventlet.failures_by_cause.get("499", 0) > 0, eventlet.failures_by_cause
    assert next(iter(eventlet.causes)) == "address_unavailable", eventlet.causes
    assert eventlet.sessions_per_second > 300 / 60 and eventlet.time_wait_peak > 200
    # The report's working setup: a connection per thread, kept.
    assert gthread.failures == 0 and gthread.sessions_opened <= 2 * 8 + 2 and gthread.time_wait_peak < 20
    verdicts = report.verdict.judge_all(results, None)
    assert (
        str(verdicts["django-eventlet"].outcome) == "FAILED"
        and verdicts["django-eventlet"].cause == "address_unavailable"
    )
    assert str(verdicts["django-gthread-persistent"].outcome) == "held"
    # Paired with its stand-in where that ran too.
    assert [row[1:3] for row in tables.pair_rows(results)] == [["django-eventlet", "eventlet-nullpool"]]
