"""The bench's runs beyond one case's: the sized pool under a crowd, fixed arrival rates, and the
report's Django project under the same load as a peer. Each takes the :class:`Bench` that runs it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from healthz.lab import probes
from healthz.postgres import PostgreSQL

from . import cases as cases_module
from . import rate, targets, wrk
from .readings import HEALTHZ, rss_mib, runs_summary

if TYPE_CHECKING:
    from .runner import Bench


#: The report's Django project, in a checkout; its scenarios that run beside healthz in the bench.
DJANGO_PROJECT = Path(__file__).resolve().parents[2] / "examples" / "django-report"
DJANGO_PEERS = ("django-gthread-persistent", "django-eventlet-persistent")


def crowd(
    bench: Bench, load: wrk.Wrk, pg: PostgreSQL, counters: probes.PostgresCounters, fair: bool = True
) -> dict[str, Any]:
    """The sized pool under ``crowd`` concurrent keep-alive connections: does any request fail,
    and how long do the unluckiest wait against Little's law's mean (connections / throughput)?"""
    cfg = bench.config
    case = cases_module.crowd_case(cfg.crowd, fair)
    service = bench.service(case, pg, f"{case.name}-{cfg.crowd}-connections")
    sessions_before = counters.settled_sessions()
    with service:
        bench.wrk(load, service, HEALTHZ, f"{case.name} warm-up", cfg.warmup, cfg.connections)
        result = bench.wrk(
            load,
            service,
            HEALTHZ,
            f"{case.name} at {cfg.crowd:,} connections",
            cfg.crowd_duration,
            cfg.crowd,
            timeout=10.0,
        )
        rss = [rss_mib(pid) for pid in service.worker_pids()]
    return {
        "name": case.name,
        "summary": case.scenario.summary(),
        "connections": cfg.crowd,
        "run": result.to_dict(),
        "sessions_opened": counters.settled_sessions() - sessions_before,
        "rss_mib_per_worker": [round(r, 1) for r in rss if r is not None],
        "worker_restarts": probes.worker_restarts(service.log_text(), case.scenario.workers),
    }


def fixed_rate(bench: Bench, load: wrk.Wrk, pg: PostgreSQL) -> dict[str, Any]:
    """The sized pool at fixed arrival rates: latency from each request's due time, late and
    dropped requests. First saturated, at :data:`targets.SATURATED_SHARE` of its closed-model
    maximum (wrk at ``connections``, same service): the driver's throughput then is the
    service's capacity beside the driver, checked against wrk's. Then :data:`targets.RATE_SHARES`
    of that capacity: the driver's CPU is taken from the same cores, so wrk's maximum would
    overstate what the service can answer beside it."""
    cfg = bench.config
    case = cases_module.crowd_case(cfg.rate_connections)
    service = bench.service(case, pg, f"{case.name}-fixed-rate")
    runs = []
    with service:
        bench.wrk(load, service, HEALTHZ, f"{case.name} warm-up", cfg.warmup, cfg.connections)
        closed = bench.wrk(load, service, HEALTHZ, f"{case.name} closed-model maximum", cfg.duration, cfg.connections)
        capacity = closed.rps
        plan = [(targets.SATURATED_SHARE, "wrk")] + [(share, "capacity") for share in targets.RATE_SHARES]
        for share, basis in plan:
            bench.settle(service)
            offered = share * (closed.rps if basis == "wrk" else capacity)
            # Saturated, requests still unanswered 2 s after the schedule are dropped: the queue would outlast it.
            timeout = 2.0 if basis == "wrk" else 10.0
            result = rate.run_process(
                service.base_url + HEALTHZ, offered, cfg.rate_duration, cfg.rate_connections, timeout
            )
            if basis == "wrk":  # as the result is written: the shares are of the figure shown
                capacity = round(result.throughput, 1) or closed.rps
            bench.echo(
                f"{case.name} at {share:.0%} of {'wrk' if basis == 'wrk' else 'the capacity'} ({offered:,.0f} req/s): "
                f"{result.throughput:,.0f} answered/s, p50 {result.p50_ms or 0:,.1f} ms, p99 {result.p99_ms or 0:,.0f} ms, "
                f"p99.9 {result.p999_ms or 0:,.0f} ms from the due time, {result.late:,} late, {result.dropped:,} dropped"
            )
            runs.append({"share": share, "basis": basis, **result.to_dict()})
    return {
        "name": case.name,
        "summary": case.scenario.summary(),
        "closed": {"connections": cfg.connections, **closed.to_dict()},
        "capacity": capacity,
        "runs": runs,
        "worker_restarts": probes.worker_restarts(service.log_text(), case.scenario.workers),
    }


def django(bench: Bench, load: wrk.Wrk, pg: PostgreSQL) -> dict[str, Any]:
    """The report's own stack (examples/django-report: Django, DRF, its gunicorn.conf.py) under
    the same wrk load as each case, on the same PostgreSQL (in a database of its own, made by its
    migrations): ``{"peers": [...]}``, or
    ``{"skipped": why}`` when the project or Django is not here."""
    from healthz.lab.scenarios import select
    from healthz.lab.topology import Loopback

    project = DJANGO_PROJECT / "scenarios.toml"
    if not project.is_file():
        return {"skipped": f"no {DJANGO_PROJECT.name} project beside the package (a checkout has it in examples/)"}
    missing = [m for m in ("django", "rest_framework") if importlib.util.find_spec(m) is None]
    if missing:
        return {"skipped": f"{', '.join(missing)} not installed: pip install 'healthz[django]'"}
    here = Loopback()
    # The project's own database, its schema from its own migrations (as the lab gives it one).
    url = pg.new_database("app_django_report")
    counters = probes.PostgresCounters(pg.local_dsn("postgres"), "app_django_report")
    try:
        peers = [
            _django_peer(bench, load, url, counters, here, i, s) for i, s in enumerate(select(DJANGO_PEERS, [project]))
        ]
    finally:
        counters.close()
    return {"project": f"examples/{DJANGO_PROJECT.name}", "peers": peers}


def _django_peer(bench: Bench, load: wrk.Wrk, url: str, counters, here, index: int, scenario) -> dict[str, Any]:
    """One Django scenario under the cases' wrk load: its healthz series and the sessions it opened."""
    cfg = bench.config
    logs = cfg.output / "logs" / scenario.name
    logs.mkdir(parents=True, exist_ok=True)
    service, _ = scenario.service.make(scenario, here, here.hosts[0], url, logs)
    if index == 0 and scenario.service.has_setup:
        scenario.service.set_up(service, logs / "setup.log", ())
    sessions_before = counters.settled_sessions()
    with service:
        bench.wrk(load, service, HEALTHZ, f"{scenario.name} warm-up", cfg.warmup, cfg.connections)
        runs = [
            bench.wrk(load, service, HEALTHZ, f"{scenario.name} {n + 1}/{cfg.repeats}", cfg.duration, cfg.connections)
            for n in range(cfg.repeats)
        ]
    return {
        "name": scenario.name,
        "worker_class": scenario.worker_class,
        "description": scenario.description,
        "healthz": runs_summary(runs),
        "sessions_opened": counters.settled_sessions() - sessions_before,
    }


