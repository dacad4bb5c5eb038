"""``healthz check``: the budget judged on hand-made figures (pure), then the command on team projects
the tests write (Flask-SQLAlchemy and Django, their own migrations and defaults) on a real PostgreSQL,
and each refusal: one line, exit 2, nothing left running."""

from __future__ import annotations

import concurrent.futures
import json
import os
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from projects import django_project, flask_project, tree

from healthz.lab.check import Broken, Budget, CheckError, CheckOptions, CheckResult, judge, junit_xml, result_of
from healthz.lab.figures import RunFigures

VENV = Path(sys.prefix)
HEALTHZ = str(VENV / "bin" / "healthz")


def figures(**changes) -> RunFigures:
    values = dict(
        scenario="check",
        description="",
        summary="",
        worker_class="unknown",
        workers=2,
        worker_concurrency=1000,
        pool={"pool_class": "unknown", "pool_size": 0, "max_overflow": 0},
        concurrency=100,
        connection="close",
        topology="loopback",
        run_dir="runs/check",
        commands={},
        requests=2000,
        failures=0,
        failures_by_cause={},
        sessions_opened=20,
        sessions_per_request=0.01,
        p50_ms=5.0,
        p99_ms=40.0,
        backends_peak=20,
    )
    return RunFigures.from_dict({**values, **changes})


def test_a_pool_that_keeps_its_connections_holds_and_churn_breaks_the_budget():
    assert judge(figures(), Budget()) == ()
    churn = figures(sessions_opened=1990, sessions_per_request=0.995, failures=12, failures_by_cause={"503": 12})
    broken = judge(churn, Budget(max_p99_ms=30, max_backends=10))
    assert [b.budget for b in broken] == ["sessions_per_request", "failed", "p99_ms", "peak_backends"]
    assert broken[0] == Broken("sessions_per_request", 0.995, 0.02)


def test_the_result_says_what_broke_in_one_line_and_every_figure_in_json():
    options = CheckOptions(app="gunicorn x:app -b {bind}")
    churn = result_of(options, figures(sessions_opened=1990, sessions_per_request=0.995), "loopback")
    assert not churn.passed and churn.exit_status == 1
    line = churn.summary()
    assert "\n" not in line and line.startswith("healthz check: FAILED: sessions per request 0.995 > 0.02")
    data = json.loads(json.dumps(churn.to_dict()))
    assert (
        data["sessions"] == 1990 and data["passed"] is False and data["broken"][0]["budget"] == "sessions_per_request"
    )
    held = result_of(options, figures(), "netns")
    assert held.passed and held.exit_status == 0 and held.summary().endswith("(netns)")
    down = result_of(options, figures(error="the service exited"), "loopback")
    assert down.exit_status == 2 and down.summary() == "healthz check: could not run: the service exited"


def test_junit_xml_has_a_case_per_budget_and_a_failure_where_it_broke():
    result = CheckResult(
        app="x",
        topology="loopback",
        clients=100,
        requests=2000,
        sessions=1990,
        sessions_per_request=0.995,
        broken=(Broken("sessions_per_request", 0.995, 0.02),),
        budget=Budget(max_p99_ms=500),
    )
    suite = ET.fromstring(junit_xml(result).split("\n", 1)[1])
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert list(cases) == ["sessions_per_request <= 0.02", "failed <= 0", "p99_ms <= 500"]
    assert cases["sessions_per_request <= 0.02"].find("failure") is not None
    assert cases["failed <= 0"].find("failure") is None and suite.get("failures") == "1"


@pytest.mark.parametrize(
    "changes, says",
    [
        ({"clients": 0}, "--clients 0"),
        ({"requests": -1}, "--requests -1"),
        ({"duration": 0.5}, "--duration 0.5"),
        ({"connection": "sometimes"}, "--connection 'sometimes'"),
        ({"budget": {"max_sessions_per_request": -0.1}}, "--max-sessions-per-request -0.1"),
        ({"budget": {"max_failed": -1}}, "--max-failed -1"),
        ({"budget": {"max_backends": 0}}, "--max-backends 0"),
    ],
)
def test_a_value_out_of_range_is_refused_naming_the_option(changes, says):
    with pytest.raises(CheckError, match=says.replace("(", r"\(")):
        budget = Budget(**changes.pop("budget", {}))
        CheckOptions(app="x", budget=budget, **changes)


