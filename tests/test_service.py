"""The service as a child process: started, ready, stopped by PID, failures reported."""

from __future__ import annotations

import pytest

from healthz.postgres import free_port
from healthz.service import Gunicorn, ServiceError, gunicorn_command


def test_start_and_stop(tmp_path, database_url):
    server = Gunicorn(
        "gthread", {"DATABASE_URL": database_url, "GUNICORN_WORKERS": "2"}, tmp_path / "g.log", port=free_port()
    )
    with server:
        assert len(server.worker_pids()) == 2
        pid = server.pid
    assert server.process.returncode == 0
    assert "Shutting down: Master" in server.log_text()
    with pytest.raises(ProcessLookupError):
        import os

        os.kill(pid, 0)


def test_a_server_that_cannot_start_raises_with_its_log(tmp_path, database_url):
    server = Gunicorn(
        "sync", {"DATABASE_URL": database_url, "HEALTHZ_POOL_SIZE": "many"}, tmp_path / "g.log", port=free_port()
    )
    with pytest.raises(ServiceError, match="HEALTHZ_POOL_SIZE='many' is not accepted"):
        server.start()


def test_unknown_worker_class():
    with pytest.raises(ValueError, match="eventlet, gevent, gthread, sync"):
        gunicorn_command("tornado")
