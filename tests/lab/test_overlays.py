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
