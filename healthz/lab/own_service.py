"""The team's own service in the lab: a command that serves HTTP (their gunicorn command, uvicorn,
anything), started where the lab's Flask service runs, with the lab's database handed to it.

:class:`AppSpec` is what a scenario says (``app``, ``app_dir``, ``env``, ``setup``, ``path``,
``ready_path``, ``python``); :class:`AppService` runs it in a process group of its own, so stopping it
stops everything it started; :func:`run_setup` runs its ``setup`` once. :class:`RunningService` is
one the lab does not start (``--target``). Placeholders in ``app``,
``env`` and ``setup`` (``{port}``, ``{db_host}``...) are filled from :func:`placeholders`; a literal
brace is written twice (``{{``).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import string
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url

from healthz.config import mask_password
from healthz.harness.process import ChildProcess, ProcessError
from healthz.lab import overlays
from healthz.lab.stack import script_python, wsgi_module
from healthz.service import READY_TIMEOUT, Service, ServiceError

#: Every placeholder ``app``, ``env`` and ``setup`` may use.
PLACEHOLDERS = (
    "host",
    "port",
    "bind",
    "database_url",
    "db_host",
    "db_port",
    "db_name",
    "db_user",
    "db_password",
    "python",
)
#: The health endpoint of the report's service, and of ours.
DEFAULT_PATH = "/api/v1/healthz/"
#: gunicorn's line for each worker it starts.
BOOTING = "Booting worker with pid"
#: Seconds ``setup`` may take.
SETUP_TIMEOUT = 300.0
#: Seconds between SIGINT, SIGTERM and SIGKILL to the service's process group. gunicorn exits at
#: once on SIGINT; on SIGTERM, eventlet workers sit out ``graceful_timeout`` (30 s by default).
STOP_GRACE = 5.0


class AppSpecError(ValueError):
    """An ``app`` scenario's keys are wrong; the message names the key and what is accepted."""


