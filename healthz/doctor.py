"""``healthz doctor``: find connection churn and a blown connection budget on a live application
host, read-only.

:func:`observe` reads, over a sample window: the host's ``ip_local_port_range`` and
``tcp_tw_reuse``; its TCP sockets toward the database by state, and the connections it opened
(sockets that appear during the window); the database's ``max_connections`` and reserved slots,
client backends by ``application_name`` and client address, and ``pg_stat_database.sessions``
before and after. It only runs ``SELECT``s, in a read-only session, over one connection opened
before the window (so not counted).

:func:`diagnose` turns an :class:`Observation` into a :class:`Diagnosis`: pure, so the lab applies
the same rules to its own measurements.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import ipaddress
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from healthz import sockets
from healthz.plan import TIME_WAIT_SECONDS, DatabaseLimits

#: Fewer connections than this opened in a window is reconnection (a restart, pool_recycle), not churn.
CHURN_MIN_OPENED = 5
#: Client backends above this share of the connections ordinary roles may open is an overrun.
OVERRUN_SHARE = 0.9
#: How long the doctor retries when the database has no slot left for it, before calling it refused.
CONNECT_RETRY_SECONDS = 3.0
#: How PostgreSQL words a refusal for want of a connection slot.
FULL_TEXTS = ("too many clients", "remaining connection slots are reserved")
#: How libpq words a destination with no route or address family on this host.
NO_PATH_TEXTS = ("Network is unreachable", "No route to host", "Address family not supported")
HEALTHY = "healthy"


class Problem(str, enum.Enum):
    """What the doctor can find wrong with a host's connections."""

    CHURN = "connection churn"  # connections opened and closed faster than TIME_WAIT gives their ports back
    OVERRUN = "budget overrun"  # more connections held than the database's slots or the host's ports allow
    # The same EADDRNOTAVAIL with ports to spare: the database's address has no route or address
    # family here (localhost taken as ::1 where IPv6 is disabled).
    UNREACHABLE = "address unreachable"

    def __str__(self) -> str:
        return self.value


CHURN, OVERRUN, UNREACHABLE = Problem.CHURN, Problem.OVERRUN, Problem.UNREACHABLE


class DoctorError(RuntimeError):
    """The host or the database could not be inspected; the message says why (no password)."""


@dataclasses.dataclass
class Observation:
    """What :func:`observe` read. ``opened`` is None when the database is reached over a Unix
    socket (no ports to run out of, no sockets to count); ``sockets_by_state`` leaves out the
    doctor's own connection; ``loopback`` is true when the database's address is a loopback one
    (a pooler on this host). When the doctor's own connection failed with EADDRNOTAVAIL,
    ``unreachable`` says so and the database's figures are None: the host's are what is left."""

    database: str
    transport: str
    port_range: tuple[int, int] | None
    tcp_tw_reuse: int | None
    window: float
    opened: int | None
    sockets_by_state: dict[str, int]
    sessions_opened: int | None
    max_connections: int | None
    reserved_connections: int | None
    backends: list[dict[str, Any]]
    started_at: float = 0.0
    unreachable: str | None = None
    loopback: bool = False
    refused: str | None = None
    backends_peak: int | None = None
    #: The database's addresses this host cannot send to at all, each with the kernel's reason
    #: (found when the doctor's own connection failed with EADDRNOTAVAIL or no route).
    unroutable: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def ports(self) -> int | None:
        return None if self.port_range is None else self.port_range[1] - self.port_range[0] + 1

    @property
    def budget(self) -> int | None:
        """Connections ordinary roles may open: max_connections less the reserved slots."""
        if self.max_connections is None:
            return None
        return DatabaseLimits(self.max_connections, self.reserved_connections or 0).available

    @property
    def backends_total(self) -> int:
        """Client backends: the window's peak, or the breakdown's total when larger."""
        return max(sum(int(b["count"]) for b in self.backends), self.backends_peak or 0)


