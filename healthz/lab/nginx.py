"""nginx as the buffering proxy in front of gunicorn: it reads a client's whole request before it
opens a connection to gunicorn, so a slow or idle client holds one of nginx's connections (thousands,
on an event loop) instead of one of gunicorn's threads. gunicorn's own docs ask for such a proxy in
front of its sync and gthread workers.

:func:`site` is the ``server`` block the deployment files ship (deploy/nginx/healthz.conf) and the
lab runs; :class:`Nginx` runs it in front of a service for the ``idle-clients`` fault. nginx comes
from ``$NGINX``, ``PATH``, or Debian's package fetched into ``.venv/nginx`` without root
(:mod:`healthz.lab.debian`).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path

from healthz.harness.process import ChildProcess, ProcessError
from healthz.lab import debian
from healthz.postgres import free_port

PACKAGES = ("nginx",)
#: Seconds a client gets to send its request's headers (nginx's default is 60): a slow client then
#: holds one of nginx's connections for this long, and none of gunicorn's.
CLIENT_HEADER_TIMEOUT = 10
#: Connections one nginx worker keeps open: clients and upstream together.
WORKER_CONNECTIONS = 16384


class NginxError(RuntimeError):
    """nginx could not be found or started; the message says why."""


def find_program() -> debian.Program:
    """nginx to run: ``$NGINX``, ``PATH`` (and ``/usr/sbin``), or Debian's package fetched."""
    try:
        return debian.find("nginx", variable="NGINX", packages=PACKAGES, binary="usr/sbin/nginx")
    except debian.FetchError as exc:
        raise NginxError(str(exc)) from None


def site(listen: str, upstream: str) -> str:
    """The ``server`` block (and its ``upstream``) that puts nginx in front of gunicorn at
    ``upstream`` (``host:port``), listening on ``listen``: requests buffered whole before they are
    passed on, the client's address passed in ``X-Forwarded-For``."""
    return "\n".join(
        [
            "upstream healthz {",
            f"    server {upstream};",
            "}",
            "server {",
            f"    listen {listen};",
            f"    client_header_timeout {CLIENT_HEADER_TIMEOUT}s;  # a slow client waits here, not in a gunicorn thread",
            "    client_body_timeout 10s;",
            "    location / {",
            "        proxy_pass http://healthz;",
            "        proxy_request_buffering on;  # the whole request before gunicorn is asked (nginx's default)",
            "        proxy_buffering on;  # and the whole answer taken at once: a slow reader holds nginx",
            "        proxy_set_header Host $host;",
            "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
            "        proxy_set_header X-Forwarded-Proto $scheme;",
            "    }",
            "}",
            "",
        ]
    )


def config(directory: Path, listen: str, upstream: str) -> str:
    """A whole nginx.conf for :func:`site`, every path under ``directory`` (no root needed)."""
    user = "user root;\n" if os.geteuid() == 0 else ""  # else its workers become nobody, who cannot read directory
    temp = "".join(
        f"    {kind}_temp_path {directory}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    body = "\n".join("    " + line if line else line for line in site(listen, upstream).splitlines())
    return (
        f"{user}worker_processes 1;\npid {directory}/nginx.pid;\nerror_log {directory}/error.log warn;\n"
        f"worker_rlimit_nofile {2 * WORKER_CONNECTIONS};\n"
        f"events {{\n    worker_connections {WORKER_CONNECTIONS};\n}}\n"
        f"http {{\n    access_log off;\n{temp}{body}\n}}\n"
    )


class Nginx:
    """nginx in front of ``upstream`` (``host:port``), listening on ``listen_host`` (a free port, or
    8080 inside a namespace, where the lab owns every port), run with ``command_prefix``."""

    def __init__(
        self,
        upstream: str,
        listen_host: str,
        *,
        command_prefix: Sequence[str] = (),
        program: debian.Program | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        self.upstream, self.listen_host = upstream, listen_host
        self.listen_port = 8080 if command_prefix else free_port(listen_host)
        self.command_prefix = list(command_prefix)
        self.program = program or find_program()
        self.start_timeout = start_timeout
        self.directory: Path | None = None
        self.child: ChildProcess | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.listen_host}:{self.listen_port}"

    def start(self) -> Nginx:
        """Write the configuration, start nginx in the foreground and wait until it listens."""
        self.directory = Path(tempfile.mkdtemp(prefix="healthz-nginx-"))
        conf = self.directory / "nginx.conf"
        conf.write_text(config(self.directory, f"{self.listen_host}:{self.listen_port}", self.upstream))
        command = [
            *self.program.command,
            "-p",
            str(self.directory),
            "-c",
            str(conf),
            "-e",
            str(self.directory / "error.log"),
        ]
        self.child = ChildProcess(
            [*self.command_prefix, *command, "-g", "daemon off;"],
            self.directory / "stdout.log",
            name="nginx",
            env={**os.environ, **self.program.env},
            cwd=self.directory,
            stop_signals=(signal.SIGQUIT, signal.SIGTERM, signal.SIGKILL),  # SIGQUIT: nginx's graceful stop
            signal_group=False,
        )
        try:
            self.child.start()
            self.child.wait_ready(self._listening, self.start_timeout)
        except ProcessError as exc:
            tail = self.log_tail()
            self.stop()
            raise NginxError(f"nginx did not start: {exc}; {tail}") from None
        return self

    def _listening(self) -> bool:
        if not self.command_prefix:
            try:
                socket.create_connection((self.listen_host, self.listen_port), timeout=0.5).close()
            except OSError:
                return False
            return True
        return self.directory is not None and (self.directory / "nginx.pid").exists()

    def log_tail(self, lines: int = 10) -> str:
        if self.directory is None:
            return ""
        texts = []
        for name in ("stdout.log", "error.log"):
            path = self.directory / name
            if path.exists():
                texts.append(path.read_text(errors="replace"))
        return "\n".join("".join(texts).splitlines()[-lines:])

    def stop(self) -> None:
        """SIGQUIT (nginx's graceful stop), then SIGTERM and SIGKILL; then the directory is removed."""
        if self.child is not None:
            self.child.stop(grace=3)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
