"""healthz.gunicorn_conf: every packaged config (and its checkout shim gunicorn_conf/*.py) passes
gunicorn's own check, and a bad setting stops gunicorn with one line before it binds."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import healthz.gunicorn_conf
from healthz.config import WORKER_CLASSES
from healthz.postgres import free_port

PACKAGE_DIR = Path(healthz.gunicorn_conf.__file__).parent
CHECKOUT = Path(__file__).resolve().parents[1]
CONF_FILES = sorted(p for p in PACKAGE_DIR.glob("*.py") if p.stem != "__init__")
SHIMS = sorted((CHECKOUT / "gunicorn_conf").glob("*.py"))


def gunicorn(*args, env=None, timeout=60, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "gunicorn", *args],
        cwd=cwd or CHECKOUT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def packaged(worker_class):
    """gunicorn's arguments for the packaged config and entry point, as a user outside a checkout types them."""
    return ["-c", f"python:healthz.gunicorn_conf.{worker_class}", "healthz.wsgi:app"]


def print_config(worker_class, env, cwd=None):
    result = gunicorn("--print-config", *packaged(worker_class), env=env, cwd=cwd)
    assert result.returncode == 0, result.stderr[-2000:]
    return {
        line.split("=")[0].strip(): line.split("=", 1)[1].strip() for line in result.stdout.splitlines() if "=" in line
    }


