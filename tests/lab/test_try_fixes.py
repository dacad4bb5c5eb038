"""``try_fixes`` on projects a team writes (tests/projects.py: managed models, a real migration, their
framework's defaults): their code as it is, then each fix laid over it at the step it failed, on a
real PostgreSQL, real gunicorn and locust; the answer names a fix that held on their code, and
nothing in their project or venv is written."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from projects import django_project, flask_project, listing, tree

from healthz.lab import own_answer, report, verdict
from healthz.lab.runner import Lab, LabConfig, Progress
from healthz.lab.scenarios import own_service, select
from healthz.lab.topology import lab_namespaces
from healthz.plan import DatabaseLimits

VENV = Path(sys.prefix)  # the test's venv: Django 5.2 with psycopg 3 and its pool, Flask-SQLAlchemy, gunicorn


def try_fixes(tmp_path: Path, project: Path, command: str, setup: str, path: str, topology: str):
    """Their code at 150 clients for 2 s, then its fixes; the run's data, its answer and its folder
    (the report's files: test_django_report)."""
    before, venv_before = tree(project), listing(VENV)
    scenario = own_service(command, path, app_dir=project, python=VENV, setup=setup, try_fixes=True)
    config = LabConfig(
        scenarios=select([], [], [scenario]),
        concurrency=[150],
        duration=2,
        topology=topology,
        ports=1000,
        output=tmp_path / "out",
    )
    Lab(config, Progress(io.StringIO())).run()
    assert tree(project) == before, "the team's project was written"
    assert listing(VENV) == venv_before, "the team's venv was written"
    assert not [ns for ns in lab_namespaces() if f"-{os.getpid()}-" in ns]
    data = report.read(config.output)
    limits = DatabaseLimits.from_meta(data["meta"])
    (said,) = own_answer.answers(data["meta"], data["results"], verdict.judge_all(data["results"], limits), limits)
    return data, said, config.output


def _fixes_ran_where_it_broke(data, said, expected: list[str]) -> dict:
    plan = data["meta"]["fixes"]["app"]
    assert plan["steps"] == [150] and [f["name"] for f in plan["fixes"]] == expected
    runs = {r.scenario: r for r in data["results"]}
    assert runs["app"].fix is None and all(runs[f"app+{n}"].fix["of"] == "app" for n in expected)
    assert said.as_is.outcome in (verdict.Outcome.FAILED, verdict.Outcome.AT_RISK), said.as_is
    assert said.chosen is not None and said.chosen.held and not said.chosen.fix.knob, said.lines()
    assert top_spr(said) < 0.02  # the fix keeps its connections: no churn left to judge
    return runs


def top_spr(said) -> float:
    return max(r.sessions_per_request for r in said.chosen.runs)


# On loopback, where each step is judged by its sessions per request; in netns, test_django_report's
# example tries the same fixes on Django's code (the runner's topology is the one code path).
def test_django_as_it_is_churns_and_a_fix_laid_over_its_unchanged_code_holds(tmp_path):
    project = django_project(tmp_path / "mysite")
    data, said, out = try_fixes(
        tmp_path,
        project,
        "gunicorn mysite.wsgi:application -k eventlet -w 2 -b {bind}",
        "python manage.py migrate",
        "/health/",
        "loopback",
    )
    expected = ["conn-max-age", "django-pool", "pgbouncer", "gthread-conn-max-age"]
    runs = _fixes_ran_where_it_broke(data, said, expected)
    assert data["meta"]["stacks"]["app"]["framework"] == "Django"
    # The report's first try: under eventlet, Django closes each greenlet's connection, so it still churns.
    assert runs["app+conn-max-age"].sessions_per_request > 0.5
    assert said.chosen.fix.name in ("django-pool", "pgbouncer", "gthread-conn-max-age")
    # PgBouncer in front of their unchanged code: its address reached their settings through the env.
    bounced = runs["app+pgbouncer"]
    assert bounced.error is None and bounced.pgbouncer.placement == "app-unix" and bounced.pgbouncer.logins > 0
    # What each process of the fixed service loaded: the change laid over its own settings module.
    seen = (out / runs[f"app+{said.chosen.fix.name}"].run_dir / "overlay" / "django.jsonl").read_text()
    assert '"settings": "mysite.settings"' in seen
    rerun = said.recommended()
    assert "django_databases" in rerun and "try_fixes" not in rerun
    assert said.lines()[0].startswith("Does pooling alone fix it for mysite?")


def test_flask_sqlalchemys_default_pool_churns_and_a_bounded_pool_laid_over_it_holds(tmp_path):
    project = flask_project(tmp_path / "shop")
    data, said, out = try_fixes(
        tmp_path,
        project,
        "gunicorn app:app -k gthread --threads 16 -w 2 -b {bind}",
        "flask --app app init-db",
        "/health",
        "loopback",
    )
    expected = ["sqlalchemy-pool"]
    runs = _fixes_ran_where_it_broke(data, said, expected)
    assert said.reply is own_answer.OwnReply.FIXED and said.chosen.fix.name == "sqlalchemy-pool"
    # What its workers made as it is, read from them: Flask-SQLAlchemy's default pool.
    shapes = {(e["pool"], e["pool_size"], e["max_overflow"]) for e in data["meta"]["stacks"]["app"]["engines"]}
    assert shapes == {("QueuePool", 5, 10)}
    engines = (out / runs["app+sqlalchemy-pool"].run_dir / "overlay" / "engines.jsonl").read_text()
    assert f'"pool_size": {data["meta"]["fixes"]["app"]["pool_size"]}, "max_overflow": 0' in engines
    (snippet,) = said.snippets()
    assert snippet.code.startswith('app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_size": ')
    assert any(s["title"].startswith("gthread") and "already" in s["reason"] for s in said.skipped)


def test_an_unknown_framework_runs_as_it_is_and_says_no_fix_was_tried(tmp_path):
    project = tmp_path / "plain"
    project.mkdir()
    (project / "serve.py").write_text(
        "import os, psycopg2\n"
        "def application(environ, start_response):\n"
        "    psycopg2.connect(os.environ['DATABASE_URL']).close()\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'ok']\n"
    )
    data, said, _ = try_fixes(tmp_path, project, "gunicorn serve:application -w 2 -b {bind}", None, "/", "loopback")
    assert said.reply is own_answer.OwnReply.NOT_TRIED and said.tried == ()
    assert "framework unknown" in said.skipped[0]["reason"] and "framework unknown" in said.headline()
    assert [r.scenario for r in data["results"]] == ["app"]


def test_try_fixes_without_an_app_is_refused_in_one_line():
    done = subprocess.run(
        [sys.executable, "-m", "healthz", "lab", "run", "--try-fixes", "-s", "eventlet-nullpool"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "--try-fixes describe(s) --app's service" in done.stderr


def test_a_django_project_whose_settings_cannot_be_imported_is_one_line_and_no_fix_runs(tmp_path):
    project = django_project(tmp_path / "mysite")
    settings = project / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + "\nimport no_such_module\n")
    before = tree(project)
    scenario = own_service(
        "gunicorn mysite.wsgi:application -w 2 -b {bind}",
        "/health/",
        app_dir=project,
        python=VENV,
        setup="python manage.py migrate",
        try_fixes=True,
    )
    config = LabConfig(scenarios=[scenario], concurrency=[20], duration=2, output=tmp_path / "out", doctor=False)
    lab = Lab(config, Progress(io.StringIO()))
    (run,) = lab.run()
    assert run.error is not None and "\n" not in run.error and "No module named 'no_such_module'" in run.error
    assert lab.meta["fixes"]["app"]["why"] == "it was not measured as it is" and lab.meta["fixes"]["app"]["fixes"] == []
    assert tree(project) == before
