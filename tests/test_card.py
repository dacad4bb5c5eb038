"""The project's card, as a user types it in a checkout: ``gunicorn wsgi:app`` with only
``DATABASE_URL`` set, curl, and ``locust -f locustfiles/healthz.py --host URL`` with locust's own
options and ours; the README's first lines show them."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import wait_until

from healthz.postgres import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _served(tmp_path, database_url, port):
    """``gunicorn wsgi:app`` from the checkout with DATABASE_URL and PATH alone (the bind through
    gunicorn's own GUNICORN_CMD_ARGS, so parallel runs do not share :8000)."""
    env = {
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "DATABASE_URL": database_url,
        "GUNICORN_CMD_ARGS": f"--bind 127.0.0.1:{port}",
    }
    log = open(tmp_path / "gunicorn.log", "wb")  # noqa: SIM115 (closed with the process)
    process = subprocess.Popen(["gunicorn", "wsgi:app"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    return process, log


def _curl(url: str) -> str:
    return subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url], capture_output=True, text=True, timeout=10
    ).stdout


@pytest.fixture
def card_service(tmp_path, database_url):
    port = free_port()
    process, log = _served(tmp_path, database_url, port)
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: _curl(url + "/api/v1/livez/") == "200", timeout=20), (
            tmp_path / "gunicorn.log"
        ).read_text()
        yield url
    finally:
        process.terminate()
        process.wait(15)
        log.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_gunicorn_wsgi_app_serves_with_database_url_alone_and_the_locustfile_shim_loads_it(card_service, tmp_path):
    assert _curl(card_service + "/api/v1/healthz/") == "200"
    began = time.monotonic()
    result = subprocess.run(
        [
            str(BIN / "locust"),
            "-f",
            "locustfiles/healthz.py",
            "--host",
            card_service,
            "--headless",
            "-u",
            "4",
            "-r",
            "4",
            "-t",
            "3s",
            "--csv",
            str(tmp_path / "card"),
            "--html",
            str(tmp_path / "card.html"),
            "--connection",
            "close",
            "--max-requests",
            "60",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "card_stats.csv", newline="") as fh:
        rows = {row["Name"]: row for row in csv.DictReader(fh)}
    healthz = rows["/api/v1/healthz/"]
    # Our --max-requests stopped it before locust's -t; every request answered 200.
    assert 60 <= int(healthz["Request Count"]) <= 64 and int(healthz["Failure Count"]) == 0
    assert time.monotonic() - began < 30
    assert "/api/v1/healthz/" in (tmp_path / "card.html").read_text()


def test_the_shim_lists_the_user_in_the_web_ui_s_way(tmp_path):
    """``--list`` loads the file as locust's web UI does, from the checkout or any folder."""
    result = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "healthz.py"), "--list"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "HealthzUser" in result.stdout


def test_the_readme_opens_with_the_four_card_commands():
    head = "\n".join((ROOT / "README.md").read_text().splitlines()[:30])
    for command in (
        r"gunicorn wsgi:app",
        r"curl [^\n]*/api/v1/healthz/",
        r"locust -f locustfiles/healthz\.py --host",
        r"pytest",
    ):
        assert re.search(command, head), command
