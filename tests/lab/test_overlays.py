"""Overlays laid over a team's code from outside: the SQLAlchemy hook in a fresh interpreter (its pool
arguments win over the app's, each engine's real pool is recorded, the interpreter's own
sitecustomize still runs), and the parsing of a pool overlay."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from healthz.lab import overlays

APP = """
import sqlalchemy
from sqlalchemy import engine_from_config

first = sqlalchemy.create_engine("postgresql://team@localhost/shop", pool_size=5, max_overflow=10)
second = engine_from_config({"url": "postgresql://team@localhost/shop"}, prefix="")
print(type(first.pool).__name__, first.pool.size(), first.pool._max_overflow, second.pool.size())
"""


def run(tmp_path: Path, pool, extra_path: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if extra_path:
        env["PYTHONPATH"] = extra_path
    env.update(overlays.sqlalchemy_pool(tmp_path / "overlay", pool, env))
    done = subprocess.run([sys.executable, "-c", APP], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_pool_given_wins_over_the_apps_and_each_engine_is_recorded(tmp_path):
    assert run(tmp_path, {"pool_size": 16, "max_overflow": 0}) == "QueuePool 16 0 16"
    made = overlays.engines(tmp_path / "overlay")
    assert [(e["database"], e["pool_size"], e["max_overflow"]) for e in made] == [("shop", 16, 0), ("shop", 16, 0)]
    assert made[0]["overlaid"] == ["max_overflow", "pool_size"]


def test_without_a_pool_the_apps_own_is_only_recorded(tmp_path):
    assert run(tmp_path, None) == "QueuePool 5 10 5"
    assert [e["overlaid"] for e in overlays.engines(tmp_path / "overlay")] == [[], []]


def test_a_nullpool_overlay_drops_the_apps_queuepool_arguments(tmp_path):
    app = tmp_path / "null.py"
    app.write_text(
        "import sqlalchemy\n"
        "e = sqlalchemy.create_engine('postgresql://t@localhost/d', pool_size=5, max_overflow=10)\n"
        "print(type(e.pool).__name__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(overlays.sqlalchemy_pool(tmp_path / "overlay", {"poolclass": "NullPool"}, env))
    done = subprocess.run([sys.executable, str(app)], env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "NullPool", done.stderr


def test_the_interpreters_own_sitecustomize_still_runs(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "sitecustomize.py").write_text("import os\nos.environ['THEIR_SITECUSTOMIZE'] = 'ran'\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(theirs)
    env.update(overlays.sqlalchemy_pool(tmp_path / "overlay", {"pool_size": 3}, env))
    assert env["PYTHONPATH"] == f"{tmp_path / 'overlay'}:{theirs}"
    code = "import os; print(os.environ.get('THEIR_SITECUSTOMIZE'))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ran", done.stderr


def test_a_pool_overlay_is_parsed_and_checked():
    assert overlays.parse_pool("pool_size=16, max_overflow=0,pool_pre_ping=true") == {
        "pool_size": 16,
        "max_overflow": 0,
        "pool_pre_ping": True,
    }
    for bad, says in [
        ("pool_sise=3", "KEY one of"),
        ("pool_size=many", "expected int"),
        ("poolclass=FastPool", "poolclass='FastPool'"),
        ("pool_pre_ping=maybe", "expected bool"),
        ("", "at least one"),
    ]:
        with pytest.raises(overlays.OverlayError, match=says):
            overlays.parse_pool(bad)


DJANGO_SETTINGS = """
SECRET_KEY = "x"
INSTALLED_APPS = []
DATABASES = {
    "default": {"ENGINE": "django.db.backends.postgresql", "NAME": "shop", "CONN_MAX_AGE": 0},
    "replica": {"ENGINE": "django.db.backends.postgresql", "NAME": "shop", "OPTIONS": {"sslmode": "disable"}},
}
"""
DJANGO_APP = """
import os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "teamsettings")
from django.conf import settings
print(settings.DATABASES["default"]["CONN_MAX_AGE"], settings.DATABASES["replica"]["OPTIONS"])
"""


def django_run(tmp_path: Path, databases) -> str:
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    (project / "teamsettings.py").write_text(DJANGO_SETTINGS)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE")}
    env.update(overlays.lay(tmp_path / "overlay", env, django=databases))
    done = subprocess.run(
        [sys.executable, "-c", DJANGO_APP], env=env, cwd=project, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_djangos_databases_are_updated_after_the_teams_settings_load_and_what_it_got_is_recorded(tmp_path):
    pool = {"pool": {"max_size": 4}}
    assert django_run(tmp_path, {"CONN_MAX_AGE": 600, "OPTIONS": pool}) == (
        "600 {'sslmode': 'disable', 'pool': {'max_size': 4}}"  # OPTIONS merged, not replaced
    )
    (seen,) = overlays.django_settings(tmp_path / "overlay")
    assert seen["settings"] == "teamsettings" and seen["overlaid"] == ["CONN_MAX_AGE", "OPTIONS"]
    assert seen["databases"]["default"] == {"CONN_MAX_AGE": 600, "CONN_HEALTH_CHECKS": False, "pool": {"max_size": 4}}
    assert (
        overlays.not_applied(
            tmp_path / "overlay", pool=None, django={"CONN_MAX_AGE": 600}, gunicorn_args=None, gunicorn=None
        )
        is None
    )


def test_a_fix_that_did_not_reach_the_service_is_said_in_one_line(tmp_path):
    empty = tmp_path / "nothing-recorded"
    said = overlays.not_applied(empty, pool={"pool_size": 4}, django=None, gunicorn_args=None, gunicorn=None)
    assert said.startswith("sqlalchemy_pool did not apply") and "\n" not in said
    said = overlays.not_applied(empty, pool=None, django={"CONN_MAX_AGE": 600}, gunicorn_args=None, gunicorn=None)
    assert said.startswith("django_databases did not apply")
    args = "--worker-class gthread --threads 4"
    said = overlays.not_applied(empty, pool=None, django=None, gunicorn_args=args, gunicorn=None)
    assert "not gunicorn's" in said
    said = overlays.not_applied(
        empty, pool=None, django=None, gunicorn_args=args, gunicorn={"worker_class": "eventlet"}
    )
    assert "resolved worker_class eventlet for gthread" in said
    assert (
        overlays.not_applied(empty, pool=None, django=None, gunicorn_args=args, gunicorn={"worker_class": "gthread"})
        is None
    )


def test_gunicorn_args_go_last_on_a_gunicorn_command_and_into_its_environment(tmp_path):
    from healthz.lab.own_service import AppSpec

    spec = AppSpec("gunicorn app:app -k eventlet -b {bind}", gunicorn_args="--worker-class gthread --threads 4")
    assert spec.argv({"bind": "127.0.0.1:8000"})[-4:] == ["--worker-class", "gthread", "--threads", "4"]
    script = AppSpec("./serve.sh", gunicorn_args="--worker-class gthread")
    assert script.argv({}) == ["./serve.sh"]  # a script: GUNICORN_CMD_ARGS alone reaches the gunicorn it starts
    env = overlays.lay(tmp_path / "o", {"GUNICORN_CMD_ARGS": "--timeout 60"}, gunicorn_args="--worker-class gthread")
    assert env["GUNICORN_CMD_ARGS"] == "--timeout 60 --worker-class gthread"