def _fields(template: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise AppSpecError(f"{template!r}: {exc} (write a literal brace twice: {{{{ or }}}})") from None


def _check_template(key: str, template: str) -> None:
    unknown = sorted({name for name in _fields(template) if name not in PLACEHOLDERS})
    if unknown:
        raise AppSpecError(
            f"{key} {template!r}: unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)}; "
            f"accepted: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}"
        )


@dataclasses.dataclass(frozen=True)
class AppSpec:
    """A service the lab starts: ``command`` (split like a shell would, not run by one) in
    ``app_dir`` with ``env`` laid over the lab's own variables, ``setup`` run once before its
    scenario's first step, ``path`` the endpoint the load calls and ``ready_path`` the one that must
    answer 200 before it (within ``ready_timeout`` seconds of the start), ``python`` an interpreter or a
    venv whose ``bin/`` goes first on ``PATH``."""

    command: str
    app_dir: Path | None = None
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    setup: str | None = None
    path: str = DEFAULT_PATH
    ready_path: str | None = None
    python: Path | None = None
    ready_timeout: float = READY_TIMEOUT
    sqlalchemy_pool: Mapping[str, Any] | None = None
    django_databases: Mapping[str, Any] | None = None
    gunicorn_args: str | None = None
    try_fixes: bool = False

    def __post_init__(self) -> None:
        try:
            if self.sqlalchemy_pool is not None:
                object.__setattr__(self, "sqlalchemy_pool", overlays.check_pool(self.sqlalchemy_pool))
            if self.django_databases is not None:
                object.__setattr__(self, "django_databases", overlays.check_django(self.django_databases))
        except overlays.OverlayError as exc:
            raise AppSpecError(str(exc)) from None
        if self.gunicorn_args is not None:
            try:
                shlex.split(str(self.gunicorn_args))
            except ValueError as exc:
                raise AppSpecError(f"gunicorn_args {self.gunicorn_args!r}: {exc}") from None
        if not isinstance(self.try_fixes, bool):
            raise AppSpecError(f"try_fixes {self.try_fixes!r}: expected true or false")
        if not isinstance(self.ready_timeout, (int, float)) or not 1 <= self.ready_timeout <= 600:
            raise AppSpecError(f"ready_timeout {self.ready_timeout!r}: expected seconds from 1 to 600")
        if not isinstance(self.command, str) or not self.command.strip():
            raise AppSpecError("app: expected the command that serves HTTP, such as 'gunicorn myapp.wsgi'")
        _check_template("app", self.command)
        try:
            shlex.split(self.command)
        except ValueError as exc:
            raise AppSpecError(f"app {self.command!r}: {exc}") from None
        if not isinstance(self.env, Mapping) or not all(isinstance(v, (str, int)) for v in self.env.values()):
            raise AppSpecError('env: expected a table of strings, such as { CONN_MAX_AGE = "0" }')
        for name, value in self.env.items():
            _check_template(f"env.{name}", str(value))
        if self.setup is not None:
            _check_template("setup", self.setup)
        for key in ("path", "ready_path"):
            value = getattr(self, key)
            if value is not None and not (isinstance(value, str) and value.startswith("/")):
                raise AppSpecError(f"{key} {value!r}: expected a path starting with /, such as /api/v1/healthz/")
        if self.app_dir is not None and not Path(self.app_dir).is_dir():
            raise AppSpecError(f"app_dir {self.app_dir}: no such directory")
        if self.python is not None:
            try:
                found = self.bin_dir
            except OSError as exc:  # a venv this user may not read
                raise AppSpecError(f"python {self.python}: cannot be read ({exc.strerror})") from None
            if found is None:
                raise AppSpecError(f"python {self.python}: neither a venv (with bin/python) nor a Python interpreter")

    @property
    def ready(self) -> str:
        return self.ready_path or self.path

    @property
    def is_gunicorn(self) -> bool:
        """Whether its command is gunicorn's (read from its words, whatever the placeholders become)."""
        return wsgi_module(self.argv(dict.fromkeys(PLACEHOLDERS, "x"))) is not None

    @property
    def bin_dir(self) -> Path | None:
        """The ``bin/`` that ``python`` names: the venv's, or the interpreter's own directory."""
        if self.python is None:
            return None
        python = Path(self.python)
        if (python / "bin" / "python").exists():
            return python / "bin"
        return python.parent if python.is_file() and os.access(python, os.X_OK) else None

    def environment(self, values: Mapping[str, str], base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The service's environment: ``base`` (default: ours), the libpq variables, ``DATABASE_URL``
        and ``PORT`` from ``values``, then ``env`` with its placeholders filled."""
        env = dict(os.environ if base is None else base)
        env.update(
            {
                "DATABASE_URL": values["database_url"],
                "PGHOST": values["db_host"],
                "PGPORT": values["db_port"],
                "PGUSER": values["db_user"],
                "PGPASSWORD": values["db_password"],
                "PGDATABASE": values["db_name"],
                "PORT": values["port"],
                "PYTHONUNBUFFERED": "1",
                # The team's project is never written: no __pycache__ beside its modules.
                "PYTHONDONTWRITEBYTECODE": "1",
            }
        )
        if self.bin_dir is not None:
            env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
            env["VIRTUAL_ENV"] = str(self.bin_dir.parent)
        env.update({name: str(value).format_map(values) for name, value in self.env.items()})
        return env

    def argv(self, values: Mapping[str, str]) -> list[str]:
        """The command, with ``gunicorn_args`` appended when it is gunicorn's (its last options win,
        over its config file and a worker class on its own command line alike)."""
        argv = shlex.split(self.command.format_map(values))
        if self.gunicorn_args and wsgi_module(argv):
            argv += shlex.split(self.gunicorn_args)
        return argv

    def setup_argv(self, values: Mapping[str, str]) -> list[str] | None:
        return shlex.split(self.setup.format_map(values)) if self.setup else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "app_dir": str(self.app_dir) if self.app_dir else None,
            "env": dict(self.env),
            "setup": self.setup,
            "path": self.path,
            "ready_path": self.ready,
            "python": str(self.python) if self.python else None,
            "ready_timeout": self.ready_timeout,
            "sqlalchemy_pool": dict(self.sqlalchemy_pool) if self.sqlalchemy_pool else None,
            "django_databases": dict(self.django_databases) if self.django_databases else None,
            "gunicorn_args": self.gunicorn_args,
            "try_fixes": self.try_fixes,
        }


def parse_env(pairs: Sequence[str]) -> dict[str, str]:
    """``--env KEY=VALUE`` pairs as a table; :class:`AppSpecError` naming the first that is not one."""
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise AppSpecError(f"--env {pair!r}: expected KEY=VALUE")
        env[key] = value
    return env


def placeholders(host: str, port: int, database_url: str) -> dict[str, str]:
    """The placeholder values for a service on ``host:port`` using the database at ``database_url``
    (``db_host`` is a directory for a Unix socket); ``python`` is the lab's own interpreter."""
    url = make_url(database_url)
    socket_dir = url.query.get("host")
    return {
        "host": host,
        "port": str(port),
        "bind": f"{host}:{port}",
        "database_url": database_url,
        "db_host": str(socket_dir if socket_dir else url.host or "127.0.0.1"),
        "db_port": str(url.port or url.query.get("port") or 5432),  # a Unix socket's port is in the query
        "db_name": url.database or "",
        "db_user": url.username or "",
        "db_password": url.password or "",
        "python": sys.executable,
    }


def mask(text: str, secret: str) -> str:
    """``text`` with URL passwords and ``secret`` itself (a bare ``PGPASSWORD``) masked."""
    text = mask_password(text)
    return text.replace(secret, "***") if secret else text


def _last_lines(text: str, lines: int = 3) -> str:
    return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip()) or "(no output)"