@dataclasses.dataclass
class Diagnosis:
    """``problems`` found (none: healthy), in the order found; ``findings`` explain them with the
    figures, ``changes`` are the settings to change."""

    problems: tuple[Problem, ...]
    opened_per_second: float
    time_wait_share: float | None
    seconds_to_exhaustion: float | None
    findings: list[str]
    changes: list[str]
    exhausted: bool = False  # the port range toward the database is full now (or the doctor's connect found it so)

    @property
    def healthy(self) -> bool:
        return not self.problems

    @property
    def status(self) -> str:
        """:data:`HEALTHY`, or the problems joined by ``, ``, for a person to read."""
        return ", ".join(p.value for p in self.problems) or HEALTHY

    @classmethod
    def problems_of(cls, data: dict[str, Any]) -> tuple[Problem, ...]:
        """The problems of a diagnosis as :func:`to_dict` wrote it."""
        return tuple(Problem(p) for p in data.get("problems", ()))


def diagnose(obs: Observation) -> Diagnosis:
    """The rules, each with its figures:

    * **connection churn**: the host opened at least :data:`CHURN_MIN_OPENED` connections in the
      window, and more per minute (the time a closed one holds its port in TIME_WAIT) than it holds
      open: its connections do not outlive a minute, so they are not pooled. Over TCP the projected
      TIME_WAIT (rate x 60 s) is set against the port range: at or above it, ``connect()`` will fail
      with EADDRNOTAVAIL, in about ``seconds_to_exhaustion``. Over a Unix socket the database's
      session rate stands in for the host's.
      **Exhausted now**, whatever the rate in the window: sockets toward the database (TIME_WAIT
      and ESTABLISHED) fill :data:`OVERRUN_SHARE` of the range or more, or the doctor's own connect()
      found no port; a range full of closed connections is churn even when few open in the window
      (the ones that fail to open are not counted as opened).
    * **budget overrun**: client backends at or above :data:`OVERRUN_SHARE` of ``max_connections``
      less the reserved slots; or the database refused the doctor a slot; or this host's own budget,
      its ports, taken by connections held open (ESTABLISHED at or above that share of the range,
      or a range found full with more of them than in TIME_WAIT): no churn, too many held.
    """
    opened = obs.opened if obs.opened is not None else (obs.sessions_opened or 0)
    rate = opened / obs.window if obs.window > 0 else 0.0
    established = obs.sockets_by_state.get("ESTABLISHED", 0) if obs.opened is not None else obs.backends_total
    # tcp_tw_reuse 1 (everywhere) or 2 (loopback only) lets connect() take a port still in TIME_WAIT.
    reused = obs.tcp_tw_reuse == 1 or (obs.tcp_tw_reuse == 2 and obs.loopback)
    taken = _Ports.of(obs, reused)
    ports = taken.ports
    share = rate * TIME_WAIT_SECONDS / ports if ports else None
    seconds = None
    if ports and rate > 0 and rate * TIME_WAIT_SECONDS >= ports and not reused:
        seconds = max(0.0, (ports - taken.in_use) / rate)
    if taken.exhausted:
        seconds = 0.0
    problems, changes = [], []
    who = "this host" if obs.opened is not None else "the database (all hosts)"
    findings = [
        f"{who} opened {opened:,} connections in {obs.window:g} s ({rate:,.1f}/s) and holds {established:,} open",
        *taken.findings(obs),
    ]
    churned_full = taken.exhausted and not taken.held  # the range is full of closed connections: churn
    churned = opened >= CHURN_MIN_OPENED and rate * TIME_WAIT_SECONDS > max(established, 1)
    if churned or taken.out_of_ports or churned_full:
        problems.append(CHURN)
        findings.append(_churn_finding(obs, rate, share, ports, reused, seconds))
        changes += _churn_changes(obs, ports)
    overrun, overrun_findings, overrun_changes = _overrun(obs, taken.held, taken.held_open, ports)
    findings += overrun_findings
    if overrun:
        problems.append(OVERRUN)
        changes += overrun_changes
    if obs.unroutable and not taken.exhausted:
        problems.insert(0, UNREACHABLE)
        found, change = _unreachable(obs, taken)
        findings.insert(0, found)
        changes.insert(0, change)
    return Diagnosis(tuple(dict.fromkeys(problems)), rate, share, seconds, findings, changes, taken.exhausted)


