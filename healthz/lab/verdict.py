"""Judging a lab run: figures in, verdicts out. Pure: no I/O, no reading of sentences.

A run is a :class:`~healthz.lab.figures.RunFigures` (as saved in ``results.json``). A
scenario's :class:`Verdict` is an :class:`Outcome`, a cause, the worst run and typed
:class:`Finding` objects, each of which renders its own sentence. Over every scenario,
:mod:`healthz.lab.advice` says what to change; :mod:`healthz.lab.report` only renders these.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Iterable
from typing import Any

from healthz.lab.figures import Placement, RunFigures
from healthz.plan import TIME_WAIT_SECONDS, DatabaseLimits

#: A scenario "failed" when more than this share of its requests failed at some step.
FAILURE_THRESHOLD = 0.001
#: ... or when no request completed for this many seconds while clients waited (a stuck worker).
STALL_THRESHOLD = 2.0

Run = RunFigures


class Outcome(str, enum.Enum):
    """What a scenario's runs show."""

    FAILED = "FAILED"
    AT_RISK = "at risk"  # held, but only because the run was too short for its churn to run the ports out
    HELD = "held"
    NOT_MEASURED = "not measured"

    def __str__(self) -> str:
        return self.value


def number(value: Any, digits: int = 0) -> str:
    """A figure as the findings and the report print it: thousands separated, ``digits`` decimals,
    ``-`` when missing (None or NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def percent(share: float | None) -> str:
    """A share (0.21) as the findings and the report print it: ``21%``, two significant digits
    below 10% (``0.72%``), ``-`` when missing."""
    if share is None:
        return "-"
    if share == 0:
        return "0%"
    return f"{share * 100:.2g}%" if share < 0.1 else f"{share * 100:.0f}%"


_n = number


# -- figures read off a run --------------------------------------------------------------------
def measured(runs: Iterable[Run]) -> list[Run]:
    """The runs that were measured (no start-up error)."""
    return [r for r in runs if r.measured]


def port_churn_per_host(run: Run) -> float | None:
    """New TCP connections per second that one application host opened across the network, each
    leaving a port in TIME_WAIT that loopback's reuse does not give back: to PgBouncer on the
    database host (its logged logins), else to PostgreSQL (sessions; PgBouncer on the app host
    keeps its own few), shared evenly by the hosts."""
    rate = run.pgbouncer_logins_per_second if run.placement is Placement.DB else run.sessions_per_second
    return None if rate is None else rate / (run.hosts or 1)


def ports_needed(connections_per_second: float | None, seconds: float = TIME_WAIT_SECONDS) -> int | None:
    """Client ports a sustained rate of new connections keeps unusable: rate x 60 s in TIME_WAIT (or
    x ``seconds``, :func:`seconds_held`)."""
    return None if connections_per_second is None else round(connections_per_second * seconds)


#: With tcp_tw_reuse=1, connect() may take a port in TIME_WAIT once its last timestamp is 1 s old.
TW_REUSE_SECONDS = 1


def seconds_held(run: Run) -> float:
    """How long a closed connection keeps its client port from a new one: 60 s, or 1 s with tcp_tw_reuse=1."""
    return TW_REUSE_SECONDS if run.tcp_tw_reuse == 1 else TIME_WAIT_SECONDS


def stalled(run: Run) -> bool:
    return (run.stalled_seconds or 0) >= STALL_THRESHOLD


def run_failed(run: Run) -> bool:
    return (run.error_rate or 0) > FAILURE_THRESHOLD or run.worker_timeouts > 0 or stalled(run)


# -- findings ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Finding:
    """Something a scenario's figures show beyond its outcome; :meth:`sentence` says it."""

    def sentence(self) -> str:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class OverflowChurn(Finding):
    """More sessions opened than the pools can hold: overflow connections closed on check-in."""

    sessions_opened: int
    concurrency: int
    hosts: int
    workers: int  # per host
    capacity: int
    rate_per_host: float | None
    time_wait_peak: int | None
    ports: int | None

    def sentence(self) -> str:
        total = self.hosts * self.workers
        who = f"{self.hosts} hosts x {self.workers} workers" if self.hosts > 1 else f"{total} workers"
        text = (
            f"Overflow churn: {self.sessions_opened:,} sessions opened at {self.concurrency:,} clients although "
            f"{who} x pool of {self.capacity} hold at most {total * self.capacity}: connections beyond pool_size "
            f"are closed on check-in and reopened on the next burst. Sustained, {_n(self.rate_per_host)} sessions/s "
            f"{'per host ' if self.hosts > 1 else ''}keep {_n(ports_needed(self.rate_per_host))} client ports in TIME_WAIT"
        )
        if self.ports:
            text += f" (peak here {_n(self.time_wait_peak)} of {self.ports:,} ports in range)"
        return text + "."


