"""The service as a child process: ``gunicorn -c python:healthz.gunicorn_conf.<worker> healthz.wsgi:app``.

Started with an environment of its own, ready when ``/api/v1/livez/`` answers, stopped by its PID
(SIGTERM, then SIGKILL after a grace period) on every exit path.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from healthz.config import WORKER_CLASSES
from healthz.harness.process import ChildProcess, log_tail, read_log

#: Seconds a started gunicorn has to answer ``/api/v1/livez/``.
READY_TIMEOUT = 30.0
#: Seconds a started service then has to answer ``/api/v1/healthz/`` with 200 before a run's load.
HEALTHY_TIMEOUT = 20.0

# Run inside a network namespace: print the status, a newline, then the body.
_GET = """
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])) as r:
        print(r.status); print(r.read().decode(errors="replace"))
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode(errors="replace"))
except OSError as e:
    print(0); print(e)
"""


class ServiceError(RuntimeError):
    """gunicorn exited or never answered; the message carries the end of its log."""


def gunicorn_command(worker_class: str) -> list[str]:
    """The command line that serves the app with the packaged config ``healthz.gunicorn_conf.<worker_class>``;
    it runs from any directory, checkout or not."""
    if worker_class not in WORKER_CLASSES:
        raise ValueError(f"worker class {worker_class!r} is not one of {', '.join(WORKER_CLASSES)}")
    return [sys.executable, "-m", "gunicorn", "-c", f"python:healthz.gunicorn_conf.{worker_class}", "healthz.wsgi:app"]


class Service:
    """An HTTP service as our child process on ``host:port``, its output in ``logfile``: started by a
    subclass's :meth:`start`, probed with :meth:`get` from where its clients are (``client_prefix``,
    a network namespace, or here), stopped by :meth:`stop`."""

    name = "service"

    def __init__(
        self, logfile: Path, *, host: str, port: int, client_prefix: Sequence[str] = (), ready_timeout: float
    ) -> None:
        self.host, self.port = host, port
        self.logfile = Path(logfile)
        self.client_prefix = list(client_prefix)
        self.ready_timeout = ready_timeout
        self.child: ChildProcess | None = None

    @property
    def process(self) -> subprocess.Popen | None:
        """The running command (None before :meth:`start`)."""
        return self.child.process if self.child else None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def wait_for(self, path: str, timeout: float, request_timeout: float = 2.0) -> tuple[int, str]:
        """``GET path`` every 0.1 s until it answers 200 or ``timeout`` passes; the last answer
        (see :meth:`get`). :class:`ServiceError` with the log's end if the process exits meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process is None or self.process.poll() is not None:
                status = None if self.process is None else self.process.returncode
                raise ServiceError(f"{self.name} exited with status {status}: {self.log_tail()}")
            status, body = self.get(path, timeout=request_timeout)
            if status == 200 or time.monotonic() > deadline:
                return status, body
            time.sleep(0.1)

    def get(self, path: str, timeout: float = 2.0, base_url: str | None = None) -> tuple[int, str]:
        """``GET path`` from where the clients are (inside ``client_prefix``'s namespace when one is
        set), on :attr:`base_url` unless another is given: ``(status, body)``, or ``(0, reason)``
        when nothing answered."""
        url = (base_url or self.base_url) + path
        if self.client_prefix:
            try:
                result = subprocess.run(
                    [*self.client_prefix, sys.executable, "-c", _GET, url, str(timeout)],
                    capture_output=True,
                    text=True,
                    timeout=timeout + 10,
                )
            except subprocess.TimeoutExpired:
                return 0, "timed out"
            status, _, body = result.stdout.partition("\n")
            return (int(status), body) if status.isdigit() else (0, result.stderr.strip()[-200:])
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        except (urllib.error.URLError, OSError) as exc:
            return 0, str(exc)

    def stop(self) -> int | None:
        raise NotImplementedError

    def stop_after_load(self) -> int | None:
        """Stop it once the load has stopped (nothing in flight): as :meth:`stop` unless a kind knows quicker."""
        return self.stop()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def worker_pids(self) -> list[int]:
        """PIDs of the process's live children (gunicorn's workers)."""
        if self.pid is None:
            return []
        try:
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        except OSError:
            return []
        return [int(pid) for pid in children]

    def log_text(self) -> str:
        """The service's log; empty before it starts (its child process writes it)."""
        return read_log(self.logfile)

    def log_tail(self, lines: int = 15) -> str:
        """The last ``lines`` lines of the log, passwords masked."""
        return log_tail(self.logfile, lines)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class Gunicorn(Service):
    """gunicorn for ``worker_class`` on ``host:port``, its output in ``logfile``.

    ``env`` is laid over the current environment (``DATABASE_URL``, ``HEALTHZ_*``,
    ``GUNICORN_*``); ``command_prefix`` runs it inside another context (a network namespace),
    ``client_prefix`` is where its clients run (default: the same), used by :meth:`get`.
    """

    def __init__(
        self,
        worker_class: str,
        env: Mapping[str, str],
        logfile: Path,
        *,
        host: str = "127.0.0.1",
        port: int,
        command_prefix: Sequence[str] = (),
        client_prefix: Sequence[str] | None = None,
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        super().__init__(
            logfile,
            host=host,
            port=port,
            client_prefix=command_prefix if client_prefix is None else client_prefix,
            ready_timeout=ready_timeout,
        )
        self.worker_class = worker_class
        self.name = f"gunicorn ({worker_class})"
        self.env = {**os.environ, **env, "GUNICORN_BIND": f"{host}:{port}", "PYTHONUNBUFFERED": "1"}
        self.command = [*command_prefix, *gunicorn_command(worker_class)]

    @property
    def liveness_url(self) -> str | None:
        """The base URL of the liveness listener (``HEALTHZ_LIVENESS_BIND``), None without one."""
        address = self.env.get("HEALTHZ_LIVENESS_BIND")
        return f"http://{address}" if address else None

    def start(self) -> Gunicorn:
        """Start gunicorn and wait until it answers ``/api/v1/livez/``."""
        # SIGTERM is gunicorn's graceful stop (workers finish their requests, worker_exit closes the
        # pools); SIGINT would be its quick one.
        self.child = ChildProcess(
            self.command,
            self.logfile,
            name=self.name,
            env=self.env,
            stop_signals=(signal.SIGTERM, signal.SIGKILL),
            signal_group=False,
        ).start()
        status, _ = self.wait_for("/api/v1/livez/", self.ready_timeout)
        if status != 200:
            self.stop()
            raise ServiceError(f"{self.name} did not answer in {self.ready_timeout:.0f} s: {self.log_tail()}")
        self._wait_booted()
        return self

    def _wait_booted(self, timeout: float = 10.0) -> None:
        """Wait (at most ``timeout``) until every worker has run ``post_worker_init`` (its ``healthz
        worker PID: driver`` line): the first answers livez while the others may still be loading
        the app, and a worker stopped then sits out the whole graceful timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.child.running():
            workers, log = self.worker_pids(), self.log_text()
            if workers and all(f"healthz worker {pid}: driver" in log for pid in workers):
                return
            time.sleep(0.05)

    def stop(self, timeout: float = 15.0, *, quick: bool = False) -> int | None:
        """Stop gunicorn gracefully (SIGTERM: requests in flight finish), or with ``quick`` at once
        (SIGINT: gunicorn's quick shutdown; its workers still run ``worker_exit`` and close their
        pools), then its whole process group (a worker stuck in C code outlives its master) with
        SIGKILL after ``timeout``; return its status."""
        if self.child is None:
            return None
        return self.child.stop(timeout, signals=(signal.SIGINT, signal.SIGKILL) if quick else None)

    def stop_after_load(self) -> int | None:
        """At once: its workers still close their pools (the load has stopped; nothing is in flight)."""
        return self.stop(quick=True)
