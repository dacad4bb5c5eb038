"""The fault report from synthetic results (pure logic): rows, the pre_ping comparison, the notes
a team acts on, and judging again when a report is remade."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from healthz.lab import fault_report
from healthz.lab.fault_figures import FaultFigures

META = {
    "users": 50,
    "lead": 2.0,
    "tail": 4.0,
    "request_timeout": 10.0,
    "seconds": 12.0,
    "command": "healthz lab faults",
    "postgres": {"version": "15", "max_connections": 100},
    "machine": {"cpus": 2},
    "topology": {"name": "loopback"},
    "faults": {"db-restart-fast": {"description": "restart"}},
}


def run(fault, scenario, **figures):
    result = {
        "fault": fault,
        "scenario": scenario,
        "base_scenario": scenario,
        "pool_pre_ping": False,
        "summary": "eventlet workers=2",
        "connection": "close",
        "topology": "loopback",
        "hold": 1.0,
        "worker_class": "eventlet",
        "workers": 2,
        "threads": 8,
        "pool_capacity": 10,
        "users": 50,
        "skipped": None,
        "error": None,
        "problems": [],
        "errors_before": {},
        "errors": {},
        "failed": 0,
        "lost_after_end": 0,
        "recovery_seconds": 0.0,
        "slowest_failure_ms": 0.0,
        "slowest_ok_ms": 50.0,
        "worker_restarts": 0,
        "backends_left": 0,
        "failure_bound_s": None,
        "livez_during_fault": {"status": 200, "seconds": 0.05, "during_fault": True},
        "commands": {"rerun": f"healthz lab faults --fault {fault}"},
    }
    result.update(figures)
    return FaultFigures.from_dict(result, strict=True)


def test_rows_show_errors_recovery_and_the_problem():
    results = [
        run(
            "db-restart-fast",
            "a",
            errors={"connection_refused": 2000, "connection_lost": 20},
            failed=2020,
            slowest_failure_ms=80.0,
        ),
        run("slow-network", "a", skipped="needs --topology netns (tc netem on the veth pair)"),
        run(
            "pool-exhausted",
            "b",
            problems=["x"],
            livez_during_fault={"status": 200, "seconds": 1.3, "during_fault": False},
        ),
    ]
    rows = fault_report.rows(results)
    assert rows[0][:6] == [
        "db-restart-fast",
        "a",
        "as expected",
        "connection_refused 2,000, connection_lost 20",
        "0",
        "0",
    ]
    assert rows[1][:4] == ["slow-network", "a", "skipped", "needs --topology netns (tc netem on the veth pair)"]
    assert rows[2][2] == "PROBLEM: x" and rows[2][8] == "200 in 1.3 s, after the fault"
    assert all(len(row) == len(fault_report.HEADERS) for row in rows)


def test_pre_ping_rows_pair_each_scenario_with_its_variant():
    results = [
        run("db-restart-fast", "s", base_scenario="s", failed=30, lost_after_end=12, recovery_seconds=0.4),
        run("db-restart-fast", "s (pinged)", base_scenario="s", pool_pre_ping=True, failed=20, recovery_seconds=0.1),
        run("db-restart-fast", "nullpool", base_scenario="nullpool", failed=25),
    ]
    assert fault_report.pre_ping_rows(results) == [
        ["db-restart-fast", "s", "30 (12 after restart)", "20 (0 after restart)", "0.4", "0.1"]
    ]


def test_notes_explain_a_long_wait_and_a_pool_that_never_ran_out():
    waited = run("db-down-at-start", "s", slowest_ok_ms=5300.0)
    gthread = run("pool-exhausted", "g", worker_class="gthread", threads=8, pool_capacity=8, slowest_ok_ms=2600.0)
    few = run("pool-exhausted", "e", users=10)
    notes = fault_report.details([waited, gthread, few])
    assert notes[0].startswith("`db-down-at-start` on `s`: a request that ended 200 had waited 5.3 s.")
    assert "gthread worker serves no more requests at once than its 8 threads" in notes[1] and "2.6 s" in notes[1]
    assert (
        notes[2]
        == "`pool-exhausted` on `e`: no request waited for the pool: 10 clients for 2 workers x 10 pooled connections never ran it out; raise --users."
    )


def test_a_remade_report_judges_again(tmp_path):
    stale = run("db-restart-fast", "s", errors={"other": 3}, failed=3, problems=[])
    (tmp_path / "faults.json").write_text(json.dumps({"meta": META, "results": [stale.to_dict()]}))
    paths = fault_report.write(tmp_path)
    text = paths["markdown"].read_text()
    assert "| db-restart-fast | s | PROBLEM: unexpected errors: other 3 |" in text
    assert "**0 of 1 fault runs behaved as expected**" in text


def test_the_example_fault_report_is_what_its_faults_json_makes(tmp_path):
    example = Path(__file__).resolve().parents[2] / "docs" / "example-faults"
    shutil.copy(example / "faults.json", tmp_path)
    fault_report.write(tmp_path)
    assert (tmp_path / "faults.md").read_text() == (example / "faults.md").read_text()
    data = json.loads((example / "faults.json").read_text())
    typed = fault_report.read(tmp_path)["results"]
    assert len(typed) == len(data["results"]) and all(isinstance(r, FaultFigures) for r in typed)