@dataclasses.dataclass(frozen=True)
class PoolTooSmall(Finding):
    """Requests waited longer than ``pool_timeout``."""

    pool_timeouts: int
    concurrency: int

    def sentence(self) -> str:
        return (
            f"Pool smaller than the load: {self.pool_timeouts:,} requests waited longer than pool_timeout at "
            f"{self.concurrency:,} clients."
        )


@dataclasses.dataclass(frozen=True)
class BudgetExceeded(Finding):
    """Every worker's pool full would take more connections than the database has for clients."""

    hosts: int
    workers: int  # per host
    capacity: int
    available: int

    @property
    def needed(self) -> int:
        return self.hosts * self.workers * self.capacity

    def arithmetic(self) -> str:
        """The figures alone: ``2 workers x 10 connections = 20 exceeds max_connections minus reserved (17)``."""
        who = f"{self.hosts} hosts x {self.workers} workers" if self.hosts > 1 else f"{self.workers} workers"
        return (
            f"{who} x {self.capacity} connections = {self.needed:,} exceeds max_connections minus reserved "
            f"({self.available:,})"
        )

    def sentence(self) -> str:
        return f"Budget: {self.arithmetic()}."


@dataclasses.dataclass(frozen=True)
class MaxConnectionsReached(Finding):
    """PostgreSQL refused connections: ``too many clients``."""

    refused: int
    concurrency: int

    def sentence(self) -> str:
        return f"max_connections reached: {self.refused:,} too_many_clients at {self.concurrency:,} clients."


@dataclasses.dataclass(frozen=True)
class PortsAtRisk(Finding):
    """A run that held only because it was short: its sustained churn needs more ports than the range."""

    concurrency: int
    rate_per_host: float
    to_pgbouncer: bool
    hosts: int
    ports: int
    seconds: float = TIME_WAIT_SECONDS  # how long each keeps its port (seconds_held)

    def sentence(self) -> str:
        what = "connections to PgBouncer" if self.to_pgbouncer else "sessions"
        per_host = " per application host" if self.hosts > 1 else ""
        return (
            f"but at {self.concurrency:,} clients it opened {_n(self.rate_per_host)} {what}/s{per_host}, which keep "
            f"{_n(ports_needed(self.rate_per_host, self.seconds))} client ports in TIME_WAIT when sustained, more than the "
            f"{self.ports:,} in range: a longer run exhausts them"
        )


#: Sessions per request above which a run churns: a pool opens its connections once (docs/check.md).
CHURN_PER_REQUEST = 0.02
#: Linux's default ip_local_port_range (32768-60999): an application host's unless it is tuned.
LINUX_PORTS = 28_232


@dataclasses.dataclass(frozen=True)
class ChurnHidden(Finding):
    """A run on loopback that held while opening connections per request: loopback hands TIME_WAIT
    ports back at once (tcp_tw_reuse=2), an application host keeps each for 60 s."""

    concurrency: int
    per_request: float
    ports: int

    @property
    def exhausting_rps(self) -> float:
        """Requests per second at which its churn keeps the whole range in TIME_WAIT."""
        return self.ports / TIME_WAIT_SECONDS / self.per_request

    def sentence(self) -> str:
        return (
            f"but at {self.concurrency:,} clients it opened {self.per_request:.2f} sessions per request, on loopback, "
            f"which hands their ports back at once; an application host keeps each in TIME_WAIT for 60 s and, with "
            f"{self.ports:,} ports and tcp_tw_reuse off, runs out at {_n(self.exhausting_rps)} requests/s "
            f"({_n(self.ports / TIME_WAIT_SECONDS)} new connections/s)"
        )