#: healthz check's own budget for a build: 2,000 requests at 100 clients, PostgreSQL's start included.
CHECK_WALL_S = 30.0


def check_timing(bench: Bench, pg: PostgreSQL) -> dict[str, Any]:
    """``healthz check`` on this project's own service (eventlet, a sized pool): its wall time cold
    (a throwaway PostgreSQL started for it, as a CI job has it) and on ``pg`` reused (a fresh
    database there, as the pytest plugin's session server gives each check)."""
    from healthz.lab.check import CheckOptions
    from healthz.lab.check_run import run_check

    def one(database_url: str | None) -> dict[str, Any]:
        options = CheckOptions(
            app="gunicorn -c python:healthz.gunicorn_conf.eventlet healthz.wsgi:app -b {bind}",
            setup="healthz init-db --roles 10",
            python=Path(sys.prefix),
            env={"HEALTHZ_POOL_SIZE": "10", "HEALTHZ_MAX_OVERFLOW": "0"},
            clients=100,
            requests=2000,
            database_url=database_url,
        )
        result = run_check(options)
        bench.echo(
            f"healthz check ({'reused server' if database_url else 'cold'}): {result.summary()}, {result.wall_seconds} s"
        )
        keys = ("wall_seconds", "requests", "sessions_per_request", "failed", "passed", "error")
        return {key: getattr(result, key) for key in keys}

    cold = one(None)
    url = pg.new_database("check_reused")
    try:
        reused = one(url)
    finally:
        pg.drop_database("check_reused")
    return {"clients": 100, "requests": 2000, "budget_s": CHECK_WALL_S, "cold": cold, "reused_server": reused}