def run_setup(spec: AppSpec, values: Mapping[str, str], logfile: Path, prefix: Sequence[str] = ()) -> None:
    """Run ``spec.setup`` once (inside ``prefix``, in ``app_dir``), its output appended to ``logfile``;
    :class:`ServiceError` with its last lines when it fails, cannot start or outlives
    :data:`SETUP_TIMEOUT` (its process group is killed then)."""
    argv = spec.setup_argv(values)
    if argv is None:
        return
    secret = values["db_password"]
    what = f"setup {mask(spec.setup, secret)!r}"
    # Its own log first, masked into the run's log once it ends: the password never rests in a file.
    raw = logfile.with_name(logfile.name + ".raw")
    child = _spawn(spec, [*prefix, *argv], spec.environment(values), raw, what)
    status = child.wait(SETUP_TIMEOUT)
    if status is None:
        child.stop(grace=1)
    text = mask(child.log_text(), secret)
    raw.unlink(missing_ok=True)
    with open(logfile, "a") as log:
        log.write(text)
    if status != 0:
        how = f"exited with status {status}" if status is not None else "timed out"
        raise ServiceError(f"{what} {how}: {_last_lines(text)}")


def foreign_python(spec: AppSpec, program: str, env: Mapping[str, str]) -> str | None:
    """Why ``program`` would run outside ``spec``'s venv, or None: a bare name its ``bin/`` lacks,
    found elsewhere on ``PATH`` as a script whose ``#!`` names another Python (its packages are not the project's)."""
    if spec.bin_dir is None or "/" in program or (spec.bin_dir / program).exists():
        return None
    found = shutil.which(program, path=env.get("PATH"))
    named = script_python(found) if found else None
    if named is None:
        return None
    return (
        f"{program} is not in {spec.bin_dir}: the one on PATH ({found}) runs {named}, not the venv's Python; "
        f"install it in the venv ({spec.bin_dir / 'pip'} install {program})"
    )


def _spawn(spec: AppSpec, argv: Sequence[str], env: Mapping[str, str], logfile: Path, what: str) -> ChildProcess:
    """``argv`` started in ``spec.app_dir`` as a :class:`ChildProcess` logging to ``logfile``;
    :class:`ServiceError` naming ``what`` when it cannot start."""
    try:
        return ChildProcess(argv, logfile, name=what, env=env, cwd=spec.app_dir).start()
    except ProcessError as exc:
        raise ServiceError(f"{what} could not start: {_why(exc.os_error, spec)}") from None


def _why(exc: OSError | None, spec: AppSpec) -> str:
    if exc is None:
        return "it could not be started"
    if isinstance(exc, FileNotFoundError) and exc.filename and "/" not in str(exc.filename):
        where = f"in {spec.bin_dir} nor on PATH" if spec.bin_dir else "on PATH (set python to the project's venv)"
        return f"{exc.filename} not found {where}"
    return exc.strerror or str(exc)


