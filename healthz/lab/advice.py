"""What a team should change, judged from a lab run: the answer, the setup to adopt, its pool sized
by the measured load, the evidence (one figure each) and settings to paste per framework. Pure:
verdicts and figures in, :class:`Advice` out; :mod:`healthz.lab.report` renders it.

The setup recommended is the simplest that held, not the fastest: an in-process pool before
PgBouncer on the application host, before PgBouncer on the database host. A setup "held" when it held
(not at risk) at the highest step and fits the connection budget. A component is added only when no
simpler setup held, and the advice says why (the budget or the ports): speed alone adds no part. Among
the setups of the simplest component that held, those serving at least ``1 - MARGIN`` of the fastest
one's requests per second count as equal; of those the one closest to the setup that failed wins (its
worker class: the smallest change), then the one needing fewest connections.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence

from healthz import plan as plans
from healthz.config import WORKER_CLASSES
from healthz.lab import verdict
from healthz.lab.figures import Placement, RunFigures, top
from healthz.lab.snippets import PROXY_NOTE, Backing, Snippet, snippets
from healthz.lab.topology import DEFAULT_TW_REUSE
from healthz.plan import DatabaseLimits

#: Requests per second within this share of the fastest setup count as equal: on 2 shared cores one
#: scenario's requests/s varied by 10-25% from run to run (beside a test run, by more), so only among
#: setups of one component: a faster run with PgBouncer than a pool that held is not a reason to add it.
MARGIN = 0.25
#: At most this many lines answer before the detail (the answer, the change, the evidence).
ANSWER_LINES = 8

_n = verdict.number


class Reply(str, enum.Enum):
    """The answer to "does connection pooling alone fix it?" for one run of the lab."""

    YES = "Yes"  # an in-process bounded pool held
    WITH_PGBOUNCER = "Not alone"  # only a setup with PgBouncer held: the budget or the ports needed it
    NO = "No"  # no pooled setup held
    NOT_SHOWN = "Not shown here"  # nothing pooled was measured
    OWN_SERVICE = "Own service"  # only the team's own services ran: their outcome, no lab setup beside them

    def __str__(self) -> str:
        return self.value


class Component(int, enum.Enum):
    """What a setup adds between the service and PostgreSQL, simplest first."""

    IN_PROCESS = 0  # the worker's own pool (SQLAlchemy QueuePool, Django's pool or CONN_MAX_AGE)
    PGBOUNCER_APP = 1  # PgBouncer on each application host
    PGBOUNCER_DB = 2  # one PgBouncer on the database host

    @classmethod
    def of(cls, run: RunFigures) -> Component:
        if run.placement is Placement.DB:
            return cls.PGBOUNCER_DB
        return cls.PGBOUNCER_APP if run.placement.pooled else cls.IN_PROCESS

    def __str__(self) -> str:
        return {0: "an in-process pool", 1: "PgBouncer on the application host", 2: "PgBouncer on the database host"}[
            self.value
        ]


def pooled(run: RunFigures) -> bool:
    """A setup that bounds its connections: a QueuePool with max_overflow=0, or PgBouncer."""
    return run.pool.bounded or run.placement.pooled


# -- evidence: one figure a line ------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Evidence:
    """One line of the answer's evidence; :meth:`line` says it."""

    scenario: str

    def line(self) -> str:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Failed(Evidence):
    """A scenario failed: its share of failed requests and the cause."""

    error_rate: float
    cause: str
    concurrency: int
    sessions_per_second: float | None
    held_open: int | None = None  # for a port exhaustion by connections held open: how many

    def line(self) -> str:
        if self.held_open is not None:
            how = f", {self.held_open:,} connections held open"
        elif self.sessions_per_second:
            how = f", {_n(self.sessions_per_second)} new connections/s"
        else:
            how = ""
        return f"{self.scenario}: {_pct(self.error_rate)} failed at {self.concurrency:,} clients ({self.cause}{how})"


@dataclasses.dataclass(frozen=True)
class Held(Evidence):
    """The recommended setup held: no failed request, its sessions and throughput."""

    concurrency: int
    sessions_opened: int
    seconds: float | None
    rps: float | None
    p99_ms: float | None

    def line(self) -> str:
        return (
            f"{self.scenario}: 0 failed at {self.concurrency:,} clients, {self.sessions_opened:,} sessions in "
            f"{_n(self.seconds)} s, {_n(self.rps)} req/s, p99 {_n(self.p99_ms)} ms"
        )