def check(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([HEALTHZ, "check", *args], capture_output=True, text=True, timeout=240, cwd=cwd)


def _left(marker: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline:
                found.append(cmdline)
    return found


FLASK = ["--app", "gunicorn app:app -k gthread --threads 16 -w 2 -b {bind}", "--setup", "flask --app app init-db"]


def test_flask_sqlalchemy_defaults_break_the_budget_and_a_sized_pool_holds(tmp_path):
    project = flask_project(tmp_path / "shop")
    before = tree(project)
    common = [*FLASK, "--app-dir", str(project), "--python", str(VENV), "--path", "/health", "-c", "200"]
    # Flask-SQLAlchemy's QueuePool(5, overflow 10) under 16 threads a worker: overflow opened and closed.
    default = check(*common, "--json", "--junit-xml", str(tmp_path / "default.xml"))
    assert default.returncode == 1, default.stderr[-2000:]
    data = json.loads(default.stdout)
    assert data["sessions_per_request"] > 0.02 and data["requests"] >= 2000 and data["failed"] == 0
    assert "FAILED: sessions per request" in default.stderr
    assert ET.parse(tmp_path / "default.xml").getroot().get("failures") == "1"
    # The fix laid over their unchanged code: every engine it makes gets the sized pool.
    sized = check(*common, "--sqlalchemy-pool", "pool_size=16,max_overflow=0", "--json")
    assert sized.returncode == 0, sized.stdout + sized.stderr[-2000:]
    assert sized.stderr.startswith("healthz check: held:") and "(loopback)" in sized.stderr
    engines = json.loads(sized.stdout)["engines"]
    assert len({e["pid"] for e in engines}) >= 2, "each worker's engine recorded"
    assert {(e["pool"], e["pool_size"], e["max_overflow"]) for e in engines} == {("QueuePool", 16, 0)}
    assert {(e["pool"], e["pool_size"], e["max_overflow"]) for e in data["engines"]} == {("QueuePool", 5, 10)}
    assert _left(str(project)) == []
    assert tree(project) == before, "the team's project is never written (no __pycache__ either)"


def test_djangos_default_conn_max_age_0_breaks_the_budget(tmp_path):
    # The same project under gthread with CONN_MAX_AGE=600 holds: tests/lab/test_try_fixes.py.
    project = django_project(tmp_path / "mysite")
    before = tree(project)
    common = [
        "--app-dir",
        str(project),
        "--python",
        str(VENV),
        "--setup",
        "python manage.py migrate",
        "--path",
        "/health/",
    ]
    churn = check(
        "--app", "gunicorn mysite.wsgi:application -k eventlet -w 2 -b {bind}", *common, "-n", "800", "--json"
    )
    assert churn.returncode == 1, churn.stderr[-2000:]
    data = json.loads(churn.stdout)
    assert data["sessions_per_request"] > 0.9, "Django's default: a connection per request"
    assert data["stack"]["framework"] == "Django" and data["stack"]["django"]["conn_max_age"] == 0
    assert data["stack"]["gunicorn"]["worker_class"] == "eventlet"
    assert _left(str(project)) == []
    assert tree(project) == before, "migrate, gunicorn and the stack's reading wrote nothing in the project"


def _busy_port() -> tuple[socket.socket, int]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    return listener, listener.getsockname()[1]


def test_each_check_that_cannot_run_says_why_in_one_line_with_nothing_left(tmp_path):
    project = flask_project(tmp_path / "shop")
    base = ["--app-dir", str(project), "--python", str(VENV), "--path", "/health", "--ready-timeout", "5"]
    listener, port = _busy_port()
    cases = {
        "not found": (["--app", "gunicorn-nowhere app:app -b {bind}"], "gunicorn-nowhere not found"),
        "exits": (["--app", "python -c 'import sys; sys.exit(3)'"], "exited"),
        "never answers": (["--app", "python -c 'import time; time.sleep(60)'"], "did not answer"),
        "setup fails": ([*FLASK[:2], "--setup", "python -c 'import sys; sys.exit(1)'"], "setup"),
        "port in use": (["--app", f"gunicorn app:app -b 127.0.0.1:{port}"], "Address already in use"),
        "threshold": ([*FLASK, "--max-sessions-per-request", "11"], "--max-sessions-per-request 11"),
        "env": ([*FLASK, "--env", "NOEQUALS"], "--env 'NOEQUALS'"),
        "pool key": ([*FLASK, "--sqlalchemy-pool", "pool_sise=3"], "pool overlay 'pool_sise=3'"),
    }
    try:  # each check on a throwaway server of its own: four at a time
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = dict(zip(cases, pool.map(lambda args: check(*base, *args), [a for a, _ in cases.values()])))
        for name, (_, says) in cases.items():
            result = results[name]
            lines = [
                line
                for line in result.stdout.splitlines() + result.stderr.splitlines()
                if line.startswith("healthz check")
            ]
            assert result.returncode == 2, (name, result.stdout, result.stderr[-1500:])
            assert len(lines) == 1 and says in lines[0], (name, lines)
        assert _left(str(project)) == [] and not _left("time.sleep(60)")
    finally:
        listener.close()


def test_a_refused_check_leaves_no_temporary_folder(tmp_path, monkeypatch):
    from healthz.lab import check_run

    made = tmp_path / "healthz-check-x"
    monkeypatch.setattr(check_run.tempfile, "mkdtemp", lambda prefix: (made.mkdir(), str(made))[1])
    with pytest.raises(CheckError, match="app_dir .*: no such directory"):
        check_run.run_check(CheckOptions(app="gunicorn x:app -b {bind}", app_dir=tmp_path / "nowhere"))
    assert not made.exists()
