"""The experiment: for each scenario and concurrency step, a fresh service under a bounded locust
run, sampled throughout, then every figure saved.

Order of one run: renew the app side of the topology (a fresh namespace in ``netns``, so TIME_WAIT
left by one run never eats the next run's ports), start gunicorn with the scenario's environment,
wait until ``/api/v1/healthz/`` answers 200, read PostgreSQL's session counter, sample probes while
locust runs for ``duration`` seconds or ``max_requests`` requests, stop locust and gunicorn, read the
counter again once it settles, and summarise. Everything started is stopped on every exit path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from healthz.config import mask_password
from healthz.harness import store
from healthz.lab import fixes, load, measure, probes, require_extra, rig
from healthz.lab import topology as topologies
from healthz.lab.config import LabConfig, LabError, default_output, slug
from healthz.lab.figures import RunFigures, Sample
from healthz.lab.pgbouncer import PgBouncer, PgBouncerError
from healthz.lab.record import Record
from healthz.lab.scenarios import Scenario
from healthz.plan import DatabaseLimits
from healthz.postgres import PostgreSQL
from healthz.service import HEALTHY_TIMEOUT, Service, ServiceError

require_extra()

#: Service port inside the app namespace (a fresh namespace has every port free).
#: Runs shorter than this leave no room for ``healthz doctor`` past the start-up burst.
DOCTOR_MIN_DURATION = 5.0


class Progress:
    """One line on stderr, rewritten in place on a terminal, printed once per run elsewhere."""

    def __init__(self, stream=sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._last = ""

    def update(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + text)
            self.stream.flush()
        self._last = text

    def done(self, text: str) -> None:
        self.stream.write(("\r\033[K" if self.tty else "") + text + "\n")
        self.stream.flush()


class Session:
    """What every lab command sets up and keeps around its runs: the topology, the database and its
    counters, the run's metadata (:class:`Record`, with ``extra_meta``), and the results file
    ``results_name``, written whole after each run (``serialise`` makes a result JSON). An output
    folder already holding that file is refused before anything starts."""

    def __init__(self, config: LabConfig, results_name: str, record: Record, serialise) -> None:
        self.config, self.results_name, self.record, self.serialise = config, results_name, record, serialise
        self.results: list = []
        self.meta: dict[str, Any] = {}

    def run(self, runs, extra_meta: dict[str, Any] | None = None) -> list:
        """Set up, then every result ``runs(topology, url, pg, counters)`` yields; the results."""
        cfg = self.config
        try:  # checked first: nothing starts for a refused run
            store.refuse_taken(cfg.output, self.results_name)
        except store.StoreError as exc:
            raise LabError(str(exc)) from None
        topology = topologies.make(
            cfg.topology,
            ports=cfg.ports,
            delay_ms=cfg.delay_ms,
            hosts=cfg.hosts,
            load_hosts=min(max(1, cfg.load_workers), topologies.Netns.MAX_LOAD_HOSTS) if cfg.topology == "netns" else 1,
        )
        started = time.time()
        with _unwind_on_termination(), topology, rig.database(cfg, topology) as (url, probe_dsn, pg):
            cfg.output.mkdir(parents=True, exist_ok=True)
            counters = probes.PostgresCounters(probe_dsn, urlsplit(url).path.lstrip("/"))
            try:
                self.meta = self.record.meta(topology, pg, counters, started) | (extra_meta or {})
                self.save()
                for result in runs(topology, url, pg, counters):
                    self.results.append(result)
                    self.save()
            finally:
                counters.close()
        self.meta["finished"] = time.time()
        self.meta["seconds"] = round(self.meta["finished"] - started, 1)
        self.save()
        return self.results

    def save(self) -> None:
        store.write_json(
            self.config.output / self.results_name,
            {"meta": self.meta, "results": [self.serialise(r) for r in self.results]},
        )


class Lab:
    """Runs a :class:`LabConfig` and writes ``results.json`` (the report is made from it)."""

    RESULTS = "results.json"

    def __init__(self, config: LabConfig, progress: Progress | None = None) -> None:
        self.config = config
        self.progress = progress or Progress()
        self.record = Record(config)
        self.session = Session(config, self.RESULTS, self.record, RunFigures.to_dict)
        self._set_up: set[str] = set()  # scenarios whose own service's setup has run
        self._stacks: dict[str, Any] = {}  # each own service's stack, read before its first step

    @property
    def results(self) -> list[RunFigures]:
        return self.session.results

    @property
    def meta(self) -> dict[str, Any]:
        return self.session.meta

    def run(self) -> list[RunFigures]:
        """Every scenario at every concurrency step (:meth:`runs`) in one :class:`Session`; the
        results (also in :attr:`RESULTS`, saved after each run)."""
        return self.session.run(self.runs)

    def runs(
        self, topology, url: str, pg: PostgreSQL | None, counters: probes.PostgresCounters
    ) -> Iterator[RunFigures]:
        """Each run's result in turn: every scenario at every concurrency step, a team's service on
        a database of its own (:func:`rig.own_database`)."""
        cfg = self.config
        total, i = len(cfg.scenarios) * len(cfg.concurrency), 0
        for scenario in cfg.scenarios:
            with rig.own_database(scenario, url, pg, counters) as (step_url, step_counters):
                as_is = []
                for users in cfg.concurrency:
                    i += 1
                    as_is.append(
                        self.run_one(scenario, users, topology, step_url, pg, step_counters, label=f"[{i}/{total}]")
                    )
                    yield as_is[-1]
                if scenario.tries_fixes:
                    yield from self._fixes(scenario, as_is, topology, step_url, pg, step_counters)

    def _fixes(
        self, scenario: Scenario, as_is: list[RunFigures], topology, url: str, pg, counters
    ) -> Iterator[RunFigures]:
        """Each fix for ``scenario``'s code (:func:`fixes.plan`, kept in the metadata) at the steps
        where it failed or was at risk, on the same database (its schema in place: no setup again)."""
        db_cores = (self.meta.get("machine") or {}).get("cpus") if pg else None
        stack, limits = self._stacks.get(scenario.name), DatabaseLimits.from_meta(self.meta)
        tried = fixes.plan(scenario.name, self.config.concurrency, as_is, stack, limits, db_cores, topology.name)
        self.meta.setdefault("fixes", {})[scenario.name] = tried.to_dict()
        runs = fixes.runs(tried, scenario)
        for j, (fixed, users) in enumerate(runs, 1):
            self._set_up.add(fixed.name)
            yield self.run_one(fixed, users, topology, url, pg, counters, label=f"[fix {j}/{len(runs)}]")

    def run_one(
        self,
        scenario: Scenario,
        users: int,
        topology,
        url: str,
        pg: PostgreSQL | None,
        counters: probes.PostgresCounters,
        label: str = "",
    ) -> RunFigures:
        """One scenario at one concurrency: its :class:`RunFigures` (also in the run's ``result.json``).

        Every process the run starts (PgBouncers, gunicorns, the doctor, locust, the sampler) is
        entered in one :class:`contextlib.ExitStack` as it starts, so each is stopped exactly once
        on every exit path: on success when the figures need it stopped, else when the stack closes."""
        connection = self.config.connection or scenario.connection
        run_dir = self.config.output / "runs" / slug(f"{scenario.name}-c{users}-{connection}")
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            topology.renew_app(**scenario.knobs)
            refused = None
        except topologies.TopologyError as exc:
            refused = f"scenario {scenario.name}: {exc}"
        with contextlib.ExitStack() as stack:
            stack.callback(self.record.write_configs)  # last: once the service has stopped
            run = self._prepare(scenario, users, connection, topology, url, pg, run_dir, label, stack, refused)
            result = self.record.identity(run, topology)
            try:
                if run.error:
                    raise ServiceError(run.error)
                result.update(self._measure(run, topology, url, pg, counters, stack))
            except ServiceError as exc:
                result["error"] = mask_password(str(exc))
        figures = RunFigures.from_dict(result, strict=True)
        store.write_json(run_dir / "result.json", figures.to_dict())
        self.progress.done(f"{run.head}: {measure.one_line(figures)}")
        return figures

    def _prepare(
        self,
        scenario: Scenario,
        users: int,
        connection: str,
        topology,
        url: str,
        pg: PostgreSQL | None,
        run_dir: Path,
        label: str,
        stack: contextlib.ExitStack,
        refused: str | None = None,
    ) -> _Run:
        """The run's parts, unstarted but for its PgBouncers; each entered in ``stack``. A PgBouncer
        that cannot start is the run's ``error``, as is ``refused`` (then nothing starts)."""
        cfg, hosts = self.config, topology.hosts
        run = _Run(scenario, users, connection, run_dir, hosts, service_urls=[url] * len(hosts), error=refused)
        run.head = f"{label} {scenario.name} c={users} {connection}" + (
            f" hosts={len(hosts)}" if len(hosts) > 1 else ""
        )
        if scenario.pgbouncer.pooled and not run.error:
            try:
                run.bouncers, run.service_urls = rig.pgbouncers(scenario, topology, url)
            except PgBouncerError as exc:
                run.error = mask_password(str(exc))
            for bouncer in run.bouncers:  # stopped last: their server connections end, and PostgreSQL logs them
                stack.callback(bouncer.stop)
        services = [rig.service(scenario, topology, host, run.service_urls[i], run_dir) for i, host in enumerate(hosts)]
        run.gunicorns, run.env = [g for g, _ in services], services[0][1]
        for gunicorn in run.gunicorns:
            # Our gunicorn stops at once (locust has stopped first: nothing is in flight); its workers
            # still close their pools. A team's command gets its own group's SIGINT, SIGTERM, SIGKILL.
            stack.callback(gunicorn.stop_after_load)
        if cfg.doctor and cfg.duration >= DOCTOR_MIN_DURATION and scenario.service.doctor_runs_here:
            run.doctor = probes.DoctorProbe(
                run.service_urls[0],
                measure.doctor_sample(cfg.duration),
                run_dir / "doctor.log",
                command_prefix=hosts[0].prefix,
            )
            stack.callback(run.doctor.stop)
        run.locust_cmd, run.locust = rig.locust(cfg, scenario, users, connection, topology, run)
        stack.callback(run.locust.stop)  # first to stop: no new requests
        if pg and pg.log_connections and len(hosts) > 1:
            run.connection_log = probes.ConnectionLog(pg.logfile)
        return run

    def _measure(
        self,
        run: _Run,
        topology,
        url: str,
        pg: PostgreSQL | None,
        counters: probes.PostgresCounters,
        stack: contextlib.ExitStack,
    ) -> dict[str, Any]:
        """Start the service, drive the load, stop everything (``stack``), and return the figures."""
        scenario = run.scenario
        if scenario.name not in self._set_up:
            if scenario.service.has_setup:
                self.progress.update(f"{run.head}: setup")
                scenario.service.set_up(run.gunicorns[0], run.run_dir / "setup.log", run.hosts[0].prefix)
            self._set_up.add(scenario.name)
        if scenario.name not in self._stacks:
            like = self._stacks.get(scenario.fix["of"]) if scenario.fix else None  # a fix: the same code
            theirs = self._stacks[scenario.name] = scenario.service.stack(run.gunicorns[0], like)
            if theirs is not None and like is None:  # a fix's is its code's, with what the hooks record beside
                self.meta.setdefault("stacks", {})[scenario.name] = theirs.to_dict()
        self.progress.update(f"{run.head}: starting the service")
        # Before the service starts: the sessions its workers open at start-up count too.
        sessions_before = counters.settled_sessions()
        if run.connection_log:
            run.connection_log.mark()
        for server in run.gunicorns:
            server.start()
            status, body = server.wait_for(scenario.path, HEALTHY_TIMEOUT, request_timeout=5)
            if status != 200:
                raise ServiceError(
                    f"{scenario.path} answered {status} before any load: {mask_password(body.strip())[:300]}"
                )
        why = scenario.service.not_applied(run.run_dir, self._stacks.get(scenario.name)) or rig.bypassed(run.bouncers)
        if why:
            raise ServiceError(why)
        read = self.meta.get("stacks", {}).get(scenario.name)
        if read is not None and not read.get("engines"):  # what its running workers really made
            read["engines"] = scenario.service.engines(run.run_dir)
        metrics_before = rig.pool_totals(run.gunicorns)
        tcp_bouncer = run.bouncers[0] if run.bouncers and run.scenario.pgbouncer.transport == "tcp" else None
        sampler = rig.sampler(
            self.config.interval,
            counters,
            run.gunicorns,
            run.locust,
            pg,
            url,
            tcp_bouncer,
            rig.extra_probe(run.scenario, run.bouncers, pg, run.hosts[0]),
        )
        sampler.start()
        stack.callback(lambda: sampler.is_alive() and sampler.stop())
        _drive(run, self.config.duration, self.progress)
        run.locust.stop()
        samples = sampler.stop()
        times = probes.pool_times(metrics_before, rig.pool_totals(run.gunicorns))
        doctor = _doctor_result(run.doctor, samples, topology, run.scenario, self.meta) if run.doctor else None
        stack.close()  # every gunicorn and PgBouncer stops now, once: the session counter settles after
        return self._figures(run, topology, samples, sessions_before, counters) | {"doctor": doctor, **times}

    def _figures(
        self, run: _Run, topology, samples: list[Sample], sessions_before: int, counters: probes.PostgresCounters
    ) -> dict[str, Any]:
        """Every figure of a finished run, from locust's files, the samples and PostgreSQL's counters."""
        sessions_after = counters.settled_sessions()
        backends_left = counters.wait_backends(0, timeout=run.scenario.service.backends_settle_s)
        totals = load.read_summary(run.csv_prefix)
        history = load.read_history(run.csv_prefix, self.config.interval)
        service_log = "".join(g.log_text() for g in run.gunicorns)
        figures = measure.summarise(
            totals,
            history,
            samples,
            sessions_before,
            sessions_after,
            backends_left,
            service_log,
            run.scenario,
            topology.port_range,
            hosts=len(run.hosts),
            workers_started=run.scenario.service.workers_started(run.gunicorns),
        )
        if len(run.hosts) > 1:
            by_address = run.connection_log.since_mark() if run.connection_log else {}
            figures["by_host"] = measure.host_figures(
                run.hosts, [g.log_text() for g in run.gunicorns], totals, samples, by_address
            )
        if run.bouncers:
            figures["pgbouncer"] = {
                **measure.pgbouncer_identity(run.scenario, len(run.bouncers)),
                **measure.pooler_figures(samples),
            }
        locust_log = run.locust.logfile.read_text(errors="replace") if run.locust.logfile.exists() else ""
        figures["load_generator"] = {
            "processes": self.config.load_workers or self.config.load_processes,
            "busiest_share": run.load_busiest,
            "cpu_warning": load.CPU_WARNING in locust_log,
        }
        return figures


@dataclasses.dataclass
class _Run:
    """The parts of one run, as :meth:`Lab._prepare` made them."""

    scenario: Scenario
    users: int
    connection: str
    run_dir: Path
    hosts: list
    service_urls: list[str]
    head: str = ""
    error: str | None = None  # a part that could not be made (PgBouncer)
    bouncers: list[PgBouncer] = dataclasses.field(default_factory=list)
    gunicorns: list[Service] = dataclasses.field(default_factory=list)  # ours, or the scenario's own
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    locust_cmd: list[str] = dataclasses.field(default_factory=list)
    locust: load.Locust | None = None
    load_busiest: float | None = None  # the busiest locust process's share of a core
    doctor: probes.DoctorProbe | None = None
    connection_log: probes.ConnectionLog | None = None

    @property
    def csv_prefix(self) -> Path:
        return self.run_dir / "locust"


def _doctor_result(
    doctor: probes.DoctorProbe, samples: list[Sample], topology, scenario: Scenario, meta: dict[str, Any]
) -> dict[str, Any]:
    """The doctor's diagnosis beside the lab's own figures over its window (:func:`measure.doctor_comparison`)."""
    data = doctor.result(timeout=doctor.sample + 30) or {}
    return measure.doctor_comparison(
        data, samples, topology.port_range, meta.get("postgres", {}), scenario.pgbouncer.transport
    )


def _drive(run: _Run, duration: float, progress: Progress) -> None:
    """locust's bounded run, with the doctor started past the start-up burst and the progress line.

    The doctor's lead counts from locust's first completed request, not from its launch: locust
    takes a second or more to start its users, and a lead from the launch put the doctor's window
    over the burst (a PgBouncer still opening its server connections read as churn). It starts
    at the latest when its window, after the second its own start takes, still ends within the load."""
    began = time.monotonic()
    run.locust.start()
    deadline = began + duration + 30
    first: tuple[float, dict[int, float]] | None = None
    last: tuple[float, dict[int, float]] | None = None
    loaded: float | None = None  # when locust's first request had completed
    lead = measure.doctor_lead(duration)
    latest = duration - measure.doctor_sample(duration) - 1.0
    while run.locust.running() and time.monotonic() < deadline:
        time.sleep(0.5)
        now, live = time.monotonic(), load.last_progress(run.csv_prefix)
        if loaded is None and live and live[0] > 0:
            loaded = now
        if (
            run.doctor
            and not run.doctor.started
            and ((loaded is not None and now - loaded >= lead) or now - began >= latest)
        ):
            run.doctor.start()
        # The load generator's CPU, each process its own, from 1 s in (past the fork and the spawn).
        reading = (now, run.locust.process_cpu())
        if reading[1] and reading[0] - began >= 1.0:
            first, last = first or reading, reading
        progress.update(_progress_line(run.head, now - began, duration, live))
    if first and last:
        run.load_busiest = load.busiest_share(first[1], last[1], last[0] - first[0])


@contextlib.contextmanager
def _unwind_on_termination() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt inside the block, so that they unwind like
    Ctrl-C and every ``finally`` (processes, namespaces, the throwaway server) runs. Outside the
    main thread, signals cannot be caught and nothing changes."""

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous: dict[int, Any] = {}
    try:
        for signum in (signal.SIGTERM, signal.SIGHUP):
            previous[signum] = signal.signal(signum, interrupt)
    except ValueError:
        pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _progress_line(head: str, elapsed: float, duration: float, live: tuple[float, float, float] | None) -> str:
    figures = f"{live[2]:,.0f} req/s, {live[0]:,.0f} requests, {live[1]:,.0f} failures" if live else "spawning users"
    return f"{head}: {min(elapsed, duration):4.0f}/{duration:g} s | {figures}"


__all__ = ["Lab", "LabConfig", "LabError", "Progress", "default_output", "slug"]