@dataclasses.dataclass(frozen=True)
class NotNeeded(Evidence):
    """A setup with more parts held as well and served more: not needed, since a simpler one held
    (within the margin the two are equal; beyond it, faster on this machine, still not needed)."""

    component: Component
    rps: float | None
    chosen_rps: float | None

    def line(self) -> str:
        within = (self.rps or 0) * (1 - MARGIN) <= (self.chosen_rps or 0)
        how = f"within {MARGIN:.0%}" if within else "faster here, but"
        return (
            f"{self.scenario}: {_n(self.rps)} req/s against {_n(self.chosen_rps)}, {how}: "
            f"{self.component} is not needed for this load"
        )


@dataclasses.dataclass(frozen=True)
class Needed(Evidence):
    """The simpler setup that did not hold, and why the component was added."""

    reason: str  # "budget" or "ports" or the cause
    figure: str

    def line(self) -> str:
        return f"{self.scenario} did not hold ({self.reason}): {self.figure}"


@dataclasses.dataclass(frozen=True)
class Churned(Evidence):
    """Overflow churn: sessions opened beyond what the pools hold."""

    sessions_opened: int
    capacity: int

    def line(self) -> str:
        return (
            f"{self.scenario}: {self.sessions_opened:,} sessions for pools that hold {self.capacity:,}: "
            "max_overflow > 0 churns"
        )


@dataclasses.dataclass(frozen=True)
class KnobEffect(Evidence, verdict.Finding):
    """What a kernel knob (``tcp_tw_reuse``, ``ports``) bought and cost against the same setup without
    it (``base``) and against the recommended pool, at the lowest step where the base failed (where
    the failure begins), and how the knob fared at the highest step."""

    knob: str  # "tcp_tw_reuse=1"
    base: str
    concurrency: int
    base_error_rate: float | None
    base_address_unavailable: int
    error_rate: float | None
    address_unavailable: int
    sessions_per_request: float | None
    checkout_ms: float | None  # time to get each connection: connecting, for a setup without a pool
    rps: float | None
    pooled: str | None
    pooled_rps: float | None
    top_concurrency: int
    top_error_rate: float | None
    top_cause: str | None

    def line(self) -> str:
        bought = (
            f"{_pct(self.error_rate)} failed (was {_pct(self.base_error_rate)} in {self.base}), EADDRNOTAVAIL "
            f"{self.address_unavailable:,} (was {self.base_address_unavailable:,})"
        )
        cost = f"still {_n(self.sessions_per_request, 2)} new connections per request"
        if self.checkout_ms is not None:
            cost += f" at {_n(self.checkout_ms, 1 if self.checkout_ms < 10 else 0)} ms each"
        cost += f", {_n(self.rps)} req/s" + (
            f" against {_n(self.pooled_rps)} with {self.pooled}" if self.pooled and self.pooled_rps else ""
        )
        text = f"{self.knob} ({self.scenario}) at {self.concurrency:,} clients: {bought}; {cost}"
        if self.top_concurrency != self.concurrency:
            text += f"; at {self.top_concurrency:,} clients {_pct(self.top_error_rate)} failed"
            text += f" ({self.top_cause})" if self.top_cause else ""
        return text

    def sentence(self) -> str:
        return f"Knob: {self.line()}."


_pct = verdict.percent


def knob_text(run: RunFigures, ports_default: int | None) -> str | None:
    """The kernel knobs a run set beyond the lab's defaults, as ``tcp_tw_reuse=1, ports=N``; None for none."""
    parts = []
    if run.tcp_tw_reuse is not None and run.tcp_tw_reuse != DEFAULT_TW_REUSE:
        parts.append(f"tcp_tw_reuse={run.tcp_tw_reuse}")
    if ports_default and run.ports and run.ports != ports_default:
        parts.append(f"ports={run.ports:,}")
    return ", ".join(parts) or None


def _setup(run: RunFigures) -> tuple:
    """What makes two runs the same setup but for a kernel knob."""
    return (run.worker_class, run.workers, run.pool, run.placement, run.connection, run.hosts)


