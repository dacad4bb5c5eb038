"""The report's tables as rows of text, one function a table, with their columns: the runs at each
step, each application host's share, the connection budget, PgBouncer, own services beside their
stand-ins, and the doctor beside the lab's own figures; and the notes on what was not taken or
where the load generator was the bottleneck. Pure: figures in, strings out.
"""

from __future__ import annotations

from healthz.config import WORKER_CLASSES
from healthz.lab import verdict
from healthz.lab.figures import RunFigures
from healthz.plan import DatabaseLimits

_n, _pct = verdict.number, verdict.percent


def cause_list(causes: dict[str, int], requests: int, limit: int = 3) -> str:
    if not causes:
        return "none"
    parts = [
        f"{kind} {count:,} ({_pct(count / requests) if requests else '-'})"
        for kind, count in list(causes.items())[:limit]
    ]
    return ", ".join(parts)


# -- the verdict, rendered -------------------------------------------------------------------


STEP_COLUMNS = (
    "scenario",
    "req/s",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "failed",
    "causes",
    "sessions opened",
    "sessions/s",
    "sessions/request",
    "hold / checkout ms",
    "backends peak/mean",
    "TIME_WAIT peak",
    "ports held peak",
    "EADDRNOTAVAIL lines",
    "pool timeouts",
    "CPU s gunicorn/postgres/locust",
    "stalled s",
    "worker timeouts",
)


def not_taken(results: list[RunFigures]) -> list[str]:
    """A line per scenario with figures the lab could not take (a running service on another host)."""
    seen = {r.scenario: r.not_taken for r in results if r.not_taken}
    return [f"**Not taken for {name}:** " + "; ".join(items) + "." for name, items in seen.items()]


def saturation(results: list[RunFigures]) -> list[str]:
    """One line naming the runs whose load generator was saturated (a locust process at 90% of a
    core or more, or locust's own CPU warning), or nothing: their req/s is locust's ceiling."""
    hot = [r for r in results if r.measured and r.load_generator and r.load_generator.saturated]
    if not hot:
        return []
    parts = []
    for r in hot:
        g = r.load_generator
        share = f"busiest locust process at {g.busiest_share:.0%} of a core" if g.busiest_share is not None else ""
        said = ", ".join(x for x in (share, "locust warned of its CPU" if g.cpu_warning else "") if x)
        parts.append(f"{r.scenario} at {r.concurrency:,} clients ({said}, {g.processes} process(es))")
    more = max(g.processes for g in (r.load_generator for r in hot)) * 2
    return [
        "**The load generator was saturated** in "
        + "; ".join(parts)
        + f": there req/s and latency measure locust, not the service. Rerun with --load-processes {more}."
    ]


def step_rows(results: list[RunFigures], concurrency: int) -> list[list[str]]:
    rows = []
    for r in results:
        if r.concurrency != concurrency:
            continue
        if r.error:
            rows.append([r.scenario, "not measured: " + r.error[:120], *["-"] * (len(STEP_COLUMNS) - 2)])
            continue
        cpu = r.cpu_seconds
        rows.append(
            [
                r.scenario,
                _n(r.rps),
                _n(r.p50_ms),
                _n(r.p95_ms),
                _n(r.p99_ms),
                _pct(r.error_rate),
                cause_list(r.failures_by_cause, r.requests, 2),
                _n(r.sessions_opened),
                _n(r.sessions_per_second, 1)
                + (
                    f" (service to PgBouncer {_n(to_bouncer, 1)})"
                    if (to_bouncer := r.pgbouncer_logins_per_second)
                    else ""
                ),
                _n(r.sessions_per_request, 3),
                f"{_n(r.hold_ms, 1)} / {_n(r.checkout_ms, 1)}",
                f"{_n(r.backends_peak)} / {_n(r.backends_mean)}",
                _n(r.time_wait_peak) + (f" of {r.ports:,}" if r.ports and r.time_wait_peak is not None else ""),
                _n(r.ports_held_peak),
                _n(r.address_unavailable),
                _n(r.pool_timeouts),
                f"{_n(cpu.get('gunicorn'), 1)} / {_n(cpu.get('postgres'), 1)} / {_n(cpu.get('locust'), 1)}",
                _n(r.stalled_seconds, 1),
                _n(r.worker_timeouts),
            ]
        )
    return rows


HOST_COLUMNS = (
    "scenario",
    "clients",
    "host",
    "requests",
    "failed",
    "causes",
    "sessions opened",
    "refused by PostgreSQL",
    "backends peak",
    "TIME_WAIT peak",
    "EADDRNOTAVAIL lines",
)


