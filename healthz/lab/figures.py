"""The lab's vocabulary as types: where PgBouncer sits, a pool's shape, a probe sample, a run's
figures (the database's limits are :class:`healthz.plan.DatabaseLimits`, shared with the doctor).

Each is small, immutable and JSON-able (``to_dict`` / ``from_dict``), so ``results.json`` holds
what the runner measured and the verdict and the report read it back as the same types, never by
parsing a sentence the lab wrote.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from typing import Any


class Placement(str, enum.Enum):
    """Where a scenario's PgBouncer sits, if anywhere.

    ``APP``: on the application host, reached over TCP on 127.0.0.1; ``APP_UNIX``: the same over
    its Unix socket; ``DB``: on the database host, reached over the network like PostgreSQL.
    """

    NONE = "none"
    APP = "app"
    APP_UNIX = "app-unix"
    DB = "db"

    def __str__(self) -> str:  # the value, as in a scenario file, on every Python
        return self.value

    @classmethod
    def parse(cls, value: str | Placement) -> Placement:
        """The placement named ``value``; ValueError naming the accepted ones."""
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"pgbouncer {value!r} is not one of {', '.join(p.value for p in cls)}") from None

    @property
    def pooled(self) -> bool:
        """Whether a PgBouncer runs at all."""
        return self is not Placement.NONE

    @property
    def transport(self) -> str:
        """How the service reaches its database endpoint: ``unix`` through PgBouncer's socket, else ``tcp``."""
        return "unix" if self is Placement.APP_UNIX else "tcp"

    @property
    def where(self) -> str:
        """Where it sits, in a phrase for a table."""
        return {
            Placement.NONE: "no PgBouncer",
            Placement.APP: "app host, 127.0.0.1",
            Placement.APP_UNIX: "app host, Unix socket",
            Placement.DB: "database host",
        }[self]

    def service_url(self, tcp_url: str, unix_url: str) -> str:
        """The URL the service is handed for a PgBouncer listening on both."""
        return unix_url if self is Placement.APP_UNIX else tcp_url


@dataclasses.dataclass(frozen=True)
class PoolShape:
    """A worker's pool as configured: its class, ``pool_size`` and ``max_overflow``.

    ``capacity`` is the most connections it holds at once, None when unbounded (NullPool,
    SingletonThreadPool, which opens one per thread or greenlet, and ``max_overflow=-1``).
    """

    pool_class: str
    pool_size: int
    max_overflow: int

    @property
    def capacity(self) -> int | None:
        if self.pool_class == "QueuePool" and self.max_overflow >= 0:
            return self.pool_size + self.max_overflow
        return None

    @property
    def bounded(self) -> bool:
        """A QueuePool with ``max_overflow=0``: it opens ``pool_size`` connections and reuses them
        (overflow connections are closed on check-in, so any overflow churns)."""
        return self.pool_class == "QueuePool" and self.max_overflow == 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PoolShape:
        return cls(str(data["pool_class"]), int(data["pool_size"]), int(data["max_overflow"]))


def fields_of(cls: type, data: Mapping[str, Any], *, strict: bool = False) -> dict[str, Any]:
    """The entries of ``data`` that are fields of dataclass ``cls`` (older files may lack some, or
    carry keys a later version dropped); with ``strict`` (what a run just measured) a key that is no
    field is a mistake (ValueError)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if strict and unknown:
        raise ValueError(f"figures that {cls.__name__} has no field for: {', '.join(sorted(unknown))}")
    return {k: v for k, v in data.items() if k in names}


@dataclasses.dataclass(frozen=True)
class PoolerFigures:
    """PgBouncer over one run: where it sat and how, and what its console and log counted."""

    placement: Placement
    pool_mode: str
    default_pool_size: int
    instances: int = 1
    logins: int | None = None  # client connections it accepted (the service's connections to it)
    transactions: int | None = None
    cl_waiting_peak: int | None = None
    sv_active_peak: int | None = None
    maxwait_ms_peak: float | None = None
    wait_ms_per_transaction: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "placement": self.placement.value}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PoolerFigures:
        return cls(**{**fields_of(cls, data), "placement": Placement.parse(data["placement"])})


@dataclasses.dataclass(frozen=True)
class HostShare:
    """One application host's share of a run with several hosts."""

    host: str
    address: str
    requests: int | None
    failures: int | None
    failures_by_cause: dict[str, int]
    sessions_opened: int
    refused: int
    backends_peak: int | None
    time_wait_peak: int | None
    established_peak: int | None
    address_unavailable: int

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HostShare:
        return cls(**fields_of(cls, data))