@dataclasses.dataclass(frozen=True)
class _Ports:
    """The host's ephemeral ports toward the database, as the doctor found them (TCP only: ``ports``
    is None over a Unix socket)."""

    ports: int | None
    in_use: int  # TIME_WAIT and ESTABLISHED
    held_open: int  # ESTABLISHED
    time_wait: int
    no_port: bool  # the doctor's own connect() found no port
    #: Ports taken by connections held open rather than by closed ones in TIME_WAIT: no churn, a budget.
    held: bool
    #: A full range is the failure itself: the rate in the window can be low precisely because connects fail.
    exhausted: bool

    @classmethod
    def of(cls, obs: Observation, reused: bool) -> _Ports:
        ports = obs.ports if obs.transport == "tcp" else None
        in_use, held_open = sum(obs.sockets_by_state.values()), obs.sockets_by_state.get("ESTABLISHED", 0)
        time_wait = obs.sockets_by_state.get("TIME_WAIT", 0)
        no_port = bool(obs.unreachable) and not obs.refused and not obs.unroutable
        held = bool(ports) and held_open >= time_wait and (no_port or held_open >= OVERRUN_SHARE * ports)
        exhausted = bool(ports) and (no_port or (not reused and in_use >= OVERRUN_SHARE * ports))
        return cls(ports, in_use, held_open, time_wait, no_port, held, exhausted)

    @property
    def out_of_ports(self) -> bool:
        """The doctor found no port, and not because connections held open took them all."""
        return self.no_port and not self.held

    def findings(self, obs: Observation) -> list[str]:
        found = []
        if self.exhausted:
            found.append(
                f"exhausted now: {self.in_use:,} of {self.ports:,} ephemeral ports toward the database are taken "
                f"({self.time_wait:,} in TIME_WAIT, {self.held_open:,} open): new connections fail with EADDRNOTAVAIL now"
            )
        if self.out_of_ports:
            found.append(
                f"the doctor's own connection failed: {obs.unreachable}: this host has no ephemeral port left toward "
                f"the database ({self.in_use:,} sockets of {self.ports or 0:,} ports)"
            )
        return found


def _unreachable(obs: Observation, taken: _Ports) -> tuple[str, str]:
    """The finding and the change when the database's address cannot be reached from this host at
    all while its port range has room: the other cause of "Cannot assign requested address"."""
    where = ", ".join(f"{address} ({why})" for address, why in sorted(obs.unroutable.items()))
    v6 = [a for a in obs.unroutable if ":" in a]
    finding = (
        f"not port exhaustion: this host cannot reach {where}; {taken.in_use:,} of {taken.ports or 0:,} ephemeral "
        "ports toward the database are in use"
    )
    if v6:
        change = (
            f"use 127.0.0.1 or enable IPv6: give the database URL (HOST in Django's DATABASES, the host in SQLAlchemy's "
            f"URL) 127.0.0.1 or the database's IPv4 address, not a name or address that comes to {v6[0]}"
        )
    else:
        change = "use an address of the database this host has a route to, or add the route"
    return finding, change


def _churn_finding(
    obs: Observation, rate: float, share: float | None, ports: int | None, reused: bool, seconds: float | None
) -> str:
    """The churn in numbers: the TIME_WAIT its rate would hold against the port range, and what follows."""
    if share is None:
        return (
            "connection churn: new database sessions faster than connections are kept (over a Unix socket "
            "no ports run out, but every connection costs a backend start)"
        )
    if reused:
        ending = (
            f"tcp_tw_reuse={obs.tcp_tw_reuse} lets connect() reuse those ports toward "
            f"{'this loopback address' if obs.loopback else 'the database'}, so they do not run out, but every "
            f"request still pays for a new connection"
        )
    elif seconds == 0:
        ending = "the range is exhausted now: connect() fails with EADDRNOTAVAIL"
    elif seconds is not None:
        ending = f"the range runs out in about {seconds:,.0f} s, then connect() fails with EADDRNOTAVAIL"
    else:
        ending = "below the range for now, but each burst takes more"
    return (
        f"connection churn: at {rate:,.1f}/s, TIME_WAIT would hold {rate * TIME_WAIT_SECONDS:,.0f} of "
        f"{ports:,} ports ({share:.0%}): {ending}"
    )