def hidden_churn(runs: list[Run]) -> ChurnHidden | None:
    """The loopback run that churned most (sessions per request above :data:`CHURN_PER_REQUEST`)
    projected onto an application host's range (this host's, else Linux's default), or None."""
    churned = [r for r in runs if r.topology == "loopback" and (r.sessions_per_request or 0) > CHURN_PER_REQUEST]
    if not churned:
        return None
    r = max(churned, key=lambda r: r.sessions_per_request)
    return ChurnHidden(r.concurrency, r.sessions_per_request, r.ports or LINUX_PORTS)


def findings(runs: list[Run], limits: DatabaseLimits | None) -> list[Finding]:
    """Where pooling alone is not enough, from one scenario's measured runs: overflow churn, a pool
    smaller than the concurrency (pool timeouts), workers x pool over the database's budget, and
    PostgreSQL's refusals."""
    if not runs:
        return []
    out: list[Finding] = []
    first = runs[0]
    size, hosts, workers = first.pool.capacity, first.hosts or 1, first.workers
    in_process = not first.placement.pooled  # through PgBouncer, PostgreSQL's sessions are PgBouncer's
    # Refused connections are retried, not churned.
    churn = [
        r
        for r in runs
        if size
        and in_process
        and r.sessions_opened > 2 * hosts * workers * size
        and not r.causes.get("too_many_clients")
    ]
    if churn:
        r = max(churn, key=lambda r: r.sessions_per_second or 0)
        out.append(
            OverflowChurn(
                r.sessions_opened,
                r.concurrency,
                hosts,
                workers,
                size,
                port_churn_per_host(r),
                r.time_wait_peak,
                r.ports,
            )
        )
    timeouts = [r for r in runs if r.pool_timeouts]
    if timeouts:
        r = max(timeouts, key=lambda r: r.pool_timeouts)
        out.append(PoolTooSmall(r.pool_timeouts, r.concurrency))
    if size and in_process and limits and limits.available and hosts * workers * size > limits.available:
        out.append(BudgetExceeded(hosts, workers, size, limits.available))
    refused = [r for r in runs if r.causes.get("too_many_clients")]
    if refused:
        out.append(MaxConnectionsReached(refused[0].causes["too_many_clients"], refused[0].concurrency))
    return out


# -- one scenario ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Verdict:
    """One scenario's runs judged: the outcome, its cause (an error kind, ``stopped answering``,
    ``worker timeouts``; None when it held), the run that decided it, and the findings."""

    scenario: str
    outcome: Outcome
    cause: str | None
    worst: Run | None
    findings: tuple[Finding, ...] = ()
    error: str | None = None  # why nothing was measured

    @property
    def failed(self) -> bool | None:
        """True when it failed, False when it held (at risk or not), None when not measured."""
        return None if self.outcome is Outcome.NOT_MEASURED else self.outcome is Outcome.FAILED

    def has(self, kind: type[Finding]) -> bool:
        return any(isinstance(f, kind) for f in self.findings)

    def first(self, kind: type[Finding]) -> Finding | None:
        return next((f for f in self.findings if isinstance(f, kind)), None)


def judge(scenario: str, runs: list[Run], limits: DatabaseLimits | None) -> Verdict:
    """The verdict of ``scenario`` over its runs (every concurrency step)."""
    done = measured(runs)
    if not done:
        return Verdict(scenario, Outcome.NOT_MEASURED, "not measured", None, (), runs[0].error if runs else "no runs")
    worst = max(done, key=lambda r: (r.error_rate or 0, r.concurrency))
    longest = max(done, key=lambda r: r.stalled_seconds or 0)
    if stalled(longest) and (worst.error_rate or 0) <= FAILURE_THRESHOLD:
        worst = longest
    found = findings(done, limits)
    if run_failed(worst):
        cause = next(iter(worst.causes), None)
        if cause is None:
            cause = "stopped answering" if stalled(worst) else "worker timeouts"
        return Verdict(scenario, Outcome.FAILED, cause, worst, tuple(found))
    risky = [r for r in done if r.ports and (ports_needed(port_churn_per_host(r), seconds_held(r)) or 0) > r.ports]
    if risky:
        r = max(risky, key=port_churn_per_host)
        risk = PortsAtRisk(
            r.concurrency, port_churn_per_host(r), r.placement is Placement.DB, r.hosts or 1, r.ports, seconds_held(r)
        )
        return Verdict(scenario, Outcome.AT_RISK, None, worst, (risk, *found))
    hidden = hidden_churn(done)
    if hidden:
        return Verdict(scenario, Outcome.AT_RISK, None, worst, (hidden, *found))
    return Verdict(scenario, Outcome.HELD, None, worst, tuple(found))