def host_rows(results: list[RunFigures]) -> list[list[str]]:
    """One row per application host of each multi-host run, then the run's total."""
    rows = []
    for r in results:
        hosts = r.by_host
        if not hosts:
            continue
        for h in hosts:
            rate = h.failures / h.requests if h.requests else None
            rows.append(
                [
                    r.scenario,
                    f"{r.concurrency:,}",
                    f"{h.host} ({h.address})",
                    _n(h.requests),
                    _pct(rate),
                    cause_list(h.failures_by_cause, h.requests or 0, 2),
                    _n(h.sessions_opened),
                    _n(h.refused),
                    _n(h.backends_peak),
                    _n(h.time_wait_peak),
                    _n(h.address_unavailable),
                ]
            )
        rows.append(
            [
                r.scenario,
                f"{r.concurrency:,}",
                f"**all {len(hosts)} hosts**",
                _n(r.requests),
                _pct(r.error_rate),
                cause_list(r.failures_by_cause, r.requests, 2),
                _n(r.sessions_opened),
                _n(sum(h.refused or 0 for h in hosts)),
                _n(r.backends_peak),
                _n(r.time_wait_peak),
                _n(r.address_unavailable),
            ]
        )
    return rows


BUDGET_COLUMNS = (
    "scenario",
    "hosts",
    "connections needed",
    "available",
    "fits",
    "hosts that fit",
    "backends peak",
    "too many clients",
)


def budget_cells(run: RunFigures, limits: DatabaseLimits | None) -> tuple[str, int | None, int | None]:
    """``(how it is counted, connections needed, hosts that fit)`` for ``run``
    (:func:`verdict.connection_need`); None where the need has no bound (a pool that opens one
    connection per request in flight) or any number of hosts fits."""
    from healthz.plan import Deployment, plan

    need, available = verdict.connection_need(run), limits.available if limits else 0
    size = need.per_instance
    if need.how is verdict.Counted.PGBOUNCER_ON_DB:
        return f"PgBouncer on the database host: {size}", need.needed, None
    if need.how is verdict.Counted.PGBOUNCER_PER_HOST:
        return f"PgBouncer per host: {need.hosts} x {size}", need.needed, available // size
    if need.how is verdict.Counted.UNBOUNDED:
        return f"one per request in flight, up to {run.concurrency:,}", None, None
    how = f"{need.hosts} x {need.workers} workers x {size}"
    if available < 1:
        return how, need.needed, 0
    planned = plan(
        Deployment(
            hosts=need.hosts,
            workers=need.workers,
            # An own service may not say its worker class; hosts that fit depend on workers and pool alone.
            worker_class=run.worker_class if run.worker_class in WORKER_CLASSES else "sync",
            max_connections=limits.max_connections,
            reserved_connections=limits.reserved,
            pool_size=size,
        )
    )
    return how, need.needed, planned.max_hosts


def budget_rows(results: list[RunFigures], limits: DatabaseLimits | None) -> list[list[str]]:
    """The connection budget of each run, when any run had several hosts or PgBouncer."""
    if not any(r.hosts > 1 or r.pgbouncer for r in results):
        return []
    available = limits.available if limits else 0
    rows = []
    for r in verdict.measured(results):
        how, needed, fit = budget_cells(r, limits)
        fits = "-" if needed is None else ("yes" if needed <= available else f"no: {needed - available:,} over")
        rows.append(
            [
                r.scenario,
                str(r.hosts),
                how,
                _n(available),
                fits,
                "any" if fit is None and needed is not None else _n(fit),
                _n(r.backends_peak),
                _n(r.failures_by_cause.get("too_many_clients", 0)),
            ]
        )
    return rows


PGBOUNCER_COLUMNS = (
    "scenario",
    "clients",
    "placement",
    "pool_mode / pool size",
    "client connections/s",
    "server sessions",
    "TIME_WAIT peak",
    "EADDRNOTAVAIL lines",
    "failed",
    "waiting peak",
    "max wait ms",
    "wait ms/transaction",
    "req/s",
    "port exhaustion",
)