def _at(runs: Sequence[RunFigures], concurrency: int) -> RunFigures | None:
    return next((r for r in runs if r.concurrency == concurrency), None)


def knob_effects(
    by_scenario: Mapping[str, list[RunFigures]], chosen: str | None, ports_default: int | None
) -> list[KnobEffect]:
    """Each scenario that set a kernel knob, against the same setup without it: at the lowest step
    where that one failed (else the highest), beside the recommended pool at the same step."""
    out = []
    for name, runs in by_scenario.items():
        if not runs or not (knob := knob_text(runs[0], ports_default)):
            continue
        bases = [
            n
            for n, rs in by_scenario.items()
            if n != name and rs and not knob_text(rs[0], ports_default) and _setup(rs[0]) == _setup(runs[0])
        ]
        if not bases:
            continue
        base_runs = by_scenario[bases[0]]
        shared = sorted({r.concurrency for r in runs} & {r.concurrency for r in base_runs})
        if not shared:
            continue
        failing = [c for c in shared if verdict.run_failed(_at(base_runs, c))]
        step = failing[0] if failing else shared[-1]
        run, base, highest = _at(runs, step), _at(base_runs, step), top(runs)
        pooled_run = _at(by_scenario[chosen], step) if chosen else None
        out.append(
            KnobEffect(
                name,
                knob,
                bases[0],
                step,
                base.error_rate,
                base.address_unavailable or base.causes.get("address_unavailable", 0),
                run.error_rate,
                run.address_unavailable or run.causes.get("address_unavailable", 0),
                run.sessions_per_request,
                run.checkout_ms,
                run.rps,
                chosen,
                pooled_run.rps if pooled_run else None,
                highest.concurrency,
                highest.error_rate,
                next(iter(highest.causes), None),
            )
        )
    return out


# -- the pool the measured load needs --------------------------------------------------------------
class HoldSource(str, enum.Enum):
    """Where the hold time came from."""

    MEASURED = "measured"  # the service's healthz_pool_connection_held_seconds
    ACTIVITY = "pg_stat_activity"  # any service: mean backends in a statement or transaction over the request rate
    LATENCY = "p50 latency"  # a service without that metric: a request holds its connection no longer than it takes
    DEFAULT = "default"  # nothing measured: plan's DEFAULT_HOLD_MS

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class Sizing:
    """The recommended setup's pools sized by its measured load (:func:`healthz.plan.plan`): each
    worker's in-process pool and, through PgBouncer, its server connections per instance."""

    rate: float  # requests per second per host
    hold_ms: float
    hold_source: HoldSource
    db_cores: int | None
    plan: plans.Plan
    pgbouncer_pool_size: int | None = None  # default_pool_size per PgBouncer, when the setup has one
    pgbouncer_instances: int = 1
    pgbouncer_bound: str | None = None  # what capped default_pool_size, when not the load

    @property
    def pool_size(self) -> int:
        return max(1, self.plan.pool_size)

    @property
    def server_pool_size(self) -> int:
        """PgBouncer's default_pool_size for this load: as sized, or the load's need per host capped by
        the database's cores when the setup has no PgBouncer yet."""
        if self.pgbouncer_pool_size is not None:
            return self.pgbouncer_pool_size
        return max(1, min(x for x in (self.plan.needed_per_host or 1, self.plan.db_active_limit) if x))

    def reason(self) -> str:
        """Little's law in the measured figures, and the cap that decided when it was not the load."""
        per_host = " per host" if self.plan.deployment.hosts > 1 else ""
        reason = (
            f"{_n(self.rate)} req/s{per_host} x {format(self.hold_ms, '.2g' if self.hold_ms < 100 else ',.0f')} ms held ({self.hold_source}) x {plans.HEADROOM:g} = "
            f"{self.plan.needed_per_host} connections{per_host}"
        )
        if self.plan.bound is plans.Bound.DB_CORES:
            reason += f", capped by {self.db_cores} database cores (2 x cores + 1 = {self.plan.db_active_limit})"
        elif self.plan.bound is not plans.Bound.LOAD:
            reason += f", bounded by {self.plan.bound}"
        if self.pgbouncer_pool_size is not None:
            who = f" each of {self.pgbouncer_instances}" if self.pgbouncer_instances > 1 else ""
            reason += f"; PgBouncer{who} default_pool_size={self.pgbouncer_pool_size}"
            reason += f", capped by {self.pgbouncer_bound}" if self.pgbouncer_bound else ""
        return reason

    def line(self) -> str:
        return f"pool_size={self.pool_size} per worker ({self.plan.deployment.workers} workers): {self.reason()}"