def _churn_changes(obs: Observation, ports: int | None) -> list[str]:
    """The settings that end churn, in the words of SQLAlchemy, Django and PgBouncer."""
    changes = [
        "keep connections open: a QueuePool sized to what a worker holds at peak, with no overflow "
        "(HEALTHZ_POOL_CLASS=QueuePool HEALTHZ_POOL_SIZE=N HEALTHZ_MAX_OVERFLOW=0; SQLAlchemy create_engine(pool_size=N, "
        "max_overflow=0); Django: CONN_MAX_AGE > 0 with gthread workers, since under eventlet every greenlet is a thread "
        "with its own connection); healthz plan sizes N",
        "or put PgBouncer on this host and connect over its Unix socket: no ephemeral ports toward the database",
    ]
    if obs.port_range and ports:
        changes.append(
            f"widening net.ipv4.ip_local_port_range (now {obs.port_range[0]}-{obs.port_range[1]}) or setting "
            f"net.ipv4.tcp_tw_reuse=1 (now {obs.tcp_tw_reuse}) only moves the limit, not the cost: {ports:,} ports / "
            f"{TIME_WAIT_SECONDS} s = {ports / TIME_WAIT_SECONDS:,.0f} connections/s sustained without reuse, and "
            f"every request still opens a connection"
        )
    return changes


def _overrun(
    obs: Observation, ports_held: bool, held_open: int, ports: int | None
) -> tuple[bool, list[str], list[str]]:
    """``(overrun, findings, changes)``: this host's ports taken by connections held open, the
    database refusing the doctor, or its backends near the budget; the backends line either way."""
    overrun, findings, changes = False, [], []
    if ports_held:
        overrun = True
        findings.append(
            f"budget overrun: this host holds {held_open:,} connections to the database open, "
            f"{held_open / ports:.0%} of its {ports:,} ephemeral ports: one more and connect() fails with "
            f"EADDRNOTAVAIL (a connection per thread or greenlet, as Django's CONN_MAX_AGE under eventlet)"
        )
    if obs.refused:
        overrun = True
        findings.append(f"budget overrun: the database refused the doctor's own connection: {obs.refused}")
    elif obs.budget is None:
        findings.append("client backends: not read (the database was not reachable)")
    else:
        findings.append(
            f"client backends: {obs.backends_total:,} of {obs.budget:,} (max_connections {obs.max_connections:,} "
            f"- {obs.reserved_connections} reserved)"
        )
    if obs.budget is not None and obs.backends_total >= OVERRUN_SHARE * obs.budget:
        overrun = True
        findings.append(
            f"budget overrun: {obs.backends_total:,} backends use {obs.backends_total / obs.budget:.0%} of the "
            f"{obs.budget:,} available; the next ones get 'too many clients already'"
        )
    if overrun:
        if ports_held:
            changes.append(
                "hold fewer connections: a QueuePool with pool_size per worker well under the port range "
                "(HEALTHZ_POOL_CLASS=QueuePool HEALTHZ_MAX_OVERFLOW=0), not a connection per thread or greenlet"
            )
        changes += [
            "size every pool so that hosts x workers x (pool_size + max_overflow) stays below the budget: "
            "healthz plan --hosts H --workers W --max-connections M",
            "or put PgBouncer (pool_mode = transaction) in front of the database, its default_pool_size within the budget",
        ]
    return overrun, findings, changes


# -- reading a live host ---------------------------------------------------------------------
def _read_sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", *name.split(".")).read_text().strip()
    except OSError:
        return None


def _libpq_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return scheme.split("+", 1)[0] + sep + rest


def observe(
    database_url: str,
    sample: float,
    interval: float = 0.25,
    read_sockets: Callable[[int], list[sockets.Socket]] | None = None,
) -> Observation:
    """Read the host and the database for ``sample`` seconds (see the module docstring).
    :class:`DoctorError` when either cannot be read."""
    from sqlalchemy.engine import make_url

    from healthz.config import mask_password

    safe = mask_password(database_url)
    try:
        url = make_url(database_url)
    except Exception:  # sqlalchemy raises ArgumentError, and ValueError for a bad port
        raise DoctorError(
            f"--database-url {safe}: not a database URL (postgresql://USER:PASSWORD@HOST:PORT/DBNAME)"
        ) from None
    host = url.host or url.query.get("host") or ""
    transport = "unix" if not host or str(host).startswith("/") else "tcp"
    port = url.port or 5432
    read_sockets = read_sockets or (lambda p: sockets.read("/proc/self/net", p))
    conn, unreachable, refused = _connect(database_url, transport, safe)
    unroutable = _unroutable(str(host), port, unreachable) if transport == "tcp" and unreachable else {}
    with contextlib.closing(conn) if conn else contextlib.nullcontext():
        max_connections, reserved, own_port, server_addr = _limits(conn) if conn else (None, None, None, None)
        # What this host connects to; through a pooler the server's own address differs, and is not what loopback is about.
        host_addresses = sockets.resolve(str(host), port) if transport == "tcp" else set()
        addresses = host_addresses | ({server_addr} if server_addr and transport == "tcp" else set())

        def toward() -> list[sockets.Socket]:
            if transport != "tcp":
                return []
            return [s for s in sockets.toward(read_sockets(port), port, addresses) if s.local_port != own_port]

        watched = _watch(conn, toward, sample, interval)
    port_range, tcp_tw_reuse = _kernel(transport)
    return Observation(
        database=safe,
        transport=transport,
        port_range=port_range,
        tcp_tw_reuse=tcp_tw_reuse,
        window=round(watched.window, 3),
        opened=watched.counter.opened if transport == "tcp" else None,
        sockets_by_state=dict(sockets.states(watched.last)),
        sessions_opened=watched.sessions_opened,
        max_connections=max_connections,
        reserved_connections=reserved,
        backends=watched.backends,
        started_at=watched.started_at,
        unreachable=unreachable or refused,
        refused=refused,
        backends_peak=watched.backends_peak,
        unroutable=unroutable,
        loopback=bool(host_addresses)
        and all(ipaddress.ip_address(a).is_loopback for a in host_addresses if sockets.is_ip(a)),
    )