def exhaustion_effect(run: RunFigures) -> str:
    """What a PgBouncer placement did to the app host's ephemeral ports in ``run``
    (:func:`verdict.pooler_effect`), in numbers."""
    effect, ports, tw = verdict.pooler_effect(run), run.ports, verdict.busiest_time_wait(run)
    if effect is verdict.PoolerEffect.MOVED:
        return "only moved: the service's connections to PgBouncer ran the app host out of ports"
    if effect is verdict.PoolerEffect.MOVED_AT_RISK:
        rate = verdict.port_churn_per_host(run)
        return (
            f"only moved: {_n(rate)} connections/s to PgBouncer per host keep {verdict.ports_needed(rate):,} ports in "
            f"TIME_WAIT when sustained, more than the {ports:,} in range (peak here {tw:,}): a longer run exhausts them"
        )
    if effect is verdict.PoolerEffect.HELD_BY_REUSE:
        return f"held only by TIME_WAIT reuse on loopback (tcp_tw_reuse=2): {tw:,} of {ports:,} ports in TIME_WAIT"
    return "removed"


def pgbouncer_rows(results: list[RunFigures]) -> list[list[str]]:
    rows = []
    for r in results:
        b = r.pgbouncer
        if not b:
            continue
        if r.error:
            rows.append(
                [
                    r.scenario,
                    f"{r.concurrency:,}",
                    r.placement.where,
                    "not measured: " + r.error[:120],
                    *["-"] * (len(PGBOUNCER_COLUMNS) - 4),
                ]
            )
            continue
        rows.append(
            [
                r.scenario,
                f"{r.concurrency:,}",
                r.placement.where,
                f"{b.pool_mode} / {b.default_pool_size}",
                _n(r.pgbouncer_logins_per_second, 1),
                _n(r.sessions_opened),
                _n(r.time_wait_peak),
                _n(r.address_unavailable),
                _pct(r.error_rate),
                _n(b.cl_waiting_peak),
                _n(b.maxwait_ms_peak, 1),
                _n(b.wait_ms_per_transaction, 2),
                _n(r.rps),
                exhaustion_effect(r),
            ]
        )
    return rows


DOCTOR_COLUMNS = (
    "scenario",
    "clients",
    "doctor says",
    "exit",
    "opened by the host",
    "ports run out in",
    "opened, measured by the lab",
    "measured diagnosis",
    "agrees",
)


PAIR_COLUMNS = (
    "clients",
    "own service",
    "stood for by",
    "sessions/s",
    "sessions/request",
    "peak backends",
    "TIME_WAIT peak",
    "failed",
    "failures by cause",
)


def pair_rows(results: list[RunFigures]) -> list[list[str]]:
    """Each measured own service beside its ``counterpart`` at the same step and client mode, every
    cell ``own / counterpart``: the mechanism figures (connections opened per second and per
    request, peak backends, TIME_WAIT peak) and the failures by cause."""
    by_key = {(r.scenario, r.concurrency, r.connection): r for r in results if r.measured}
    rows = []
    for own in results:
        lab = by_key.get((own.counterpart, own.concurrency, own.connection)) if own.counterpart else None
        if not own.own_service or not own.measured or lab is None:
            continue

        def pair(value, own=own, lab=lab) -> str:
            return f"{value(own)} / {value(lab)}"

        rows.append(
            [
                f"{own.concurrency:,} ({own.connection})",
                own.scenario,
                lab.scenario,
                pair(lambda r: verdict.number(r.sessions_per_second)),
                pair(lambda r: f"{r.sessions_per_request:.3f}" if r.sessions_per_request is not None else "-"),
                pair(lambda r: _count(r.backends_peak)),
                pair(lambda r: _count(r.time_wait_peak)),
                pair(lambda r: _pct(r.error_rate)),
                pair(lambda r: cause_list(r.causes, r.requests)),
            ]
        )
    return rows


def _count(value: int | None) -> str:
    return f"{value:,}" if value is not None else "-"


def doctor_rows(results: list[RunFigures]) -> list[list[str]]:
    """One row per run in which the doctor ran: its diagnosis and figures beside the measured ones."""
    rows = []
    for r in results:
        d = r.doctor
        if not d:
            continue
        if d.error:
            rows.append(
                [
                    r.scenario,
                    f"{r.concurrency:,}",
                    "did not run: " + d.error[:120],
                    _n(d.exit),
                    *["-"] * 5,
                ]
            )
            continue
        exhaustion = d.seconds_to_exhaustion
        rows.append(
            [
                r.scenario,
                f"{r.concurrency:,}",
                d.status,
                str(d.exit),
                f"{_n(d.opened)} in {d.window:g} s ({_n(d.opened_per_second, 1)}/s)",
                "-" if exhaustion is None else f"{exhaustion:,.1f} s",
                f"{_n(d.measured_sessions_per_second, 1)}/s",
                d.measured_status or "-",
                "not compared" if d.agrees is None else "yes" if d.agrees else "NO",
            ]
        )
    return rows
