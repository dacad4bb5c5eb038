"""The faults teams actually hit, each injected into a running service under steady load.

A fault has a *begin* and an *end*; the runner (:mod:`healthz.lab.fault_runner`) starts the load,
begins the fault ``lead`` seconds in (or before the load, for faults present at start-up), ends it
``hold`` seconds later, and keeps the load running so that recovery shows. What is measured comes
from the locustfile's timeline (outcomes per tenth of a second, :func:`measure`), the probes and
the service log; :func:`judge` says whether the service behaved as it should.

=====================  ============================================================================
``db-restart-fast``     PostgreSQL stopped (fast shutdown: sessions terminated) and started again
``db-restart-immediate`` the same with an immediate shutdown (a crash, as after an OOM kill)
``too-many-clients``    the server's free slots, below the service's connection budget
``pool-exhausted``      a lock holds every pooled connection; ``pool_timeout`` is short
``statement-timeout``   a lock held longer than ``HEALTHZ_STATEMENT_TIMEOUT``
``lock-wait``           every table of the service's database locked: each statement waits (no timeout set)
``slow-network``        ``tc netem`` delay and loss on the app--database link (netns)
``worker-kill``         one gunicorn worker killed with SIGKILL
``db-down-at-start``    PostgreSQL down while gunicorn starts, up again a little later
``reload`` ...          deploys (:mod:`healthz.lab.deploys`): ``reload``, ``restart``, ``recycle``
``idle-clients``        idle and slow-header clients held open, stepped past capacity (:mod:`healthz.lab.idle_fault`)
=====================  ============================================================================

A team's own service (``app``) gets the faults that need nothing of the lab's service; a fault that
sets one of the lab's knobs (:attr:`Fault.needs_ours`) is skipped for it, saying which. Its failures
are its HTTP statuses (it sends no error kind): any error status is its answer to the fault.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psycopg2

from healthz import errors
from healthz.lab.deploys import DEPLOYS
from healthz.lab.fault_base import CLIENT, QUIET_TAIL, Fault, FaultError, Target, replaced
from healthz.lab.idle_fault import IdleClients
from healthz.lab.scenarios import Scenario
from healthz.plan import DatabaseLimits
from healthz.postgres import ADMIN_USER, APP_USER, PostgreSQL


class DatabaseRestart(Fault):
    """PostgreSQL stopped with ``mode`` and started again ``hold`` seconds later on the same port
    and data. Run with ``pool_pre_ping`` off and on for pools that keep connections: without it,
    each stale pooled connection fails one request after the restart (SQLAlchemy then invalidates
    the pool); with it, the ping finds the dead connection first."""

    expected = (errors.CONNECTION_LOST, errors.CONNECTION_REFUSED, errors.DATABASE_UNAVAILABLE)
    hold = 1.0

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.name = f"db-restart-{mode}"
        kill = (
            "sessions terminated, a clean shutdown"
            if mode == "fast"
            else "no clean-up, as after a crash or an OOM kill"
        )
        self.description = (
            f"PostgreSQL stopped ({mode} shutdown: {kill}) under load and started again {self.hold:g} s later."
        )

    def scenarios(self, base: Scenario) -> list[Scenario]:
        if base.own_service:
            return [base]  # its pool is its own: pool_pre_ping is the lab's setting
        if base.service_settings().pool_class == "NullPool":
            return [base]  # every checkout is a new connection: nothing stale to ping
        return [
            base.with_changes(base.name, {"pool_pre_ping": False}),
            base.with_changes(f"{base.name}+pre_ping", {"pool_pre_ping": True}),
        ]

    def begin(self, target: Target) -> None:
        target.pg.stop(self.mode)

    def end(self, target: Target) -> None:
        target.pg.start()


class TooManyClients(Fault):
    """Idle sessions (as another application would hold) take all but half of the slots the
    service needs, before the service starts; they are closed ``hold`` seconds into the load. The
    service's connection budget is workers x (pool_size + max_overflow), or one connection per
    request in flight when the pool is unbounded."""

    name = "too-many-clients"
    description = (
        "max_connections below the service's connection budget: other sessions hold all but half the slots it "
        "needs while it starts and runs, then let go."
    )
    expected = (errors.TOO_MANY_CLIENTS,)
    at_start = True
    hold = 3.0

    def __init__(self) -> None:
        self._hogs: list[Any] = []

    def failure_bound(self, scenario: Scenario, users: int) -> float | None:
        return 1.0  # refused at once, never a wait

    @staticmethod
    def budget(scenario: Scenario, users: int) -> tuple[int, str]:
        """``(connections, how)``: the most connections the service may open under ``users`` clients."""
        capacity = scenario.pool_capacity()
        if capacity is not None:
            settings = scenario.service_settings()
            return (
                scenario.workers * capacity,
                f"{scenario.workers} workers x (pool_size {settings.pool_size} + max_overflow {settings.max_overflow})",
            )
        return users, f"one connection per request in flight, up to {users} (the clients)"

    def begin(self, target: Target) -> None:
        budget, how = self.budget(target.scenario, target.users)
        needed = min(budget, target.users)
        with target.pg.connect() as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int, "
                "count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
            )
            max_connections, reserved, in_use = cur.fetchone()
        free = max(1, needed // 2)
        # Our own admin session has ended by the time the hogs connect.
        hogs = DatabaseLimits(max_connections, reserved).available - (in_use - 1) - free
        if hogs < 1:
            raise FaultError(
                f"max_connections {max_connections} leaves no room to hold slots; use a larger --max-connections"
            )
        dsn = target.pg.local_dsn(APP_USER, "postgres", application_name="healthz-lab-hog")
        for _ in range(hogs):
            self._hogs.append(psycopg2.connect(dsn))
        target.notes["budget"] = (
            f"budget {budget} connections = {how}; {free} slot(s) free of max_connections {max_connections} "
            f"({reserved} reserved for superusers, {hogs} held by other sessions, {in_use - 1} by the lab)"
        )
        target.notes["slots_free"] = free

    def end(self, target: Target) -> None:
        for conn in self._hogs:
            with contextlib.suppress(psycopg2.Error):
                conn.close()
        self._hogs.clear()


class TableLock(Fault):
    """An ``ACCESS EXCLUSIVE`` lock held by another session for ``hold`` seconds on ``role`` (the
    lab's service), or on every table of a team's service's database, so every statement on them
    waits: the slow database, made on demand."""

    hold = 2.5

    def __init__(self) -> None:
        self._conn: Any = None

    def begin(self, target: Target) -> None:
        self._conn = psycopg2.connect(
            target.pg.local_dsn(ADMIN_USER, target.database, application_name="healthz-lab-lock")
        )
        with self._conn.cursor() as cur:
            if not target.scenario.own_service:
                cur.execute("LOCK TABLE role IN ACCESS EXCLUSIVE MODE")
                return
            cur.execute(
                "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
                "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
            )
            tables = [row[0] for row in cur.fetchall()]
            if not tables:
                raise FaultError(f"{self.name}: the service's database has no table to lock (its setup made none)")
            cur.execute(f"LOCK TABLE {', '.join(tables)} IN ACCESS EXCLUSIVE MODE")
            target.notes["budget"] = f"{len(tables)} table(s) locked"

    def end(self, target: Target) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg2.Error):
                self._conn.rollback()
                self._conn.close()
            self._conn = None


class LockWait(TableLock):
    name = "lock-wait"
    description = (
        "Every table the health check reads locked by another session for 2.5 s, with no timeout of the lab's: "
        "each statement waits (a slow query, a migration's lock) and the service must answer once it ends."
    )
    expected = (CLIENT,)


class PoolExhausted(TableLock):
    name = "pool-exhausted"
    description = (
        "Every pooled connection waits on a lock for 2.5 s while far more clients than connections arrive; "
        "pool_timeout=0.5: waits for a connection end in pool_timeout, the worker keeps serving."
    )
    expected = (errors.POOL_TIMEOUT,)
    POOL_TIMEOUT = 0.5
    needs_ours = "it sets the lab's pool_timeout to 0.5 s"

    def scenarios(self, base: Scenario) -> list[Scenario]:
        return [
            base.with_changes(f"{base.name}:pool_timeout={self.POOL_TIMEOUT:g}", {"pool_timeout": self.POOL_TIMEOUT})
        ]

    def skip_reason(self, scenario: Scenario, topology: Any) -> str | None:
        if scenario.pool_capacity() is None:
            return "no pool_timeout: the pool is unbounded (every waiting request opens its own connection)"
        return None

    def failure_bound(self, scenario: Scenario, users: int) -> float | None:
        return self.POOL_TIMEOUT + 1.0


class StatementTimeout(TableLock):
    name = "statement-timeout"
    description = (
        "A lock held 2.5 s, longer than HEALTHZ_STATEMENT_TIMEOUT=500 ms: PostgreSQL cancels the waiting count(*)."
    )
    expected = (errors.STATEMENT_TIMEOUT,)
    STATEMENT_TIMEOUT_MS = 500
    needs_ours = "it sets the lab's HEALTHZ_STATEMENT_TIMEOUT; lock-wait is the same lock without it"

    def scenarios(self, base: Scenario) -> list[Scenario]:
        ms = self.STATEMENT_TIMEOUT_MS
        return [base.with_changes(f"{base.name}:statement_timeout={ms}", {"statement_timeout": ms})]

    def failure_bound(self, scenario: Scenario, users: int) -> float | None:
        # A request may queue behind others for the pool, each cancelled after the timeout.
        capacity = scenario.pool_capacity()
        rounds = math.ceil(users / (capacity * scenario.workers)) if capacity else 1
        return self.STATEMENT_TIMEOUT_MS / 1000 * (rounds + 1) + 1.0


class SlowNetwork(Fault):
    """``tc netem`` delay and loss on the app host's end of the app--database link (netns only)."""

    name = "slow-network"
    description = (
        "tc netem delay 300 ms and 20% loss on the app-database link for 3 s, with HEALTHZ_STATEMENT_TIMEOUT=500 ms "
        "and HEALTHZ_CONNECT_TIMEOUT=2: timeouts, never a hang."
    )
    expected = (errors.STATEMENT_TIMEOUT, errors.CONNECT_TIMEOUT, errors.CONNECTION_LOST, errors.POOL_TIMEOUT)
    hold = 3.0

    def scenarios(self, base: Scenario) -> list[Scenario]:
        return [
            base.with_changes(
                f"{base.name}:statement_timeout=500,connect_timeout=2", {"statement_timeout": 500, "connect_timeout": 2}
            )
        ]

    def skip_reason(self, scenario: Scenario, topology: Any) -> str | None:
        if topology.name != "netns":
            return "needs --topology netns (tc netem on the veth pair)"
        return topology.netem_problem()

    def begin(self, target: Target) -> None:
        topology = target.topology
        subprocess.run(
            [
                *topology.app_prefix,
                "tc",
                "qdisc",
                "add",
                "dev",
                topology.app_if,
                "root",
                "netem",
                "delay",
                "300ms",
                "loss",
                "20%",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )

    def end(self, target: Target) -> None:
        topology = target.topology
        subprocess.run(
            [*topology.app_prefix, "tc", "qdisc", "del", "dev", topology.app_if, "root"],
            capture_output=True,
            timeout=30,
        )


class WorkerKill(Fault):
    """SIGKILL to one gunicorn worker; the fault ends when gunicorn has replaced it and PostgreSQL
    has ended every backend of the dead worker (found by its sockets' local ports)."""

    name = "worker-kill"
    description = (
        "One gunicorn worker killed with SIGKILL under load: gunicorn replaces it, PostgreSQL ends its backends. "
        "Clients do not retry (as wrk and ab): the requests in flight on the killed worker are lost."
    )
    expected = (CLIENT,)
    retry = False
    after = 4.0  # as a deploy's: the replacement's rate is measured too
    instant = True
    hold = 0.0
    worker_restarts = 1
    TIMEOUT = 30.0

    def begin(self, target: Target) -> None:
        workers = target.gunicorn.worker_pids()
        if not workers:
            raise FaultError("gunicorn has no worker to kill")
        pid = workers[0]
        db_port = target.pg.port
        ports = database_client_ports(pid, db_port)
        os.kill(pid, signal.SIGKILL)
        target.notes.update(killed_pid=pid, killed_worker_connections=len(ports))
        # Replaced when as many run as before the kill (a team's command starts its own number).
        target.state.update(killed_at=time.monotonic(), ports=ports, wanted=len(workers))

    def end(self, target: Target) -> None:
        notes, started = target.notes, target.state["killed_at"]
        deadline = started + self.TIMEOUT
        seconds = replaced(target, {notes["killed_pid"]}, target.state["wanted"], started, self.TIMEOUT)
        notes["replaced_seconds"] = seconds if seconds is not None else round(time.monotonic() - started, 2)
        ports = target.state["ports"]
        left = ports
        while left and time.monotonic() < deadline:
            left = _backends_on_ports(target.pg, ports)
            if left:
                time.sleep(0.05)
        notes["backends_released_seconds"] = round(time.monotonic() - started, 2)
        notes["killed_worker_backends_left"] = len(left)


class DatabaseDownAtStart(Fault):
    name = "db-down-at-start"
    description = (
        "PostgreSQL down while gunicorn starts and for the load's first seconds: the service boots and answers "
        "499 connection_refused, then 200 once the database is up, with no restart."
    )
    expected = (errors.CONNECTION_REFUSED, errors.DATABASE_UNAVAILABLE)
    at_start = True
    hold = 3.0

    def failure_bound(self, scenario: Scenario, users: int) -> float | None:
        return 1.0

    def skip_reason(self, scenario: Scenario, topology: Any) -> str | None:
        if scenario.service.ready_path == scenario.path:
            return (
                f"its ready_path {scenario.path} is the health check, which needs the database: "
                "set ready_path to one that answers without it"
            )
        return None

    def begin(self, target: Target) -> None:
        target.pg.stop("fast")

    def end(self, target: Target) -> None:
        target.pg.start()


def database_client_ports(pid: int, db_port: int) -> set[int]:
    """Local ports of process ``pid``'s TCP connections toward ``db_port`` (from its open sockets
    and its network namespace's TCP tables)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[9] in inodes and int(fields[2].rsplit(":", 1)[1], 16) == db_port:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _backends_on_ports(pg: PostgreSQL, ports: Iterable[int]) -> set[int]:
    with pg.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT client_port FROM pg_stat_activity WHERE client_port = ANY(%s)", (list(ports),))
        return {row[0] for row in cur.fetchall()}


#: Every fault, in the order a run goes through them.
FAULTS: dict[str, Fault] = {
    f.name: f
    for f in (
        DatabaseRestart("fast"),
        DatabaseRestart("immediate"),
        TooManyClients(),
        PoolExhausted(),
        StatementTimeout(),
        LockWait(),
        SlowNetwork(),
        WorkerKill(),
        DatabaseDownAtStart(),
    )
}
FAULTS.update((d.name, d) for d in DEPLOYS)
FAULTS[IdleClients.name] = IdleClients()
#: The scenarios ``healthz lab faults`` runs by default: one per pool shape and worker family.
DEFAULT_SCENARIOS = ("eventlet-nullpool", "eventlet-queuepool-sized", "gevent-queuepool-sized", "gthread-queuepool")


def select(names: Iterable[str]) -> list[Fault]:
    """The faults called ``names`` (all when empty); :class:`ValueError` names the accepted ones."""
    names = list(names)
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        raise ValueError(f"unknown fault {unknown[0]!r}: choose from {', '.join(FAULTS)}")
    return [FAULTS[n] for n in names] if names else list(FAULTS.values())


__all__ = [
    "CLIENT",
    "QUIET_TAIL",
    "FAULTS",
    "DEFAULT_SCENARIOS",
    "Fault",
    "FaultError",
    "Target",
    "select",
    "database_client_ports",
]