def size(
    run: RunFigures, limits: DatabaseLimits | None, db_cores: int | None, component: Component = Component.IN_PROCESS
) -> Sizing:
    """The pools ``run``'s load needs: its requests per second per host times the mean time a request
    held its connection (the service's own histogram; else the mean of backends in a statement or a
    transaction over the request rate, from pg_stat_activity; else its p50 latency, an upper bound; else
    plan's default), with plan's headroom. In process, capped by the database's cores and its budget;
    through PgBouncer, the in-process pool (a client of PgBouncer) by the load alone, and PgBouncer's
    server connections by the cores and the budget, shared by its instances (one per application
    host, or one on the database host)."""
    hosts = run.hosts or 1
    rate = max((run.rps or 0) / hosts, 0.001)
    if run.hold_ms:
        hold, source = run.hold_ms, HoldSource.MEASURED
    elif run.in_use_mean and run.rps:
        hold, source = 1000 * run.in_use_mean / run.rps, HoldSource.ACTIVITY
    elif run.p50_ms:
        hold, source = run.p50_ms, HoldSource.LATENCY
    else:
        hold, source = plans.DEFAULT_HOLD_MS, HoldSource.DEFAULT
    worker_class = run.worker_class if run.worker_class in WORKER_CLASSES else "gthread"
    per_worker = run.worker_concurrency or plans.DEFAULT_WORKER_CONNECTIONS
    max_connections = limits.max_connections if limits else 100
    reserved = limits.reserved if limits else 3
    bounced = component is not Component.IN_PROCESS
    deployment = plans.Deployment(
        hosts=hosts,
        workers=run.workers,
        worker_class=worker_class,
        concurrency=per_worker,
        # Behind PgBouncer the pool's connections are PgBouncer's clients, not PostgreSQL's backends.
        max_connections=reserved + hosts * run.workers * per_worker if bounced else max_connections,
        reserved_connections=reserved,
        rate=rate,
        hold_ms=max(hold, 0.001),
        db_cores=None if bounced else db_cores,
    )
    plan = plans.plan(deployment)
    if not bounced:
        return Sizing(rate, hold, source, db_cores, plan)
    instances = 1 if component is Component.PGBOUNCER_DB else hosts
    need = (plan.needed_per_host or 1) * (hosts if component is Component.PGBOUNCER_DB else 1)
    caps = [(need, None), (max(1, (max_connections - reserved) // instances), "max_connections")]
    if db_cores:
        active = plans.db_active_limit(db_cores)
        caps.append((max(1, active // instances), f"{db_cores} database cores (2 x cores + 1 = {active})"))
    pool, bound = min(caps, key=lambda cap: cap[0])
    return Sizing(rate, hold, source, db_cores, plan, max(1, pool), instances, bound if pool < need else None)


# -- settings to paste -----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Advice:
    """The answer, the setup to adopt (``chosen``: a scenario's name), its sizing, the evidence, the
    kernel knobs' effects and the settings to paste."""

    reply: Reply
    chosen: str | None
    component: Component | None
    needed_because: str | None  # why a component beyond the in-process pool was added
    sizing: Sizing | None
    evidence: tuple[Evidence, ...]
    knobs: tuple[KnobEffect, ...]
    settings: tuple[Snippet, ...]
    faithful: bool

    def headline(self) -> str:
        if self.reply is Reply.YES:
            return (
                "Does connection pooling alone fix it? Yes: a bounded pool (max_overflow=0) sized for the load "
                "held where a connection per request failed."
            )
        if self.reply is Reply.WITH_PGBOUNCER:
            return (
                f"Does connection pooling alone fix it? Not alone: the in-process pool did not hold here "
                f"({self.needed_because}); {self.component} did."
            )
        if self.reply is Reply.NO:
            return "Does connection pooling alone fix it? No: no pooled setup held in this run."
        if self.reply is Reply.OWN_SERVICE:
            return (
                "Your own service alone ran: its outcome is below; run the lab's scenarios beside it "
                "(-s eventlet-queuepool-sized, or make lab-django) for settings sized for its load."
            )
        return "Does connection pooling alone fix it? Not shown: no pooled setup ran."

    def change(self) -> str | None:
        if not self.chosen or not self.sizing:
            return None
        d = self.sizing.plan.deployment
        text = f"Change: {d.worker_class} workers={d.workers}, pool_size={self.sizing.pool_size} and max_overflow=0 per worker"
        if self.component in (Component.PGBOUNCER_APP, Component.PGBOUNCER_DB):
            text += f", {self.component}"
        if d.worker_class == "gthread":
            text += f", {PROXY_NOTE}"
        return f"{text}, as in {self.chosen}; sized by need: {self.sizing.reason()}."

    def lines(self) -> list[str]:
        """The answer in at most :data:`ANSWER_LINES` lines: the headline, the change, the evidence."""
        out = [self.headline()]
        if change := self.change():
            out.append(change)
        if not self.faithful:
            out.append(
                "Loopback: Linux reuses TIME_WAIT ports on 127.0.0.1, so EADDRNOTAVAIL cannot show; "
                "--topology netns (root) reproduces it."
            )
        out += [e.line() for e in self.evidence]
        return out[:ANSWER_LINES]


def _held(
    verdicts: Mapping[str, verdict.Verdict], by_scenario: Mapping[str, list[RunFigures]], ports_default: int | None
) -> dict[str, RunFigures]:
    """The lab's pooled setups that held within the budget, at their highest step (a knob is not a
    setup: it is judged against one)."""
    return {
        n: top(runs)
        for n, runs in by_scenario.items()
        if runs
        and verdicts[n].outcome is verdict.Outcome.HELD
        and not runs[0].own_service
        and pooled(runs[0])
        and not knob_text(runs[0], ports_default)
        and not verdicts[n].has(verdict.BudgetExceeded)
    }


def _with_margin(held: Mapping[str, RunFigures]) -> dict[str, RunFigures]:
    """The held setups of the simplest component among them, within :data:`MARGIN` of its fastest."""
    simplest = min((Component.of(r) for r in held.values()), default=None)
    mine = {n: r for n, r in held.items() if Component.of(r) is simplest}
    fastest = max((r.rps or 0 for r in mine.values()), default=0)
    return {n: r for n, r in mine.items() if (r.rps or 0) >= (1 - MARGIN) * fastest}


def _failures(
    verdicts: Mapping[str, verdict.Verdict], by_scenario: Mapping[str, list[RunFigures]], ports_default: int | None
) -> list[Failed]:
    """Each failed scenario at the lowest step it failed (where the failure begins, as the report's
    "above 500 clients"), the reported failure first: a connection per request out of ports. A knob
    is left out: its own line says how it fared."""
    names = [
        n
        for n, v in verdicts.items()
        if v.outcome is verdict.Outcome.FAILED and v.worst and not knob_text(by_scenario[n][0], ports_default)
    ]
    names.sort(key=lambda n: (verdicts[n].cause != "address_unavailable", by_scenario[n][0].pool.capacity is not None))
    out = []
    for n in names:
        failing = [r for r in by_scenario[n] if verdict.run_failed(r)]
        w = min(failing, key=lambda r: r.concurrency) if failing else verdicts[n].worst
        held_open = None
        if verdicts[n].cause == "address_unavailable" and verdict.exhaustion(w) is verdict.Exhaustion.HELD_OPEN:
            held_open = w.established_peak
        cause = next(iter(w.causes), None) or verdicts[n].cause or "-"
        out.append(Failed(n, w.error_rate or 0, cause, w.concurrency, w.sessions_per_second, held_open))
    return out


def _ranked(candidates: Mapping[str, RunFigures], failing_class: str | None) -> list[str]:
    """Simplest first, then the failed setup's worker class (the smallest change), then fewest connections."""
    return sorted(
        candidates,
        key=lambda n: (
            Component.of(candidates[n]),
            candidates[n].worker_class != failing_class,
            verdict.connection_need(candidates[n]).needed or 0,
            -(candidates[n].rps or 0),
        ),
    )


def advise(
    verdicts: Mapping[str, verdict.Verdict],
    results: Sequence[RunFigures],
    limits: DatabaseLimits | None,
    *,
    faithful: bool = True,
    db_cores: int | None = None,
    ports_default: int | None = None,
) -> Advice:
    """The :class:`Advice` over every scenario of a run (own services are evidence, not setups we
    give settings for: their settings are theirs)."""
    by_scenario = {n: verdict.measured(r for r in results if r.scenario == n) for n in verdicts}
    held = _held(verdicts, by_scenario, ports_default)
    candidates = _with_margin(held)
    failures = _failures(verdicts, by_scenario, ports_default)
    failing_class = by_scenario[failures[0].scenario][0].worker_class if failures else None
    ranked = _ranked(candidates, failing_class)
    chosen = ranked[0] if ranked else None
    evidence: list[Evidence] = list(failures[:2])
    component = needed_because = sizing = None
    settings: list[Snippet] = []
    if chosen:
        run = candidates[chosen]
        component = Component.of(run)
        sizing = size(run, limits, db_cores, component)
        evidence.insert(0, Held(chosen, run.concurrency, run.sessions_opened, run.seconds, run.rps, run.p99_ms))
        if component is not Component.IN_PROCESS:
            needed_because, line = _why_needed(component, verdicts, by_scenario)
            evidence += [line] if line else []
        bigger = [n for n in _ranked(held, failing_class) if Component.of(held[n]) > component]
        faster = [n for n in bigger if (held[n].rps or 0) > (run.rps or 0)]
        if faster:
            evidence.append(NotNeeded(faster[0], Component.of(held[faster[0]]), held[faster[0]].rps, run.rps))
        settings = snippets(run, sizing, Backing(by_scenario, verdicts), chosen)
    churn = next((v.first(verdict.OverflowChurn) for v in verdicts.values() if v.has(verdict.OverflowChurn)), None)
    if churn:
        name = next(n for n, v in verdicts.items() if v.first(verdict.OverflowChurn) is churn)
        evidence.append(Churned(name, churn.sessions_opened, churn.hosts * churn.workers * churn.capacity))
    knobs = knob_effects(by_scenario, chosen, ports_default)
    evidence += knobs[:1]
    ran = [rs[0] for rs in by_scenario.values() if rs]
    if chosen:
        reply = Reply.YES if component is Component.IN_PROCESS else Reply.WITH_PGBOUNCER
    elif ran and all(r.own_service for r in ran):
        reply = Reply.OWN_SERVICE
        for n, runs in by_scenario.items():
            if runs and verdicts[n].outcome is verdict.Outcome.HELD:
                r = top(runs)
                evidence.append(Held(n, r.concurrency, r.sessions_opened, r.seconds, r.rps, r.p99_ms))
    else:
        reply = Reply.NO if any(pooled(r) for r in ran) else Reply.NOT_SHOWN
    return Advice(
        reply, chosen, component, needed_because, sizing, tuple(evidence), tuple(knobs), tuple(settings), faithful
    )


def _why_needed(
    component: Component, verdicts: Mapping[str, verdict.Verdict], by_scenario: Mapping[str, list[RunFigures]]
) -> tuple[str, Needed | None]:
    """Why no in-process pool (or, for the database host, no PgBouncer on the app host) was enough."""
    simpler = [
        n
        for n, runs in by_scenario.items()
        if runs and not runs[0].own_service and pooled(runs[0]) and Component.of(runs[0]) < component
    ]
    for n in simpler:
        v = verdicts[n]
        if budget := v.first(verdict.BudgetExceeded):
            return "the budget", Needed(n, "the budget", budget.arithmetic())
        if v.cause == "too_many_clients":
            return "the budget", Needed(n, "the budget", f"{_pct(v.worst.error_rate)} failed, too_many_clients")
        if v.cause == "address_unavailable" or v.outcome is verdict.Outcome.AT_RISK:
            return "the ports", Needed(n, "the ports", f"{_pct(v.worst.error_rate)} failed, {v.cause or 'at risk'}")
    if simpler:
        v = verdicts[simpler[0]]
        return str(v.cause or v.outcome), Needed(
            simpler[0], str(v.cause or v.outcome), f"{_pct(v.worst.error_rate if v.worst else None)} failed"
        )
    return "no simpler setup ran", None
