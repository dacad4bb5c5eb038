"""pgbench on the statement the service sends: the database's own limit, with persistent
connections and with a new connection per transaction (``-C``), run on the same server."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import tempfile
from pathlib import Path

from sqlalchemy.dialects import postgresql

from healthz.models import COUNT_ROLES


class PgbenchError(RuntimeError):
    """pgbench failed or printed no throughput; the message carries its output's end."""


def statement() -> str:
    """``SELECT count(*) ... FROM role`` as SQLAlchemy compiles it for PostgreSQL, on one line."""
    return " ".join(str(COUNT_ROLES.compile(dialect=postgresql.dialect())).split())


@dataclasses.dataclass(frozen=True)
class PgbenchResult:
    """One pgbench run: transactions per second, mean latency and failed transactions."""

    tps: float
    latency_ms: float | None
    failed: int
    connect_per_transaction: bool

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


_TPS = re.compile(r"^tps = ([\d.]+)", re.MULTILINE)
_LATENCY = re.compile(r"^latency average = ([\d.]+) ms", re.MULTILINE)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.MULTILINE)


def parse_output(stdout: str, connect_per_transaction: bool = False) -> PgbenchResult:
    """The figures in pgbench's summary; :class:`PgbenchError` when it has no ``tps =`` line."""
    tps = _TPS.search(stdout)
    if tps is None:
        raise PgbenchError(f"pgbench printed no tps: {stdout.strip()[-500:]}")
    latency, failed = _LATENCY.search(stdout), _FAILED.search(stdout)
    return PgbenchResult(
        tps=float(tps.group(1)),
        latency_ms=float(latency.group(1)) if latency else None,
        failed=int(failed.group(1)) if failed else 0,
        connect_per_transaction=connect_per_transaction,
    )


def run(
    bindir: Path,
    *,
    host: str,
    port: int,
    user: str,
    database: str,
    password: str,
    clients: int,
    seconds: float,
    connect_per_transaction: bool = False,
    threads: int = 1,
) -> PgbenchResult:
    """pgbench from ``bindir`` running :func:`statement` for ``seconds`` on ``clients``
    connections over TCP, the simple query protocol as psycopg2 uses it. The password travels in
    ``PGPASSWORD``, never on the command line."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql", prefix="healthz-pgbench-") as script:
        script.write(statement() + ";\n")
        script.flush()
        command = [
            str(bindir / "pgbench"),
            "-n",
            "-M",
            "simple",
            "-f",
            script.name,
            f"-c{clients}",
            f"-j{threads}",
            f"-T{max(1, round(seconds))}",
            "-h",
            host,
            "-p",
            str(port),
            "-U",
            user,
            *(["-C"] if connect_per_transaction else []),
            database,
        ]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 120, env={**os.environ, "PGPASSWORD": password}
        )
    if result.returncode != 0:
        raise PgbenchError(
            f"pgbench exited with status {result.returncode}: {(result.stderr or result.stdout).strip()[-500:]}"
        )
    return parse_output(result.stdout, connect_per_transaction)