def _limits(conn) -> tuple[int, int, int, str | None]:
    """``(max_connections, reserved slots, this connection's client port, the server's address)``."""
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            "SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int "
            "+ coalesce(current_setting('reserved_connections', true)::int, 0), inet_client_port(), "
            "host(inet_server_addr())"
        )
        return cur.fetchone()


@dataclasses.dataclass
class _Watched:
    counter: sockets.OpenedCounter
    last: list
    started_at: float
    window: float
    sessions_opened: int | None
    backends_peak: int | None
    backends: list[dict[str, Any]]


def _watch(conn, toward: Callable[[], list], sample: float, interval: float) -> _Watched:
    """Watch this host's sockets toward the database (``toward``) and the database's counters
    (``conn``, when there is one) every ``interval`` seconds for ``sample`` seconds."""
    first = toward()
    counter = sockets.OpenedCounter(first)
    started_at, began = time.time(), time.monotonic()
    sessions_before = _sessions(conn) if conn else None
    deadline, last = began + sample, first
    backends_peak = _backends_count(conn) if conn else None
    while time.monotonic() < deadline:
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
        last = toward()
        counter.add(last)
        if conn:
            backends_peak = max(backends_peak or 0, _backends_count(conn))
    window = time.monotonic() - began
    sessions_opened = _sessions(conn) - sessions_before if conn else None
    return _Watched(counter, last, started_at, window, sessions_opened, backends_peak, _backends(conn) if conn else [])


def _connect(database_url: str, transport: str, safe: str):
    """``(connection, unreachable, refused)``: a read-only connection to the database; or None and
    why this host could not get one that is itself a diagnosis (no ephemeral port left; no slot left
    for :data:`CONNECT_RETRY_SECONDS`). :class:`DoctorError` for any other failure."""
    import psycopg2

    from healthz.config import mask_password

    retry_until = time.monotonic() + CONNECT_RETRY_SECONDS
    while True:
        try:
            conn = psycopg2.connect(
                _libpq_url(database_url),
                connect_timeout=10,
                application_name="healthz-doctor",
                options="-c default_transaction_read_only=on",
            )
            return conn, None, None
        except psycopg2.Error as exc:
            first = mask_password((str(exc).strip().splitlines() or [type(exc).__name__])[0])
            # The failures themselves: this host has no port left to reach the database, or the database
            # has no slot left for it. The host's sockets still tell the rest.
            if transport == "tcp" and any(text in first for text in (sockets.EADDRNOTAVAIL_TEXT, *NO_PATH_TEXTS)):
                return None, first, None
            if any(text in first for text in FULL_TEXTS):
                if time.monotonic() < retry_until:  # slots come and go under churn
                    time.sleep(0.1)
                    continue
                return None, None, f"{first} (for {CONNECT_RETRY_SECONDS:g} s)"
            raise DoctorError(f"cannot connect to {safe}: {first}") from None