def judge_all(results: list[Run], limits: DatabaseLimits | None) -> dict[str, Verdict]:
    """Every scenario's verdict, in the order the scenarios first ran."""
    names = list(dict.fromkeys(r.scenario for r in results))
    return {name: judge(name, [r for r in results if r.scenario == name], limits) for name in names}


# -- the mechanism of a port exhaustion --------------------------------------------------------
class Exhaustion(str, enum.Enum):
    """Why a run ran out of client ports."""

    CHURN = "churn"  # closed connections waiting out TIME_WAIT
    HELD_OPEN = "held open"  # more connections open at once than the range has ports

    def __str__(self) -> str:
        return self.value


def exhaustion(run: Run) -> Exhaustion:
    """Churn when TIME_WAIT dominates and most successful requests opened a connection, else held open."""
    time_wait, established = run.time_wait_peak or 0, run.established_peak or 0
    if time_wait >= established / 2 and (run.sessions_per_success or 0) >= 0.5:
        return Exhaustion.CHURN
    return Exhaustion.HELD_OPEN


class PoolerEffect(str, enum.Enum):
    """What a PgBouncer placement did to the application host's ephemeral ports."""

    MOVED = "only moved"  # the service's connections to PgBouncer ran the host out of ports
    MOVED_AT_RISK = "only moved, at risk"  # its sustained rate would, in a longer run
    HELD_BY_REUSE = "held by TIME_WAIT reuse"  # loopback's tcp_tw_reuse=2 gave the ports back
    REMOVED = "removed"

    def __str__(self) -> str:
        return self.value


def pooler_effect(run: Run) -> PoolerEffect:
    """:class:`PoolerEffect` of ``run``, from its figures."""
    ports, time_wait = run.ports, busiest_time_wait(run)
    if run.address_unavailable or run.causes.get("address_unavailable"):
        return PoolerEffect.MOVED
    needed, where = ports_needed(port_churn_per_host(run)), run.placement
    if where is Placement.DB and ports and needed is not None and needed > ports:
        return PoolerEffect.MOVED_AT_RISK
    if where is Placement.APP and ports and time_wait >= ports / 10:
        return PoolerEffect.HELD_BY_REUSE
    return PoolerEffect.REMOVED


def busiest_time_wait(run: Run) -> int:
    """TIME_WAIT peak on the busiest application host (each has a port range of its own)."""
    if run.by_host:
        return max((h.time_wait_peak or 0) for h in run.by_host)
    return run.time_wait_peak or 0


# -- the connection budget ---------------------------------------------------------------------
class Counted(str, enum.Enum):
    """How a setup's connections to PostgreSQL are counted."""

    IN_PROCESS = "in-process"  # hosts x workers x the pool's capacity
    PGBOUNCER_PER_HOST = "pgbouncer-per-host"  # hosts x PgBouncer's default_pool_size
    PGBOUNCER_ON_DB = "pgbouncer-on-db"  # one default_pool_size for every host
    UNBOUNDED = "unbounded"  # one per request in flight

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class ConnectionNeed:
    """Connections a run's setup needs from PostgreSQL at most, and how it is counted."""

    how: Counted
    needed: int | None  # None: no bound (one per request in flight)
    hosts: int
    workers: int
    per_instance: int | None  # pool capacity, or PgBouncer's default_pool_size


def connection_need(run: Run) -> ConnectionNeed:
    hosts, workers, bouncer = run.hosts or 1, run.workers, run.pgbouncer
    if bouncer:
        size = bouncer.default_pool_size
        if run.placement is Placement.DB:
            return ConnectionNeed(Counted.PGBOUNCER_ON_DB, size, hosts, workers, size)
        return ConnectionNeed(Counted.PGBOUNCER_PER_HOST, hosts * size, hosts, workers, size)
    size = run.pool.capacity
    if not size:
        return ConnectionNeed(Counted.UNBOUNDED, None, hosts, workers, None)
    return ConnectionNeed(Counted.IN_PROCESS, hosts * workers * size, hosts, workers, size)