def test_one_config_and_one_shim_per_worker_class():
    assert sorted(p.stem for p in CONF_FILES) == sorted(WORKER_CLASSES)
    assert sorted(p.stem for p in SHIMS) == sorted(WORKER_CLASSES)


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_check_config_packaged_and_from_the_checkout(worker_class, database_url, tmp_path):
    result = gunicorn("--check-config", *packaged(worker_class), env={"DATABASE_URL": database_url}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    result = gunicorn(
        "--check-config", "wsgi:app", "-c", f"gunicorn_conf/{worker_class}.py", env={"DATABASE_URL": database_url}
    )
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_print_config_resolves_our_settings(worker_class, database_url, tmp_path):
    lines = print_config(
        worker_class, {"DATABASE_URL": database_url, "GUNICORN_WORKERS": "3", "GUNICORN_PORT": "8123"}, tmp_path
    )
    assert lines["worker_class"] == worker_class
    assert lines["workers"] == "3"
    assert lines["bind"] == "['127.0.0.1:8123']"
    assert lines["post_fork"] == "<post_fork()>"
    assert lines["threads"] == ("1" if worker_class == "sync" else "8")
    # gthread keeps no connection alive: a draining worker would cut the idle ones (docs/faults.md).
    assert lines["keepalive"] == ("0" if worker_class == "gthread" else "2")


@pytest.mark.parametrize(
    "env, bind, workers",
    [
        ({}, "['127.0.0.1:8000']", "2"),
        ({"PORT": "9001", "WEB_CONCURRENCY": "5"}, "['0.0.0.0:9001']", "5"),
        (
            {"PORT": "9001", "GUNICORN_PORT": "9002", "WEB_CONCURRENCY": "5", "GUNICORN_WORKERS": "3"},
            "['127.0.0.1:9002']",
            "3",
        ),
        ({"PORT": "9001", "GUNICORN_BIND": "unix:/tmp/healthz.sock"}, "['unix:/tmp/healthz.sock']", "2"),
    ],
    ids=["defaults", "platform", "gunicorn-first", "bind-first"],
)
def test_port_and_web_concurrency_as_platforms_set_them(env, bind, workers, database_url, monkeypatch):
    for variable in ("PORT", "WEB_CONCURRENCY", "GUNICORN_PORT", "GUNICORN_WORKERS", "GUNICORN_BIND"):
        monkeypatch.delenv(variable, raising=False)
    lines = print_config("gthread", {"DATABASE_URL": database_url, **env})
    assert (lines["bind"], lines["workers"]) == (bind, workers)


@pytest.mark.parametrize(
    "variable, value, expected",
    [
        ("HEALTHZ_POOL_SIZE", "abc", "HEALTHZ_POOL_SIZE='abc' is not accepted: expected an integer >= 0"),
        (
            "HEALTHZ_POOL_CLASS",
            "Bogus",
            "HEALTHZ_POOL_CLASS='Bogus' is not accepted: expected one of QueuePool, NullPool, SingletonThreadPool",
        ),
        ("HEALTHZ_MAX_OVERFLOW", "-3", "HEALTHZ_MAX_OVERFLOW='-3' is not accepted: expected an integer >= -1"),
        ("HEALTHZ_POOL_TIMEOUT", "-1", "HEALTHZ_POOL_TIMEOUT='-1' is not accepted: expected a number of seconds >= 0"),
        (
            "HEALTHZ_GREEN_DRIVER",
            "sometimes",
            "HEALTHZ_GREEN_DRIVER='sometimes' is not accepted: expected one of auto, on, off",
        ),
        ("DATABASE_URL", "mysql://u:topsecret@h/d", "DATABASE_URL='mysql://u:***@h/d' is not accepted"),
        ("GUNICORN_WORKERS", "zero", "GUNICORN_WORKERS='zero' is not accepted: expected an integer >= 1"),
        ("GUNICORN_THREADS", "0", "GUNICORN_THREADS='0' is not accepted: expected an integer >= 1"),
        ("PORT", "http", "PORT='http' is not accepted: expected a port from 1 to 65535"),
        ("PORT", "70000", "PORT='70000' is not accepted: expected a port from 1 to 65535"),
        ("WEB_CONCURRENCY", "0", "WEB_CONCURRENCY='0' is not accepted: expected an integer >= 1"),
        (
            "HEALTHZ_ERROR_STATUS",
            "200",
            "HEALTHZ_ERROR_STATUS='200' is not accepted: expected an HTTP status from 400 to 599",
        ),
    ],
)
@pytest.mark.parametrize("worker_class", ["eventlet", "gthread"])
def test_bad_setting_stops_gunicorn_before_it_binds(variable, value, expected, worker_class, database_url):
    port = free_port()
    env = {"DATABASE_URL": database_url, "GUNICORN_BIND": f"127.0.0.1:{port}", variable: value}
    if variable == "PORT":
        env.pop("GUNICORN_BIND")
    result = gunicorn(*packaged(worker_class), env=env, timeout=30)
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
    result = gunicorn(*packaged(worker_class), env=env, timeout=30)
    assert result.returncode == 2
    assert (
        f"HEALTHZ_GREEN_DRIVER='on' is not accepted: expected auto or off for the {worker_class} worker"
        in result.stderr
    )


def test_psycopg_3_is_refused_under_eventlet_and_with_psycogreen(database_url):
    env = {"DATABASE_URL": database_url, "HEALTHZ_DRIVER": "psycopg", "GUNICORN_PORT": str(free_port())}
    result = gunicorn(*packaged("eventlet"), env=env, timeout=30)
    assert result.returncode == 2 and "Listening at" not in result.stderr
    assert (
        "HEALTHZ_DRIVER='psycopg' is not accepted: expected psycopg2 under eventlet (psycopg 3 does not support eventlet)"
        in result.stderr
    )
    result = gunicorn(*packaged("gevent"), env={**env, "HEALTHZ_GREEN_DRIVER": "on"}, timeout=30)
    assert result.returncode == 2 and "psycogreen patches psycopg2 only" in result.stderr


def test_every_conf_file_says_what_it_is_for():
    for conf in CONF_FILES:
        text = conf.read_text()
        assert text.startswith('"""') and conf.stem in text.split('"""')[1], conf
        assert f'worker_class = "{conf.stem}"' in text
    for shim in SHIMS:
        assert f"from healthz.gunicorn_conf.{shim.stem} import *" in shim.read_text()
