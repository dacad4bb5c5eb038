"""The connection budget of a deployment: how big each worker's pool may be, when an external
pooler (PgBouncer) is needed and how to size it, and how many new connections per second a host
sustains before its ephemeral ports run out. Pure arithmetic; :func:`plan` does no I/O.

The figures it rests on:

* PostgreSQL accepts ``max_connections`` minus its reserved slots (``superuser_reserved_connections``,
  plus ``reserved_connections`` on 16+) from ordinary roles; other clients (migrations, cron, a
  replica, an admin's psql) take their share first.
* Every gunicorn worker process has its own pool; a pool never holds more than ``pool_size +
  max_overflow`` connections, and never usefully more than the requests the worker serves at once
  (threads for gthread, greenlets for eventlet and gevent, 1 for sync).
* QueuePool closes an overflow connection on check-in when the pool is full, so ``max_overflow > 0``
  opens and closes connections under bursty load: the plan gives ``max_overflow=0``.
* A client socket stays in TIME_WAIT for 60 s after it closes first (psycopg2 does), holding its
  local port toward the same server, so a host opening more than ``ports / 60`` connections per
  second to one database runs out of ports: ``connect()`` fails with EADDRNOTAVAIL.
* A pool needs as many connections as are in use at once: by Little's law, the requests per second
  times the seconds each holds its connection, plus :data:`HEADROOM` for bursts. More is waste:
  every idle backend costs PostgreSQL memory and every snapshot has to scan it.
* PostgreSQL runs well about ``2 x cores + 1`` active connections at once (its wiki's "How to Find
  the Optimal Database Connection Limit", and HikariCP's "About Pool Sizing": cores x 2 plus the
  effective spindle count, 1 for a cached or SSD database); beyond that, queries wait on each other.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from typing import Any

from healthz.config import WORKER_CLASSES

#: Linux keeps a closed socket in TIME_WAIT for 60 s (TCP_TIMEWAIT_LEN); not tunable.
TIME_WAIT_SECONDS = 60
#: Linux's default ``net.ipv4.ip_local_port_range``.
DEFAULT_PORT_RANGE = (32768, 60999)
#: gunicorn's default ``worker_connections`` (greenlets per eventlet or gevent worker).
DEFAULT_WORKER_CONNECTIONS = 1000
#: File descriptors PgBouncer needs beyond one per client and server connection (listeners, logs).
PGBOUNCER_SPARE_FDS = 20
#: Milliseconds a request holds its connection when ``--hold-ms`` is not given: the health check's one
#: statement and its round trip, with room for a short OLTP request (measure yours: the lab's
#: healthz_pool_checkout_wait_seconds and request durations bound it).
DEFAULT_HOLD_MS = 10.0
#: Connections beyond the mean in use, for bursts: 50%.
HEADROOM = 1.5


def db_active_limit(cores: int) -> int:
    """Connections a database of ``cores`` cores runs well at once: 2 x cores + 1 (PostgreSQL's
    wiki, HikariCP's "About Pool Sizing" with one effective spindle)."""
    return 2 * cores + 1


class Bound(str, enum.Enum):
    """What decided a planned pool_size: the smallest of these."""

    WANTED = "the pool_size asked for"
    LOAD = "the load (rate x hold time)"
    DB_CORES = "the database's cores"
    CONCURRENCY = "the worker's concurrency"
    BUDGET = "max_connections"

    def __str__(self) -> str:
        return self.value


class PlanError(ValueError):
    """A deployment that cannot be planned; the message names the input and what is accepted."""


@dataclasses.dataclass(frozen=True)
class DatabaseLimits:
    """PostgreSQL's connection limits: ``max_connections`` less the slots reserved for superusers
    (and, on 16+, ``reserved_connections``) is what clients such as the service can take."""

    max_connections: int
    reserved: int = 0

    @property
    def available(self) -> int:
        """Connections left for ordinary clients (never below 0)."""
        return max(0, self.max_connections - self.reserved)

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> DatabaseLimits | None:
        """The limits a lab run recorded (``meta["postgres"]``), or None when it recorded none."""
        pg = meta.get("postgres") or {}
        if not pg.get("max_connections"):
            return None
        return cls(int(pg["max_connections"]), int(pg.get("superuser_reserved_connections") or 0))


@dataclasses.dataclass(frozen=True)
class Deployment:
    """What runs against one PostgreSQL.

    ``hosts`` application hosts, each with ``workers`` gunicorn workers of ``worker_class``;
    ``concurrency`` is requests one worker serves at once (threads for gthread, greenlets, i.e.
    ``worker_connections``, for eventlet and gevent; ignored for sync, which serves 1).
    ``reserved_connections`` is the server's reserved slots (``superuser_reserved_connections``,
    default 3, plus ``reserved_connections`` on 16+); ``other_connections`` what other clients hold.
    ``pool_size``, when given, is the pool each worker is wanted to have; ``rate`` the requests per
    second each host serves, which sizes the pool by need (with ``hold_ms``, the milliseconds each
    request holds its connection) and judges a pool-less (NullPool) service against the port range;
    ``db_cores`` the database server's cores, which cap the connections worth running at once.
    """

    hosts: int
    workers: int
    worker_class: str
    concurrency: int = DEFAULT_WORKER_CONNECTIONS
    max_connections: int = 100
    reserved_connections: int = 3
    other_connections: int = 0
    port_range: tuple[int, int] = DEFAULT_PORT_RANGE
    pool_size: int | None = None
    rate: float | None = None
    hold_ms: float = DEFAULT_HOLD_MS
    db_cores: int | None = None

    def __post_init__(self) -> None:
        if self.worker_class not in WORKER_CLASSES:
            raise PlanError(f"--worker-class {self.worker_class!r}: expected one of {', '.join(WORKER_CLASSES)}")
        for name in ("hosts", "workers", "concurrency", "max_connections"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise PlanError(f"--{name.replace('_', '-')} {value!r}: expected an integer >= 1")
        for name in ("reserved_connections", "other_connections"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise PlanError(f"--{name.replace('_', '-')} {value!r}: expected an integer >= 0")
        if self.available < 1:
            raise PlanError(
                f"--max-connections {self.max_connections} leaves no connection for the application after "
                f"{self.reserved_connections} reserved and {self.other_connections} other connections"
            )
        low, high = self.port_range
        if not 1 <= low <= high <= 65535:
            raise PlanError(f"--port-range {low}-{high}: expected LOW-HIGH with 1 <= LOW <= HIGH <= 65535")
        if self.pool_size is not None and self.pool_size < 1:
            raise PlanError(f"--pool-size {self.pool_size}: expected an integer >= 1")
        if self.rate is not None and not self.rate > 0:
            raise PlanError(f"--rate {self.rate:g}: expected requests per second per host > 0")
        if not 0 < self.hold_ms <= 600_000:
            raise PlanError(f"--hold-ms {self.hold_ms:g}: expected milliseconds > 0")
        if self.db_cores is not None and self.db_cores < 1:
            raise PlanError(f"--db-cores {self.db_cores}: expected an integer >= 1")

    @property
    def available(self) -> int:
        """Connections the application may open: max_connections less reserved and other ones."""
        return DatabaseLimits(self.max_connections, self.reserved_connections).available - self.other_connections

    @property
    def per_worker(self) -> int:
        """Requests one worker serves at once: 1 for sync, else ``concurrency``."""
        return 1 if self.worker_class == "sync" else self.concurrency

    @property
    def processes(self) -> int:
        """Worker processes in the deployment, each with a pool of its own."""
        return self.hosts * self.workers

    @property
    def ports(self) -> int:
        return self.port_range[1] - self.port_range[0] + 1


@dataclasses.dataclass(frozen=True)
class PgBouncerSize:
    """One placement of PgBouncer and its settings: ``instances`` PgBouncers, each with
    ``default_pool_size`` server connections (one database, one user) and ``max_client_conn``
    client connections, needing ``file_descriptors`` (``ulimit -n``)."""

    placement: str
    instances: int
    default_pool_size: int
    max_client_conn: int
    file_descriptors: int
    server_connections: int


@dataclasses.dataclass(frozen=True)
class Plan:
    """The plan for a :class:`Deployment`; see :func:`plan`."""

    deployment: Deployment
    budget_per_worker: int
    pool_size: int
    max_overflow: int
    total_connections: int
    max_hosts: int
    pooler_needed: bool
    reasons: tuple[str, ...]
    pgbouncer: tuple[PgBouncerSize, ...]
    exhaustion_rate: float
    nullpool_time_wait: float | None
    bound: Bound = Bound.BUDGET
    needed_per_host: int | None = None  # by Little's law, with headroom, when the rate is known
    db_active_limit: int | None = None  # 2 x cores + 1, when the cores are known

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["deployment"]["available"] = self.deployment.available
        data["deployment"]["ports"] = self.deployment.ports
        data["bound"] = self.bound.name.lower()
        return data


def plan(deployment: Deployment) -> Plan:
    """Size the pools of ``deployment``.

    * ``budget_per_worker``: the available connections shared evenly by every worker process.
    * ``pool_size``: the pool each worker needs, the smallest of (``bound`` says which): the wanted
      ``pool_size``; the load's need, ``rate x hold_ms x`` :data:`HEADROOM` per host shared by its
      workers (``needed_per_host``); the database's ``2 x db_cores + 1`` active connections shared
      by every worker (``db_active_limit``); the worker's concurrency (a connection nobody can check
      out is waste); the budget. Never below 1 but when the budget is 0. ``max_overflow`` is 0
      (overflow connections churn).
    * ``max_hosts``: hosts that fit under the budget at that pool size (at the wanted one when given).
    * ``pooler_needed``: when not every worker can hold one connection, or the wanted pool does not
      fit; ``reasons`` say which. PgBouncer sizes are given either way, for both placements.
    * ``exhaustion_rate``: new connections per second at which one host's ports, each held 60 s in
      TIME_WAIT, run out; ``nullpool_time_wait``: with ``rate`` given, the ports a pool-less service
      would hold in TIME_WAIT (one connection per request).
    """
    d = deployment
    budget = d.available // d.processes
    needed = math.ceil(d.rate * d.hold_ms / 1000 * HEADROOM) if d.rate is not None else None
    active = db_active_limit(d.db_cores) if d.db_cores is not None else None
    # In the order a tie is told: what was asked for, then the load, the database, the worker, the budget.
    candidates = [
        (Bound.WANTED, d.pool_size),
        (Bound.LOAD, None if needed is None else max(1, math.ceil(needed / d.workers))),
        (Bound.DB_CORES, None if active is None else max(1, active // d.processes)),
        (Bound.CONCURRENCY, d.per_worker),
        (Bound.BUDGET, budget),
    ]
    bound, pool_size = min(((b, v) for b, v in candidates if v is not None), key=lambda bv: bv[1])
    if budget < 1:
        bound, pool_size = Bound.BUDGET, 0
    sized = d.pool_size or max(pool_size, 1)
    reasons = []
    if budget < 1:
        reasons.append(
            f"{d.processes} worker processes ({d.hosts} hosts x {d.workers}) need a connection each, "
            f"but only {d.available} are available"
        )
    elif d.pool_size is not None and d.pool_size * d.processes > d.available:
        reasons.append(
            f"pool_size={d.pool_size} x {d.processes} worker processes = {d.pool_size * d.processes} "
            f"connections, more than the {d.available} available"
        )
    return Plan(
        deployment=d,
        budget_per_worker=budget,
        pool_size=pool_size,
        max_overflow=0,
        total_connections=pool_size * d.processes,
        max_hosts=d.available // (d.workers * sized),
        pooler_needed=bool(reasons),
        reasons=tuple(reasons),
        pgbouncer=_pgbouncer(d),
        exhaustion_rate=d.ports / TIME_WAIT_SECONDS,
        nullpool_time_wait=None if d.rate is None else d.rate * TIME_WAIT_SECONDS,
        bound=bound,
        needed_per_host=needed,
        db_active_limit=active,
    )


def _pgbouncer(d: Deployment) -> tuple[PgBouncerSize, ...]:
    # A client of PgBouncer is one connection per request in flight at worst (NullPool behind it).
    clients_per_host = d.workers * d.per_worker
    sizes = []
    for placement, instances, clients in (
        ("application host", d.hosts, clients_per_host),
        ("database host", 1, clients_per_host * d.hosts),
    ):
        pool = max(1, min(d.available // instances, clients))
        sizes.append(
            PgBouncerSize(placement, instances, pool, clients, clients + pool + PGBOUNCER_SPARE_FDS, pool * instances)
        )
    return tuple(sizes)


def render(result: Plan) -> str:
    """The plan as a few paragraphs for a terminal, the settings to use first."""
    d = result.deployment
    unit = {"gthread": "threads", "sync": "request"}.get(d.worker_class, "greenlets")
    lines = [
        f"Deployment: {d.hosts} host(s) x {d.workers} {d.worker_class} worker(s) = {d.processes} pools, "
        f"{d.per_worker} concurrent {unit} per worker; max_connections {d.max_connections} - "
        f"{d.reserved_connections} reserved - {d.other_connections} other = {d.available} available.",
        "",
    ]
    unsized = d.rate is None and result.bound is Bound.BUDGET
    if result.budget_per_worker >= 1:
        lines += [
            f"In-process pool (SQLAlchemy QueuePool), per worker: {'at most ' if unsized else ''}"
            f"pool_size={result.pool_size}, max_overflow=0",
            f"  bounded by {result.bound}: " + _bound_reason(result),
            f"  budget {result.budget_per_worker} connection(s) per worker; pool_size + max_overflow must stay <= "
            f"{result.budget_per_worker}; overflow connections are closed on check-in, so max_overflow=0 avoids churn.",
            f"  {result.total_connections} connections in all; at pool_size={d.pool_size or result.pool_size}, "
            f"{result.max_hosts} host(s) of {d.workers} workers fit under max_connections.",
        ]
    else:
        lines.append(
            f"In-process pool: none fits: {d.processes} worker processes, {d.available} connections available."
        )
    lines.append("")
    if result.pooler_needed:
        lines.append("External pooler needed: " + "; ".join(result.reasons) + ".")
    else:
        lines.append("External pooler: not needed for the connection budget.")
    for size in result.pgbouncer:
        lines.append(
            f"  PgBouncer on the {size.placement} ({size.instances} instance(s)), pool_mode = transaction: "
            f"default_pool_size = {size.default_pool_size}, max_client_conn = {size.max_client_conn}, "
            f"ulimit -n >= {size.file_descriptors}; {size.server_connections} server connections in all."
        )
    lines.append(
        "  On the application host, reached over its Unix socket, it also ends the ephemeral-port churn (over "
        "127.0.0.1 the churn stays, held only by loopback's TIME_WAIT reuse); on the database host the service's "
        "connections still cross the network, so a service without a pool still runs out of ports."
    )
    lines += [
        "",
        f"Ephemeral ports: {d.ports} ({d.port_range[0]}-{d.port_range[1]}) / {TIME_WAIT_SECONDS} s in TIME_WAIT = "
        f"{result.exhaustion_rate:,.0f} new connections per second per host, sustained, before connect() fails with "
        f"EADDRNOTAVAIL.",
    ]
    if result.nullpool_time_wait is not None:
        share = result.nullpool_time_wait / d.ports
        verdict = "runs out of ports" if share >= 1 else f"holds {share:.0%} of the range"
        lines.append(
            f"  At {d.rate:,.0f} requests/s per host, a service without a pool (NullPool, Django CONN_MAX_AGE=0) "
            f"keeps {result.nullpool_time_wait:,.0f} sockets in TIME_WAIT: it {verdict}."
        )
    return "\n".join([*lines, "", liveness_line(result)])


def liveness_line(result: Plan) -> str:
    """Where the liveness probe should ask, and why: a thread per request (gthread, sync) can all be
    waiting on the database, and livez then queues behind them; a green worker answers between waits."""
    d = result.deployment
    if d.worker_class in ("gthread", "sync"):
        threads = "its one request" if d.worker_class == "sync" else f"all {d.per_worker} threads"
        why = (
            f"a {d.worker_class} worker serves livez only when a thread is free, and {threads} can wait on the "
            "database (a lock, a slow server: `healthz lab faults` measured livez 1.36 s late under gthread); "
            "more threads than pool_size do not help, each spare one takes the next queued request (1.3 s "
            "late with 12 and 16 threads for pool_size 8, docs/faults.md)"
        )
    else:
        why = f"{d.worker_class} answers livez between database waits; the listener keeps it apart all the same"
    return (
        "Liveness: serve livez on a listener of its own, HEALTHZ_LIVENESS_BIND=0.0.0.0:8001, and point the "
        f"liveness probe there (timeout 1 s): {why}."
    )


def _bound_reason(result: Plan) -> str:
    """Why the planned pool_size is what it is, in figures, and what would size it better."""
    d = result.deployment
    if result.bound is Bound.LOAD:
        return (
            f"{d.rate:,.0f} requests/s per host x {d.hold_ms:g} ms held x {HEADROOM:g} headroom = "
            f"{result.needed_per_host} connections per host, over {d.workers} workers."
        )
    if result.bound is Bound.DB_CORES:
        return (
            f"{d.db_cores} database cores run about {result.db_active_limit} active connections at once "
            f"(2 x cores + 1), over {d.processes} worker processes; more would queue inside PostgreSQL."
        )
    if result.bound is Bound.WANTED:
        return f"the pool_size={d.pool_size} asked for."
    if result.bound is Bound.CONCURRENCY:
        return f"a worker serves {d.per_worker} request(s) at once; a connection beyond that is never checked out."
    if d.rate is not None:
        return f"the most that fits: {d.available} available over {d.processes} worker processes."
    example = math.ceil(2000 * d.hold_ms / 1000 * HEADROOM)
    return (
        f"the most that fits ({d.available} available over {d.processes} worker processes), not what the load needs: "
        f"give --rate (requests/s per host) and --hold-ms to size it by the load. At 2,000 requests/s and "
        f"{d.hold_ms:g} ms held, a host needs {example} connections, not {result.pool_size * d.workers:,}: every idle "
        f"backend costs PostgreSQL memory and snapshot time."
    )


def parse_port_range(text: str) -> tuple[int, int]:
    """``"32768-60999"`` (or ``"32768 60999"``, as /proc prints it) as ``(32768, 60999)``."""
    parts = text.replace("-", " ").split()
    try:
        low, high = (int(p) for p in parts)
    except ValueError:
        raise PlanError(f"--port-range {text!r}: expected LOW-HIGH, such as 32768-60999") from None
    return low, high