@dataclasses.dataclass(frozen=True)
class DoctorCheck:
    """``healthz doctor`` run during the load, beside the same rules applied to the lab's own figures."""

    exit: int | None
    status: str | None = None
    opened: int | None = None
    sessions_opened: int | None = None
    window: float | None = None
    opened_per_second: float | None = None
    seconds_to_exhaustion: float | None = None
    exhausted: bool = False  # the doctor found the port range full now
    findings: tuple[str, ...] = ()
    measured_status: str | None = None
    measured_sessions_per_second: float | None = None
    agrees: bool | None = False  # None: not compared (the lab's probes had no figures for the doctor's window)
    error: str | None = None  # why it did not run

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DoctorCheck:
        return cls(**{**fields_of(cls, data), "findings": tuple(data.get("findings") or ())})


@dataclasses.dataclass(frozen=True)
class LoadGenerator:
    """locust over one run: its worker processes (1: locust alone), the busiest process's share of
    a core from 1 s in to its end, and whether locust warned of its own CPU."""

    processes: int = 1
    busiest_share: float | None = None
    cpu_warning: bool = False

    #: A process at this share of a core is saturated: its users wait for it, not for the service.
    SATURATED = 0.9

    @property
    def saturated(self) -> bool:
        return self.cpu_warning or (self.busiest_share is not None and self.busiest_share >= self.SATURATED)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoadGenerator:
        return cls(**fields_of(cls, data))


@dataclasses.dataclass(frozen=True)
class RunFigures:
    """One scenario at one concurrency step: what ran and every figure measured.

    A run that could not be measured has ``error`` set and its figures at their defaults.
    ``samples`` are the probes' readings (five a second) and ``history`` locust's, kept for plots.
    """

    scenario: str
    description: str
    summary: str
    worker_class: str
    workers: int
    pool: PoolShape
    concurrency: int
    connection: str
    topology: str
    run_dir: str
    commands: dict[str, str]
    hosts: int = 1
    worker_concurrency: int | None = None  # requests one worker serves at once (threads, greenlets, 1)
    own_service: bool = False  # the team's service (a scenario with app), not the lab's
    fix: dict[str, Any] | None = None  # the fix laid over an own service's code (fixes.Fix's keys, "of" its scenario)
    counterpart: str | None = None  # the lab's scenario that stands for it
    not_taken: tuple[str, ...] = ()  # figures the lab could not take (a service it does not run)
    load_generator: LoadGenerator | None = None
    error: str | None = None
    pgbouncer: PoolerFigures | None = None
    doctor: DoctorCheck | None = None
    by_host: tuple[HostShare, ...] = ()
    seconds: float | None = None
    requests: int = 0
    failures: int = 0
    error_rate: float | None = None
    rps: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    failures_by_cause: dict[str, int] = dataclasses.field(default_factory=dict)
    #: A fixed-rate run (``--rate``): the rate offered, requests due and sent late (:attr:`not_sent` follows).
    rate: float | None = None
    due: int | None = None
    late: int | None = None
    stalled_seconds: float = 0.0
    service_errors: dict[str, int] = dataclasses.field(default_factory=dict)
    address_unavailable: int = 0
    pool_timeouts: int = 0
    sessions_opened: int = 0
    sessions_per_second: float | None = None
    sessions_per_request: float | None = None
    sessions_per_success: float | None = None
    backends_peak: int | None = None
    backends_mean: float | None = None
    backends_left: int | None = None
    time_wait_peak: int | None = None
    established_peak: int | None = None
    ports_held_peak: int | None = None  # TIME_WAIT + ESTABLISHED toward the database at the same moment
    ports: int | None = None
    cpu_seconds: dict[str, float | None] = dataclasses.field(default_factory=dict)
    hold_ms: float | None = None  # mean checkout to check-in, from the service's /metrics
    in_use_mean: float | None = None  # mean client backends in a statement or a transaction (pg_stat_activity)
    checkout_ms: float | None = None  # mean wait for a connection, connecting included
    tcp_tw_reuse: int | None = None  # net.ipv4.tcp_tw_reuse where the service ran
    worker_restarts: int = 0
    worker_timeouts: int = 0
    samples: tuple[Sample, ...] = ()
    history: tuple[dict[str, Any], ...] = ()

    @property
    def measured(self) -> bool:
        return self.error is None

    @property
    def placement(self) -> Placement:
        return self.pgbouncer.placement if self.pgbouncer else Placement.NONE

    @property
    def pgbouncer_logins_per_second(self) -> float | None:
        """Through PgBouncer, the service's connections to it per second (its logged logins), all
        hosts together; None without PgBouncer or its count."""
        logins = self.pgbouncer.logins if self.pgbouncer else None
        return logins / self.seconds if logins is not None and self.seconds else None

    @property
    def causes(self) -> dict[str, int]:
        """Failures by cause in the service's error kinds, most first. An own service's responses
        carry only a status (``499``): where its log names kinds, those replace the bare statuses
        (its log lines, not requests), and the client's own causes stay."""
        statuses = [k for k in self.failures_by_cause if k.isdigit()]
        if not (self.own_service and statuses and self.service_errors):
            return self.failures_by_cause
        kept = {k: v for k, v in self.failures_by_cause.items() if not k.isdigit()}
        return dict(sorted({**kept, **self.service_errors}.items(), key=lambda kv: -kv[1]))

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data.update(
            pool=self.pool.to_dict(),
            pool_capacity=self.pool.capacity,  # derived, for readers of the file (results.csv, jq)
            pgbouncer=self.pgbouncer.to_dict() if self.pgbouncer else None,
            doctor=dataclasses.asdict(self.doctor) if self.doctor else None,
            load_generator=dataclasses.asdict(self.load_generator) if self.load_generator else None,
            by_host=[dataclasses.asdict(h) for h in self.by_host],
            samples=[s.to_dict() for s in self.samples],
            history=list(self.history),
        )
        return data

    @property
    def not_sent(self) -> int | None:
        """A fixed-rate run's requests due but not sent by its end; None without a schedule."""
        return max(0, self.due - self.requests) if self.due is not None else None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, strict: bool = False) -> RunFigures:
        """The figures in ``data``: a ``results.json`` entry (keys of older versions ignored), or with
        ``strict`` what a run just measured, where a key that is no field is a mistake (ValueError)."""
        values = fields_of(cls, data, strict=strict)
        values.update(
            pool=PoolShape.from_dict(data["pool"]),
            pgbouncer=PoolerFigures.from_dict(data["pgbouncer"]) if data.get("pgbouncer") else None,
            doctor=DoctorCheck.from_dict(data["doctor"]) if data.get("doctor") else None,
            by_host=tuple(HostShare.from_dict(h) for h in data.get("by_host") or ()),
            not_taken=tuple(data.get("not_taken") or ()),
            load_generator=LoadGenerator.from_dict(data["load_generator"]) if data.get("load_generator") else None,
            # The runner hands its samples over as they were taken; results.json as dicts.
            samples=tuple(s if isinstance(s, Sample) else Sample.from_dict(s) for s in data.get("samples") or ()),
            history=tuple(data.get("history") or ()),
        )
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class HostSockets:
    """One application host's sockets toward the database's port(s) at a sample."""

    time_wait: int | None
    established: int | None


