"""A throwaway PgBouncer in front of the lab's PostgreSQL, and what its admin console says.

Its configuration, user list, log and Unix socket live in a temporary directory removed on stop.
Like PostgreSQL it refuses to run as root, so as root it runs as the same unprivileged account
(with ``setpriv`` after an ``ip netns exec`` prefix). It listens on TCP (``listen_host``) and on a
Unix socket in its directory, which the file system makes reachable from every namespace: the lab's
probes read ``SHOW POOLS`` and ``SHOW STATS`` through it.

The binary comes from ``$PGBOUNCER``, ``PATH`` or ``/usr/sbin`` (Debian's ``pgbouncer`` package), else
Debian's package is fetched into ``.venv/pgbouncer`` without root (:mod:`healthz.lab.debian`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg2

from healthz.harness.process import ChildProcess, ProcessError
from healthz.lab import debian
from healthz.postgres import free_port, reachable_by_others, unprivileged_account

POOL_MODES = ("transaction", "session")
#: Debian's packages: PgBouncer and the one library it links that a minimal Debian lacks.
PACKAGES = ("pgbouncer", "libc-ares2")
ADMIN_DATABASE = "pgbouncer"
#: SHOW POOLS columns the lab samples (PgBouncer 1.18 names).
POOL_COLUMNS = ("cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used", "maxwait", "maxwait_us")
#: SHOW STATS counters the lab samples: transactions, queries, and microseconds clients waited for a server.
STATS_COLUMNS = ("total_xact_count", "total_query_count", "total_wait_time")


class PgBouncerError(RuntimeError):
    """PgBouncer could not be found, fetched or started; the message says why (no password)."""


def find_program() -> debian.Program:
    """PgBouncer, found or fetched (see the module docstring); :class:`PgBouncerError` when neither works."""
    try:
        return debian.find("pgbouncer", variable="PGBOUNCER", packages=PACKAGES, binary="usr/sbin/pgbouncer")
    except debian.FetchError as exc:
        raise PgBouncerError(f"PgBouncer is needed for this scenario: {exc}") from None


class PgBouncer:
    """PgBouncer for database ``database`` as ``user``/``password`` on ``server_host:server_port``,
    listening on ``listen_host:listen_port`` and a Unix socket, in ``pool_mode`` with
    ``default_pool_size`` server connections and at most ``max_client_conn`` clients;
    ``command_prefix`` runs it in another network namespace."""

    def __init__(
        self,
        *,
        server_host: str,
        server_port: int,
        password: str,
        database: str = "healthz",
        user: str = "healthz",
        pool_mode: str = "transaction",
        default_pool_size: int = 20,
        max_client_conn: int = 10000,
        listen_host: str = "127.0.0.1",
        listen_port: int | None = None,
        command_prefix: Sequence[str] = (),
        program: debian.Program | None = None,
        start_timeout: float = 20.0,
    ) -> None:
        if pool_mode not in POOL_MODES:
            raise PgBouncerError(f"pool_mode {pool_mode!r} is not one of {', '.join(POOL_MODES)}")
        self.server_host, self.server_port = server_host, server_port
        self.database, self.user, self.password = database, user, password
        self.pool_mode, self.default_pool_size, self.max_client_conn = pool_mode, default_pool_size, max_client_conn
        self.listen_host = listen_host
        self.listen_port = listen_port or (6432 if command_prefix else free_port(listen_host))
        self.command_prefix = list(command_prefix)
        self.program = program or find_program()
        self.account = unprivileged_account()
        self.start_timeout = start_timeout
        self.directory: Path | None = None
        self.child: ChildProcess | None = None

    # -- addresses ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The service's URL through PgBouncer over TCP, password included."""
        return f"postgresql://{self.user}:{self.password}@{self.listen_host}:{self.listen_port}/{self.database}"

    @property
    def unix_url(self) -> str:
        """The service's URL through PgBouncer's Unix socket: no TCP port used at all."""
        return (
            f"postgresql://{self.user}:{self.password}@/{self.database}?host={self.directory}&port={self.listen_port}"
        )

    def admin_dsn(self) -> str:
        return f"host={self.directory} port={self.listen_port} dbname={ADMIN_DATABASE} user={self.user} password={self.password}"

    @property
    def logfile(self) -> Path:
        assert self.directory is not None
        return self.directory / "pgbouncer.log"

    # -- process -----------------------------------------------------------------------------
    def _config(self) -> str:
        assert self.directory is not None
        return "\n".join(
            [
                "[databases]",
                f"{self.database} = host={self.server_host} port={self.server_port} dbname={self.database}",
                "[pgbouncer]",
                f"listen_addr = {self.listen_host}",
                f"listen_port = {self.listen_port}",
                f"unix_socket_dir = {self.directory}",
                "auth_type = scram-sha-256",
                f"auth_file = {self.directory / 'userlist.txt'}",
                f"admin_users = {self.user}",
                f"stats_users = {self.user}",
                f"pool_mode = {self.pool_mode}",
                f"default_pool_size = {self.default_pool_size}",
                f"max_client_conn = {self.max_client_conn}",
                # As gunicorn's in the lab: the default of 128 refuses a burst on the Unix socket with EAGAIN.
                "listen_backlog = 4096",
                # psycopg2 and the doctor send these startup parameters; PgBouncer refuses unknown ones.
                "ignore_startup_parameters = extra_float_digits,options",
                f"logfile = {self.logfile}",
                "log_connections = 1",
                "log_disconnections = 0",
                "log_pooler_errors = 1",
                "stats_period = 1",
                "",
            ]
        )

    def _binary(self) -> tuple[list[str], dict[str, str]]:
        """The command and environment; a binary the unprivileged account cannot reach is copied
        (with its libraries) into the instance's directory first."""
        assert self.directory is not None
        path, env = self.program.path, dict(self.program.env)
        if self.account is not None and not reachable_by_others(path.parent):
            shutil.copy2(path, self.directory / "pgbouncer")
            path = self.directory / "pgbouncer"
            for libdir in filter(None, env.get("LD_LIBRARY_PATH", "").split(os.pathsep)):
                shutil.copytree(libdir, self.directory / "lib", dirs_exist_ok=True)
            if env.get("LD_LIBRARY_PATH"):
                env["LD_LIBRARY_PATH"] = str(self.directory / "lib")
        return [str(path), *self.program.command[1:]], env

    def start(self) -> PgBouncer:
        """Write the configuration, start PgBouncer and wait until its admin console answers."""
        self.directory = Path(tempfile.mkdtemp(prefix="healthz-pgbouncer-"))
        os.chmod(self.directory, 0o700)
        (self.directory / "pgbouncer.ini").write_text(self._config())
        userlist = self.directory / "userlist.txt"
        userlist.write_text(f'"{self.user}" "{self.password}"\n')
        os.chmod(userlist, 0o600)
        command, env = self._binary()
        command.append(str(self.directory / "pgbouncer.ini"))
        run_as: dict[str, Any] = {}
        if self.account is not None:
            for path in self.directory.rglob("*"):
                os.chown(path, self.account.pw_uid, self.account.pw_gid)
            os.chown(self.directory, self.account.pw_uid, self.account.pw_gid)
            if self.command_prefix:  # ip netns exec needs root: drop to the account after it
                command = [
                    "setpriv",
                    "--reuid",
                    str(self.account.pw_uid),
                    "--regid",
                    str(self.account.pw_gid),
                    "--clear-groups",
                    *command,
                ]
            else:
                run_as = {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}
        self.child = ChildProcess(
            [*self.command_prefix, *command],
            self.directory / "stdout.log",
            name="pgbouncer",
            env={**os.environ, **env},
            cwd=self.directory,
            run_as=run_as,
            signal_group=False,
            secrets=[self.password],
        )
        try:
            self.child.start()
        except ProcessError as exc:
            self.cleanup()
            raise PgBouncerError(str(exc)) from None
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            if not self.child.running():
                status = self.child.returncode
                tail = self.log_tail()
                self.cleanup()
                raise PgBouncerError(f"pgbouncer exited with status {status}: {tail}")
            try:
                psycopg2.connect(self.admin_dsn(), connect_timeout=2).close()
                return
            except psycopg2.OperationalError as exc:
                if time.monotonic() > deadline:
                    tail = self.log_tail()
                    self.stop()
                    raise PgBouncerError(
                        f"pgbouncer did not answer in {self.start_timeout:.0f} s: {str(exc).strip()}; {tail}"
                    ) from None
            time.sleep(0.1)

    def log_text(self) -> str:
        if self.directory is None:
            return ""
        texts = []
        for name in ("stdout.log", "pgbouncer.log"):
            with contextlib.suppress(OSError):
                texts.append((self.directory / name).read_text(errors="replace"))
        return "".join(texts)

    def log_tail(self, lines: int = 10) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:]).replace(self.password, "***")

    @property
    def process(self) -> subprocess.Popen | None:
        return self.child.process if self.child else None

    def stop(self) -> None:
        """SIGINT (PgBouncer's safe shutdown: waits for transactions in flight), then SIGTERM and
        SIGKILL 5 s apart; then the directory is removed."""
        if self.child is not None:
            self.child.stop(grace=5)
        self.cleanup()

    def cleanup(self) -> None:
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class Console:
    """PgBouncer's admin console over its Unix socket: ``SHOW POOLS`` and ``SHOW STATS`` for one
    database. The connection is made again after an error (PgBouncer restarting)."""

    def __init__(self, bouncer: PgBouncer) -> None:
        self.dsn, self.database = bouncer.admin_dsn(), bouncer.database
        self.conn = None

    def _rows(self, command: str) -> list[dict[str, Any]]:
        if self.conn is None or self.conn.closed:
            self.conn = psycopg2.connect(self.dsn, connect_timeout=5)
            self.conn.autocommit = True  # the console accepts no transactions
        try:
            with self.conn.cursor() as cur:
                cur.execute(command)
                names = [c.name for c in cur.description]
                return [dict(zip(names, row)) for row in cur.fetchall()]
        except psycopg2.Error:
            self.conn.close()
            raise

    def sample(self) -> dict[str, int]:
        """``pooler_<column>`` for :data:`POOL_COLUMNS` (summed over the database's pools) and
        :data:`STATS_COLUMNS`, plus ``pooler_logins``: client logins so far, from its log."""
        row: dict[str, int] = {f"pooler_{c}": 0 for c in (*POOL_COLUMNS, *STATS_COLUMNS)}
        for pool in self._rows("SHOW POOLS"):
            if pool.get("database") == self.database:
                for column in POOL_COLUMNS:
                    row[f"pooler_{column}"] += int(pool.get(column) or 0)
        for stats in self._rows("SHOW STATS"):
            if stats.get("database") == self.database:
                for column in STATS_COLUMNS:
                    row[f"pooler_{column}"] = int(stats.get(column) or 0)
        return row

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def login_pattern(database: str, address: str | None = None) -> re.Pattern[bytes]:
    """The log line of a client login to ``database`` (``login attempt``, ``log_connections = 1``),
    from client ``address`` when given (``127.0.0.1``, ``198.18.0.2``; a Unix socket logs
    ``unix(PID)``). Logins to the admin console do not match."""
    client = re.escape(address.encode()) if address else rb"\S+"
    return re.compile(rb"@" + client + rb":\d+ login attempt: db=" + re.escape(database.encode()) + rb" ")