class AppService(Service):
    """The command of an :class:`AppSpec`, serving on ``host:port``, run inside ``command_prefix``
    in a session (so a process group) of its own, its stdout and stderr in ``logfile``.

    Ready when ``ready_path`` answers 200 within ``ready_timeout``; a command that exits first, or
    never answers there (it listens elsewhere), is a :class:`ServiceError` with its log's last lines,
    and its whole group is stopped. Passwords are masked in the log once it stops."""

    name = "the service"

    def __init__(
        self,
        spec: AppSpec,
        values: Mapping[str, str],
        logfile: Path,
        *,
        command_prefix: Sequence[str] = (),
        client_prefix: Sequence[str] | None = None,
    ) -> None:
        super().__init__(
            logfile,
            host=values["host"],
            port=int(values["port"]),
            client_prefix=command_prefix if client_prefix is None else client_prefix,
            ready_timeout=spec.ready_timeout,
        )
        self.spec, self.values = spec, dict(values)
        self.env = spec.environment(values)
        self.command = [*command_prefix, *spec.argv(values)]
        self.booted_at_ready = 0

    @property
    def shown_command(self) -> str:
        """The command as run, password masked."""
        return mask(shlex.join(self.command), self.values["db_password"])

    def start(self) -> AppService:
        foreign = foreign_python(self.spec, self.spec.argv(self.values)[0], self.env)
        if foreign:
            raise ServiceError(f"{self.shown_command} cannot start: {foreign}")
        self.child = _spawn(self.spec, self.command, self.env, self.logfile, self.shown_command)
        try:
            status, body = self.wait_for(self.spec.ready, self.ready_timeout)
        except ServiceError:
            self.stop()
            raise ServiceError(
                f"{self.shown_command} exited with status {self.process.returncode} before answering "
                f"{self.spec.ready}: {_last_lines(self.log_tail())}"
            ) from None
        if status != 200:
            self.stop()
            said = f"answered {status}" if status else "did not answer"
            raise ServiceError(
                f"{self.shown_command} {said} on {self.base_url}{self.spec.ready} within {self.ready_timeout:.0f} s "
                f"(it must listen on {self.values['bind']} or 0.0.0.0:{self.port}): {_last_lines(self.log_tail())}"
            )
        self.booted_at_ready = self._settled_boots()
        return self

    def _settled_boots(self, quiet: float = 0.5, timeout: float = 5.0) -> int:
        """gunicorn's ``Booting worker`` lines once none has been added for ``quiet`` seconds (the
        first worker can answer before the others boot), or after ``timeout``: later ones are restarts."""
        deadline = time.monotonic() + timeout
        count, since = self.log_text().count(BOOTING), time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - since < quiet:
            time.sleep(0.2)
            current = self.log_text().count(BOOTING)
            if current != count:
                count, since = current, time.monotonic()
        return count

    def stop(self, grace: float = STOP_GRACE) -> int | None:
        """Stop the whole process group: SIGINT, then SIGTERM, then SIGKILL, ``grace`` seconds
        apart (each step only while something of the group is left); return the command's status."""
        if self.child is None:
            return None
        status = self.child.stop(grace)
        self._mask_log()
        return status

    def _mask_log(self) -> None:
        text = self.log_text()
        masked = mask(text, self.values["db_password"])
        if masked != text:
            self.logfile.write_text(masked)

    def log_tail(self, lines: int = 15) -> str:
        return mask(super().log_tail(lines), self.values["db_password"])


class RunningService(Service):
    """A service the lab does not start (``--target URL``): already running, reached at ``url``.
    Nothing to stop; no process, so no sockets, CPU or log of its host to read."""

    name = "the target"

    def __init__(self, url: str, *, client_prefix: Sequence[str] = (), ready_timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AppSpecError(
                f"--target {url!r}: expected an http(s) URL such as http://127.0.0.1:8000/api/v1/healthz/"
            )
        self.scheme = parts.scheme
        super().__init__(
            Path(os.devnull),
            host=parts.hostname,
            port=parts.port or (443 if parts.scheme == "https" else 80),
            client_prefix=client_prefix,
            ready_timeout=ready_timeout,
        )
        self.url, self.path = url, parts.path or "/"
        self.booted_at_ready = 0

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def start(self) -> RunningService:
        """Check the target answers 200 on its path within ``ready_timeout``."""
        deadline = time.monotonic() + self.ready_timeout
        status, body = self.get(self.path)
        while status != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
            status, body = self.get(self.path)
        if status != 200:
            said = f"answered {status}" if status else f"did not answer ({body.strip()[:120]})"
            raise ServiceError(f"--target {self.url} {said} within {self.ready_timeout:.0f} s")
        return self

    def wait_for(self, path: str, timeout: float, request_timeout: float = 2.0) -> tuple[int, str]:
        return self.get(path, timeout=request_timeout)

    def stop(self) -> None:
        return None

    def log_text(self) -> str:
        return ""
