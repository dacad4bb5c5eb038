"""``healthz check``: one run of a team's own service under load, judged against a budget, for a CI
build to fail on. The run is the lab's (:class:`~healthz.lab.runner.Lab`: a throwaway PostgreSQL or
``--database-url``, a database of the service's own, its command with the lab's placeholders, locust,
PostgreSQL's counters); this module says what a check is (:class:`CheckOptions`, :class:`Budget`), judges
a run's figures (:func:`judge`, pure) and says the result (:class:`CheckResult`: one line, JSON, JUnit XML).

Figures come from PostgreSQL's counters for the service's database (``pg_stat_database.sessions``,
client backends) and from the load, never from the service's own metrics.
"""

from __future__ import annotations

import dataclasses
import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from healthz.lab.figures import RunFigures

#: Sessions per request a pooled service stays under (see docs/check.md): a pool opens its
#: connections once (2 workers x 10 = 20, 0.01 of 2,000 requests), churn opens one per request (1.0),
#: and SQLAlchemy's overflow under a burst tens per hundred requests.
DEFAULT_SESSIONS_PER_REQUEST = 0.02
DEFAULT_CLIENTS = 100
DEFAULT_REQUESTS = 2000
#: The load's cap in seconds when it is bounded by ``requests`` alone.
REQUESTS_CAP_SECONDS = 120.0


class CheckError(ValueError):
    """A check that cannot run as asked; the message names the option and what it accepts."""


@dataclasses.dataclass(frozen=True)
class Budget:
    """What the service must stay within: sessions per request (``None``: not checked), failed
    requests, p99 in ms and peak client backends."""

    max_sessions_per_request: float | None = DEFAULT_SESSIONS_PER_REQUEST
    max_failed: int = 0
    max_p99_ms: float | None = None
    max_backends: int | None = None

    def __post_init__(self) -> None:
        ratio = self.max_sessions_per_request
        if ratio is not None and not (isinstance(ratio, (int, float)) and 0 <= ratio <= 10 and math.isfinite(ratio)):
            raise CheckError(f"--max-sessions-per-request {ratio!r}: expected a number from 0 to 10")
        if not isinstance(self.max_failed, int) or self.max_failed < 0:
            raise CheckError(f"--max-failed {self.max_failed!r}: expected an integer >= 0")
        if self.max_p99_ms is not None and not (isinstance(self.max_p99_ms, (int, float)) and self.max_p99_ms > 0):
            raise CheckError(f"--max-p99-ms {self.max_p99_ms!r}: expected milliseconds > 0")
        if self.max_backends is not None and (not isinstance(self.max_backends, int) or self.max_backends < 1):
            raise CheckError(f"--max-backends {self.max_backends!r}: expected an integer >= 1")


@dataclasses.dataclass(frozen=True)
class CheckOptions:
    """One check, by the CLI's option names: the team's ``app`` command (with the lab's placeholders)
    run in ``app_dir`` with ``python``'s venv first on PATH, ``setup`` run once before it, ``env`` laid
    over the lab's variables, ``path`` the endpoint loaded and ``ready_path`` the one that must answer
    200 first; ``clients`` locust users for ``requests`` requests or ``duration`` seconds (or both:
    whichever ends first), at ``rate`` requests per second in all when set (an open model);
    ``connection`` how clients connect (``close``: a new connection per request)."""

    app: str
    app_dir: Path | None = None
    python: Path | None = None
    setup: str | None = None
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    path: str = "/api/v1/healthz/"
    ready_path: str | None = None
    ready_timeout: float = 60.0
    clients: int = DEFAULT_CLIENTS
    requests: int | None = None
    duration: float | None = None
    rate: float | None = None
    connection: str = "close"
    database_url: str | None = None
    topology: str = "loopback"
    budget: Budget = dataclasses.field(default_factory=Budget)
    #: SQLAlchemy pool arguments laid over every engine the service makes (``pool_size=16,max_overflow=0``).
    sqlalchemy_pool: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.clients, int) or not 1 <= self.clients <= 20_000:
            raise CheckError(f"--clients {self.clients!r}: expected an integer from 1 to 20,000")
        if self.requests is not None and (not isinstance(self.requests, int) or self.requests < 1):
            raise CheckError(f"--requests {self.requests!r}: expected an integer >= 1")
        if self.duration is not None and not (isinstance(self.duration, (int, float)) and 1 <= self.duration <= 3600):
            raise CheckError(f"--duration {self.duration!r}: expected seconds from 1 to 3600")
        if self.rate is not None and not (isinstance(self.rate, (int, float)) and self.rate > 0):
            raise CheckError(f"--rate {self.rate!r}: expected requests per second > 0")
        if self.connection not in ("close", "keep-alive"):
            raise CheckError(f"--connection {self.connection!r}: expected close or keep-alive")

    @property
    def bounded_requests(self) -> int:
        """Requests the load sends at most (the default when neither requests nor duration is set)."""
        if self.requests is not None:
            return self.requests
        return 10_000_000 if self.duration is not None else DEFAULT_REQUESTS

    @property
    def seconds(self) -> float:
        """The load's length in seconds at most."""
        return float(self.duration) if self.duration is not None else REQUESTS_CAP_SECONDS


