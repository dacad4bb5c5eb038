"""Runs the benchmark: one throwaway PostgreSQL, pgbench on it, then each case's gunicorn under wrk.

Every figure is the median of ``repeats`` runs of ``duration`` seconds after a warm-up, with the
runs' spread beside it. Results go to a JSON file; passwords never do.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from healthz import versions
from healthz.config import Settings
from healthz.db import seed as seed_roles
from healthz.harness import store
from healthz.harness.process import raise_open_files
from healthz.lab import probes, require_extra
from healthz.postgres import APP_DATABASE, APP_USER, PostgreSQL, find_binaries, free_port
from healthz.service import Gunicorn

from . import extras, pgbench, statements, targets, wrk
from .cases import Case, CaseFigures
from .readings import HEALTHZ, rss_mib, runs_summary, series

require_extra()

LIVEZ = "/api/v1/livez/"


@dataclasses.dataclass
class BenchConfig:
    """What one ``make bench`` measures and for how long."""

    cases: list[Case]
    output: Path
    duration: int = 3
    repeats: int = 3
    warmup: int = 1
    connections: int = 100
    reconnect_every: int = 100
    crowd: int = 2000
    crowd_duration: int = 10
    #: The fixed-rate runs: seconds of schedule each, and the most connections the driver opens.
    rate_duration: int = 8
    rate_connections: int = 1000
    #: The report's Django project as a peer, when it and Django are here.
    django: bool = True
    #: ``healthz check``'s wall time on this project's own service, cold and on a reused server.
    check: bool = True
    statement_requests: int = 200
    pgbench_clients: int = 10
    roles: int = 10
    max_connections: int = 300
    command_line: str = ""
    #: The throwaway server's password; random when None. Never written anywhere.
    password: str | None = dataclasses.field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("password")
        data["cases"] = [case.name for case in self.cases]
        data["output"] = str(self.output)
        return data


def machine() -> dict[str, Any]:
    """The machine and software the figures come from: :func:`store.machine` and the packages."""
    return {**store.machine(), "packages": versions.installed()}


class Bench:
    """Runs a :class:`BenchConfig`; :meth:`run` returns the results and writes ``bench.json``."""

    RESULTS = "bench.json"

    def __init__(
        self, config: BenchConfig, echo: Callable[[str], None] = lambda line: print(line, file=sys.stderr)
    ) -> None:
        self.config = config
        self.echo = echo

    def run(self) -> dict[str, Any]:
        cfg = self.config
        started = time.time()
        raise_open_files(cfg.crowd * 2 + 1024)  # wrk and gunicorn inherit the limit
        load = wrk.find()
        binaries = find_binaries()
        server_settings = {"superuser_reserved_connections": 3, **statements.server_settings(binaries.bindir)}
        results: dict[str, Any] = {
            "command": cfg.command_line,
            "config": cfg.to_dict(),
            "machine": machine(),
            "wrk": load.version(),
            "started": started,
        }
        cfg.output.mkdir(parents=True, exist_ok=True)
        with PostgreSQL(
            max_connections=cfg.max_connections, settings=server_settings, binaries=binaries, password=cfg.password
        ) as pg:
            seed_roles(Settings.from_mapping({"database_url": pg.local_url()}), cfg.roles)
            self.counter = counter = statements.StatementCounter(pg)
            counter.setup()
            counters = probes.PostgresCounters(pg.local_dsn(), APP_DATABASE)
            try:
                with pg.connect() as conn, conn.cursor() as cur:
                    cur.execute("SELECT current_setting('server_version')")
                    results["postgresql"] = {
                        "version": cur.fetchone()[0],
                        "binaries": str(pg.binaries),
                        "statements_from": counter.source,
                    }
                results["pgbench"] = self._pgbench(pg)
                results["cases"] = [self._case(case, load, pg, counters, counter).to_dict() for case in cfg.cases]
                if cfg.crowd:
                    results["crowd"] = extras.crowd(self, load, pg, counters)
                    # The same without the gate: the measurement that shows where the unfairness comes from.
                    results["crowd_unfair"] = extras.crowd(self, load, pg, counters, fair=False)
                if cfg.rate_duration:
                    results["fixed_rate"] = extras.fixed_rate(self, load, pg)
                if cfg.django:
                    results["django"] = extras.django(self, load, pg)
                if cfg.check:
                    results["check"] = extras.check_timing(self, pg)
            finally:
                counters.close()
        results["seconds"] = round(time.time() - started, 1)
        results["ratios"] = targets.ratios(results)
        results["targets"] = targets.judge(results)
        self._save(results)
        return results

    def _save(self, results: dict[str, Any]) -> None:
        store.write_json(self.config.output / self.RESULTS, results, indent=2)

    # -- the database's limit --------------------------------------------------------------
    def _pgbench(self, pg: PostgreSQL) -> dict[str, Any]:
        cfg = self.config
        out: dict[str, Any] = {"statement": pgbench.statement(), "clients": cfg.pgbench_clients}
        for key, connect in (("persistent", False), ("connect", True)):
            runs = []
            for i in range(cfg.repeats):
                result = pgbench.run(
                    pg.binaries.bindir,
                    host=pg.host,
                    port=pg.port,
                    user=APP_USER,
                    database=APP_DATABASE,
                    password=pg.password,
                    clients=cfg.pgbench_clients,
                    seconds=cfg.duration,
                    connect_per_transaction=connect,
                )
                runs.append(result)
                self.echo(f"pgbench {'-C ' if connect else ''}run {i + 1}/{cfg.repeats}: {result.tps:,.0f} tps")
            out[key] = {
                "tps": series(r.tps for r in runs),
                "failed": sum(r.failed for r in runs),
                "latency_ms": series(r.latency_ms or 0 for r in runs),
            }
        return out

    # -- the service -----------------------------------------------------------------------
    def service(self, case: Case, pg: PostgreSQL, log_name: str) -> Gunicorn:
        env = {
            **case.scenario.environment(pg.url, every_setting=True),
            "GUNICORN_GRACEFUL_TIMEOUT": "3",
            "GUNICORN_BACKLOG": "4096",
            "GUNICORN_ACCESSLOG": "",
            "GUNICORN_LOGLEVEL": "info",
            # wrk keeps its connections alive: every worker class is measured with gunicorn's own keep-alive
            # (2 s), gthread included, whose config turns it off for reloads that lose nothing (docs/faults.md).
            "GUNICORN_KEEPALIVE": "2",
        }
        logfile = self.config.output / "logs" / f"{log_name}.log"
        logfile.unlink(missing_ok=True)  # gunicorn appends: a rerun's restarts would count twice
        return Gunicorn(case.worker_class, env, logfile, port=free_port())

    @staticmethod
    def _cpu(service: Gunicorn, pg: PostgreSQL) -> dict[str, float]:
        """CPU seconds so far of gunicorn (master and workers) and of PostgreSQL (every backend)."""
        return {
            "service": probes.cpu_seconds(service.pid) or 0.0,
            "postgres": probes.cpu_seconds(pg.process.pid) or 0.0,
        }

    def settle(self, service: Gunicorn, quiet: float = 0.5, timeout: float = 60.0) -> None:
        """Wait until the service has finished the requests its clients gave up on: its workers
        used under 20 ms of CPU in ``quiet`` seconds, and the database saw no statement."""
        deadline = time.monotonic() + timeout
        before = probes.cpu_seconds(service.pid) or 0.0
        while time.monotonic() < deadline:
            time.sleep(quiet)
            now = probes.cpu_seconds(service.pid) or 0.0
            if now - before < 0.02:
                break
            before = now
        self.counter.settle(quiet, max(1.0, deadline - time.monotonic()))

    def wrk(
        self,
        load: wrk.Wrk,
        service: Gunicorn,
        path: str,
        label: str,
        seconds: int,
        connections: int,
        timeout: float = 5.0,
        cpu: tuple[PostgreSQL, dict[str, float]] | None = None,
    ) -> wrk.WrkResult:
        """One wrk run, once the service has finished the requests of the run before; with ``cpu``
        (the server and a running total), the CPU seconds each side used during the run are added."""
        self.settle(service)
        before = self._cpu(service, cpu[0]) if cpu else {}
        result = load.run(
            service.base_url + path,
            connections=connections,
            seconds=seconds,
            timeout=timeout,
            reconnect_every=self.config.reconnect_every,
        )
        if cpu:
            for side, used in self._cpu(service, cpu[0]).items():
                cpu[1][side] += used - before[side]
        failed = f", {result.failed:,} failed" if result.failed else ""
        self.echo(f"{label}: {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.1f} ms{failed}")
        return result

    def _case(
        self,
        case: Case,
        load: wrk.Wrk,
        pg: PostgreSQL,
        counters: probes.PostgresCounters,
        counter: statements.StatementCounter,
    ) -> CaseFigures:
        cfg = self.config
        service = self.service(case, pg, case.name)
        sessions_before = counters.settled_sessions()
        with service:
            healthz_runs, livez_runs, cpu = self._measured_runs(case, load, service, pg)
            answers: list[int] = []
            self.settle(service)
            sent = counter.count(
                lambda: answers.extend(service.get(HEALTHZ, timeout=10)[0] for _ in range(cfg.statement_requests))
            )
            rss = [rss_mib(pid) for pid in service.worker_pids()]
        sessions = counters.settled_sessions() - sessions_before
        served = sum(r.requests for r in healthz_runs) + len(answers)
        figures: dict[str, Any] = {
            "name": case.name,
            "worker_class": case.worker_class,
            "pool": case.pool,
            "variant": case.variant,
            "summary": case.scenario.summary(),
            "healthz": runs_summary(healthz_runs),
            "statements": {
                "requests": len(answers),
                "ok": answers.count(200),
                "sent": sum(sent.values()),
                "per_request": sum(sent.values()) / len(answers) if answers else None,
                "by_statement": dict(sent.most_common()),
            },
            # CPU per healthz response during the measured runs (requests still in flight at
            # the end of a run are counted in the next one's settle, not here).
            "cpu_us_per_request": {
                side: round(1e6 * used / max(1, sum(r.requests for r in healthz_runs)), 1) for side, used in cpu.items()
            },
            "sessions_opened": sessions,
            "sessions_per_1000_requests": 1000 * sessions / served if served else None,
            "rss_mib_per_worker": [round(r, 1) for r in rss if r is not None],
            "worker_restarts": probes.worker_restarts(service.log_text(), case.scenario.workers),
        }
        if livez_runs:
            figures["livez"] = runs_summary(livez_runs)
            # What the stack costs without the database: healthz's CPU above it is the database path's.
            figures["livez_cpu_us_per_request"] = {
                side: round(1e6 * used / max(1, sum(r.requests for r in livez_runs)), 1)
                for side, used in self.livez_cpu.items()
            }
        return CaseFigures.from_dict(figures, strict=True)

    def _measured_runs(self, case: Case, load: wrk.Wrk, service, pg: PostgreSQL):
        """The warm-up, then ``repeats`` measured runs of healthz (and of livez for a ceiling case):
        ``(healthz runs, livez runs, CPU seconds of the service and of PostgreSQL during the healthz runs)``."""
        cfg = self.config
        self.wrk(load, service, HEALTHZ, f"{case.name} warm-up", cfg.warmup, cfg.connections)
        if case.ceiling:
            self.wrk(load, service, LIVEZ, f"{case.name} livez warm-up", cfg.warmup, cfg.connections)
        healthz_runs: list[wrk.WrkResult] = []
        livez_runs: list[wrk.WrkResult] = []
        cpu = {"service": 0.0, "postgres": 0.0}
        self.livez_cpu = {"service": 0.0, "postgres": 0.0}
        for i in range(cfg.repeats):
            label = f"{case.name} {{}} {i + 1}/{cfg.repeats}"
            if case.ceiling:
                livez_runs.append(
                    self.wrk(
                        load,
                        service,
                        LIVEZ,
                        label.format("livez"),
                        cfg.duration,
                        cfg.connections,
                        cpu=(pg, self.livez_cpu),
                    )
                )
            healthz_runs.append(
                self.wrk(load, service, HEALTHZ, label.format("healthz"), cfg.duration, cfg.connections, cpu=(pg, cpu))
            )
        return healthz_runs, livez_runs, cpu
