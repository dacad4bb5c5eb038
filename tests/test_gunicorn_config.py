"""gunicorn_conf/*.py: every file passes gunicorn's own check, and a bad setting stops gunicorn
with one line before it binds."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from healthz.lab.postgres import free_port
from healthz.lab.service import PROJECT_ROOT, WORKER_CLASSES

CONF_FILES = sorted((PROJECT_ROOT / "gunicorn_conf").glob("*.py"))


def gunicorn(*args, env=None, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "gunicorn", *args], cwd=PROJECT_ROOT, env={**os.environ, **(env or {})},
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_one_file_per_worker_class():
    assert sorted(p.stem for p in CONF_FILES) == sorted(WORKER_CLASSES)


@pytest.mark.parametrize("conf", CONF_FILES, ids=lambda p: p.stem)
def test_check_config(conf, database_url):
    result = gunicorn("--check-config", "wsgi:app", "-c", str(conf), env={"DATABASE_URL": database_url})
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("conf", CONF_FILES, ids=lambda p: p.stem)
def test_print_config_resolves_our_settings(conf, database_url):
    env = {"DATABASE_URL": database_url, "GUNICORN_WORKERS": "3", "GUNICORN_PORT": "8123"}
    result = gunicorn("--print-config", "wsgi:app", "-c", str(conf), env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = {line.split("=")[0].strip(): line.split("=", 1)[1].strip() for line in result.stdout.splitlines() if "=" in line}
    assert lines["worker_class"] == conf.stem
    assert lines["workers"] == "3"
    assert lines["bind"] == "['127.0.0.1:8123']"
    assert lines["post_fork"] == "<post_fork()>"
    assert lines["threads"] == ("1" if conf.stem == "sync" else "8")


@pytest.mark.parametrize(
    "variable, value, expected",
    [
        ("HEALTHZ_POOL_SIZE", "abc", "HEALTHZ_POOL_SIZE='abc' is not accepted: expected an integer >= 0"),
        ("HEALTHZ_POOL_CLASS", "Bogus", "HEALTHZ_POOL_CLASS='Bogus' is not accepted: expected one of QueuePool, NullPool, SingletonThreadPool"),
        ("HEALTHZ_MAX_OVERFLOW", "-3", "HEALTHZ_MAX_OVERFLOW='-3' is not accepted: expected an integer >= -1"),
        ("HEALTHZ_POOL_TIMEOUT", "-1", "HEALTHZ_POOL_TIMEOUT='-1' is not accepted: expected a number of seconds >= 0"),
        ("HEALTHZ_GREEN_DRIVER", "sometimes", "HEALTHZ_GREEN_DRIVER='sometimes' is not accepted: expected one of auto, on, off"),
        ("DATABASE_URL", "mysql://u:topsecret@h/d", "DATABASE_URL='mysql://u:***@h/d' is not accepted"),
        ("GUNICORN_WORKERS", "zero", "GUNICORN_WORKERS='zero' is not accepted: expected an integer >= 1"),
        ("GUNICORN_THREADS", "0", "GUNICORN_THREADS='0' is not accepted: expected an integer >= 1"),
    ],
)
@pytest.mark.parametrize("worker_class", ["eventlet", "gthread"])
def test_bad_setting_stops_gunicorn_before_it_binds(variable, value, expected, worker_class, database_url):
    port = free_port()
    env = {"DATABASE_URL": database_url, "GUNICORN_BIND": f"127.0.0.1:{port}", variable: value}
    result = gunicorn("wsgi:app", "-c", str(PROJECT_ROOT / "gunicorn_conf" / f"{worker_class}.py"), env=env, timeout=30)
    assert result.returncode == 2
    ours = [line for line in result.stderr.splitlines() if line.startswith("healthz:")]
    assert len(ours) == 1 and expected in ours[0], result.stderr
    assert "Traceback" not in result.stderr and "Listening at" not in result.stderr
    assert "topsecret" not in result.stderr
    with socket.socket() as sock:  # nobody ever bound it
        sock.bind(("127.0.0.1", port))


@pytest.mark.parametrize("worker_class", ["gthread", "sync"])
def test_green_driver_on_is_refused_for_a_thread_worker(worker_class, database_url):
    env = {"DATABASE_URL": database_url, "HEALTHZ_GREEN_DRIVER": "on", "GUNICORN_PORT": str(free_port())}
    result = gunicorn("wsgi:app", "-c", str(PROJECT_ROOT / "gunicorn_conf" / f"{worker_class}.py"), env=env, timeout=30)
    assert result.returncode == 2
    assert f"HEALTHZ_GREEN_DRIVER='on' is not accepted: expected auto or off for the {worker_class} worker" in result.stderr


def test_every_conf_file_says_what_it_is_for():
    for conf in CONF_FILES:
        text = conf.read_text()
        assert text.startswith('"""') and conf.stem in text.split('"""')[1], conf
        assert f'worker_class = "{conf.stem}"' in text