@dataclasses.dataclass(frozen=True)
class Broken:
    """One budget the run broke: which (``sessions_per_request``, ``failed``, ``p99_ms``,
    ``peak_backends``), the measured value and the limit."""

    budget: str
    value: float
    limit: float

    def sentence(self) -> str:
        shown = f"{self.value:.3g}" if isinstance(self.value, float) else f"{self.value:,}"
        return f"{self.budget.replace('_', ' ')} {shown} > {self.limit:g}"


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """What a check measured and whether it held. ``sessions`` are the sessions PostgreSQL opened on
    the service's database from before it started to after it stopped; ``failed_by_kind`` the failed
    requests by cause (``address_unavailable``, ``503``, ``client timeout`` ...); ``error`` says why
    the check could not run (then ``passed`` is False and the figures may be missing)."""

    app: str
    topology: str
    clients: int
    requests: int = 0
    sessions: int = 0
    sessions_per_request: float | None = None
    failed: int = 0
    failed_by_kind: dict[str, int] = dataclasses.field(default_factory=dict)
    p50_ms: float | None = None
    p99_ms: float | None = None
    peak_backends: int | None = None
    rps: float | None = None
    seconds: float | None = None
    wall_seconds: float | None = None
    broken: tuple[Broken, ...] = ()
    error: str | None = None
    budget: Budget = dataclasses.field(default_factory=Budget)
    output: str | None = None  # the folder with the run's files, when it was kept
    log: str = ""  # when it did not hold: the service log's lines that say why, passwords masked
    stack: dict[str, Any] | None = None  # what the service runs, read from its venv and command
    #: The SQLAlchemy engines its processes made, each with the pool it really got (one per process).
    engines: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.error is None and not self.broken

    @property
    def exit_status(self) -> int:
        """0 held, 1 broke the budget, 2 could not run."""
        return 2 if self.error else (1 if self.broken else 0)

    def summary(self) -> str:
        """One line: the verdict, then what broke, then the figures."""
        if self.error:
            return f"healthz check: could not run: {self.error}"
        ratio = "-" if self.sessions_per_request is None else f"{self.sessions_per_request:.3f}"
        kinds = ", ".join(f"{k} {v:,}" for k, v in list(self.failed_by_kind.items())[:3])
        figures = (
            f"{self.requests:,} requests at {self.clients} clients, {self.sessions:,} sessions ({ratio} per request), "
            f"{self.failed:,} failed{f' ({kinds})' if kinds else ''}, p50 {self.p50_ms or 0:,.0f} ms, "
            f"p99 {self.p99_ms or 0:,.0f} ms, peak backends {self.peak_backends if self.peak_backends is not None else '-'}"
            f" ({self.topology})"
        )
        if self.broken:
            return f"healthz check: FAILED: {'; '.join(b.sentence() for b in self.broken)}: {figures}"
        return f"healthz check: held: {figures}"

    def __str__(self) -> str:
        """The summary, with the log's lines that matter when it did not hold (an assertion's message)."""
        return self.summary() + (f"\nthe service's log, the lines that matter:\n{self.log}" if self.log else "")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.update(passed=self.passed, exit_status=self.exit_status)
        return data


def judge(figures: RunFigures, budget: Budget) -> tuple[Broken, ...]:
    """The budgets ``figures`` broke, in the order a reader checks them."""
    broken = []
    ratio = figures.sessions_per_request
    if budget.max_sessions_per_request is not None and ratio is not None and ratio > budget.max_sessions_per_request:
        broken.append(Broken("sessions_per_request", round(ratio, 4), budget.max_sessions_per_request))
    if figures.failures > budget.max_failed:
        broken.append(Broken("failed", figures.failures, budget.max_failed))
    if budget.max_p99_ms is not None and (figures.p99_ms or 0) > budget.max_p99_ms:
        broken.append(Broken("p99_ms", figures.p99_ms, budget.max_p99_ms))
    if budget.max_backends is not None and (figures.backends_peak or 0) > budget.max_backends:
        broken.append(Broken("peak_backends", figures.backends_peak, budget.max_backends))
    return tuple(broken)


def result_of(options: CheckOptions, figures: RunFigures, topology: str) -> CheckResult:
    """The check's result from the run's figures (pure)."""
    common = {"app": options.app, "topology": topology, "clients": options.clients, "budget": options.budget}
    if figures.error:
        return CheckResult(**common, error=figures.error)
    if not figures.requests:
        return CheckResult(**common, error="no request was sent: the load did not start (see locust.log)")
    return CheckResult(
        **common,
        requests=figures.requests,
        sessions=figures.sessions_opened,
        sessions_per_request=figures.sessions_per_request,
        failed=figures.failures,
        failed_by_kind=dict(figures.failures_by_cause),
        p50_ms=figures.p50_ms,
        p99_ms=figures.p99_ms,
        peak_backends=figures.backends_peak,
        rps=figures.rps,
        seconds=figures.seconds,
        broken=judge(figures, options.budget),
    )


def junit_xml(result: CheckResult) -> str:
    """The result as JUnit XML, one test case per budget, so that a CI system shows which one broke."""
    budgets = [
        ("sessions_per_request", result.budget.max_sessions_per_request),
        ("failed", result.budget.max_failed),
        ("p99_ms", result.budget.max_p99_ms),
        ("peak_backends", result.budget.max_backends),
    ]
    checked = [(name, limit) for name, limit in budgets if limit is not None]
    suite = ET.Element(
        "testsuite",
        name="healthz check",
        tests=str(len(checked)),
        failures=str(len(result.broken)),
        errors="1" if result.error else "0",
        time=f"{result.wall_seconds or 0:.1f}",
    )
    properties = ET.SubElement(suite, "properties")
    for key in ("app", "topology", "clients", "requests", "sessions", "sessions_per_request", "failed", "p99_ms"):
        ET.SubElement(properties, "property", name=key, value=str(getattr(result, key)))
    broken = {b.budget: b for b in result.broken}
    for name, limit in checked:
        case = ET.SubElement(suite, "testcase", classname="healthz.check", name=f"{name} <= {limit:g}")
        if result.error:
            ET.SubElement(case, "error", message=result.error)
        elif name in broken:
            ET.SubElement(case, "failure", message=broken[name].sentence()).text = result.summary()
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"