def _unroutable(host: str, port: int, error: str | None) -> dict[str, str]:
    """The database's addresses this host cannot send to at all, when every one of them is such
    (an address that can be reached leaves EADDRNOTAVAIL to port exhaustion); :class:`DoctorError`
    for a "no route" failure that is not that either."""
    addresses = sockets.resolve(host, port)
    found = sockets.unroutable(addresses, port)
    if found and set(found) >= addresses:
        return found
    if error and sockets.EADDRNOTAVAIL_TEXT not in error:
        from healthz.config import mask_password

        raise DoctorError(f"cannot connect to {mask_password(host)}:{port}: {error}")
    return {}


def _kernel(transport: str) -> tuple[tuple[int, int] | None, int | None]:
    """This host's ``ip_local_port_range`` and ``tcp_tw_reuse``; :class:`DoctorError` when the range
    cannot be read for a TCP database (not the Linux host that runs the service)."""
    low_high = _read_sysctl("net.ipv4.ip_local_port_range")
    reuse = _read_sysctl("net.ipv4.tcp_tw_reuse")
    if transport == "tcp" and low_high is None:
        raise DoctorError(
            "cannot read /proc/sys/net/ipv4/ip_local_port_range: run the doctor on the Linux host that runs the service"
        )
    port_range = tuple(int(v) for v in low_high.split()) if low_high else None
    return port_range, int(reuse) if reuse and reuse.isdigit() else None


def _sessions(conn) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        row = cur.fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _backends_count(conn) -> int:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        return int(cur.fetchone()[0])


def _backends(conn) -> list[dict[str, Any]]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT coalesce(application_name, ''), host(client_addr), count(*) FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2"
        )
        return [
            {"application_name": name, "client_addr": addr or "local", "count": count}
            for name, addr, count in cur.fetchall()
        ]


def render(obs: Observation, diagnosis: Diagnosis) -> str:
    """The observation and the diagnosis for a terminal: figures first, then what to change."""
    range_text = f"{obs.port_range[0]}-{obs.port_range[1]} ({obs.ports:,} ports)" if obs.port_range else "unknown"
    states = ", ".join(f"{k} {v:,}" for k, v in sorted(obs.sockets_by_state.items(), key=lambda kv: -kv[1])) or "none"
    lines = [
        f"Database: {obs.database} over {'TCP' if obs.transport == 'tcp' else 'a Unix socket'}; sampled {obs.window:g} s",
        f"This host: ip_local_port_range {range_text}, tcp_tw_reuse {obs.tcp_tw_reuse if obs.tcp_tw_reuse is not None else 'unknown'}",
        f"  sockets toward the database: {states}"
        if obs.transport == "tcp"
        else "  (Unix socket: no ephemeral ports used)",
        f"  connections opened: {obs.opened:,} ({diagnosis.opened_per_second:,.1f}/s)"
        if obs.opened is not None
        else "",
    ]
    if obs.unreachable:
        lines.append(f"Database: not reachable from this host: {obs.unreachable}")
    else:
        lines += [
            f"Database: sessions opened {obs.sessions_opened:,} ({obs.sessions_opened / obs.window if obs.window else 0:,.1f}/s, "
            f"all hosts); max_connections {obs.max_connections:,}, {obs.reserved_connections} reserved",
            "  client backends by application_name and client address:" + ("" if obs.backends else " none"),
            *(
                f"    {b['count']:>6,}  {b['application_name'] or '(none)'}  {b['client_addr']}"
                for b in obs.backends[:15]
            ),
        ]
    if diagnosis.exhausted:
        lines.append("  the port range toward the database is exhausted now")
    elif diagnosis.seconds_to_exhaustion is not None:
        lines.append(f"  estimated seconds until the port range is exhausted: {diagnosis.seconds_to_exhaustion:,.0f}")
    severity = " (exhausted now)" if diagnosis.exhausted else ""
    lines += ["", f"Diagnosis: {diagnosis.status}{severity}", *(f"  - {f}" for f in diagnosis.findings)]
    if diagnosis.changes:
        lines += ["Change:", *(f"  - {c}" for c in diagnosis.changes)]
    return "\n".join(line for line in lines if line != "")


def to_dict(obs: Observation, diagnosis: Diagnosis) -> dict[str, Any]:
    return {
        "observation": {
            **dataclasses.asdict(obs),
            "ports": obs.ports,
            "budget": obs.budget,
            "backends_total": obs.backends_total,
        },
        "diagnosis": {
            **dataclasses.asdict(diagnosis),
            "problems": [p.value for p in diagnosis.problems],
            "status": diagnosis.status,
            "healthy": diagnosis.healthy,
        },
    }