@dataclasses.dataclass(frozen=True)
class Sample:
    """One reading of the probes (five a second by default). A probe that failed leaves None.

    ``t`` is seconds since sampling began, ``at`` unix time; ``sessions`` is
    ``pg_stat_database.sessions`` and ``backends`` the client backends; ``time_wait`` and
    ``established`` sum every application host's sockets, each host's in ``hosts`` when there are
    several; ``cpu`` is CPU seconds of each process tree so far; ``pooler`` PgBouncer's SHOW POOLS
    and SHOW STATS figures and its logins; ``host_opened`` the connections the first host opened as
    a log counts them (PgBouncer's, or PostgreSQL's with several hosts)."""

    t: float
    at: float
    sessions: int | None = None
    backends: int | None = None
    in_use: int | None = None  # of those, in a statement or a transaction (pg_stat_activity.state)
    backends_by_address: dict[str, int] | None = None
    time_wait: int | None = None
    established: int | None = None
    hosts: tuple[HostSockets, ...] = ()
    cpu: dict[str, float | None] = dataclasses.field(default_factory=dict)
    pooler: dict[str, float] = dataclasses.field(default_factory=dict)
    host_opened: int | None = None

    @property
    def ports_held(self) -> int | None:
        """TIME_WAIT + ESTABLISHED toward the database: the ports taken at this moment."""
        return None if self.time_wait is None else self.time_wait + (self.established or 0)

    def on_first_host(self) -> Sample:
        """This sample with the first application host's sockets in place of the sum (where the doctor runs)."""
        if not self.hosts:
            return self
        first = self.hosts[0]
        return dataclasses.replace(self, time_wait=first.time_wait, established=first.established)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sample:
        values = fields_of(cls, data)
        values["hosts"] = tuple(HostSockets(**h) for h in data.get("hosts") or ())
        return cls(**values)


def top(runs: Sequence[RunFigures]) -> RunFigures:
    """The run at the highest concurrency step."""
    return max(runs, key=lambda r: r.concurrency)
