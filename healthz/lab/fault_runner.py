"""The fault experiment: for each fault and scenario, a fresh service under steady locust load, the
fault begun and ended at set times, and the recovery measured.

Order of one run: renew the app side of the topology, begin the fault now if it is present at
start-up (database down, slots taken), start gunicorn, wait for a 200 unless the fault prevents
one, start locust for ``lead + hold + tail`` seconds, begin the fault ``lead`` seconds in, probe
``/api/v1/livez/`` while it lasts, end it ``hold`` seconds later, let the load finish, stop
gunicorn, count the backends left and measure (:func:`healthz.lab.fault_verdict.measure`). A fault that
was begun is ended on every exit path, so the server always comes back up and locks are released.

Faults need a server the lab may stop, fill and lock: always a throwaway PostgreSQL, never
``--database-url``. A team's own service (``app``) runs on an empty database of its own, made once
for all its faults, its ``setup`` run before its first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Iterator
from typing import Any

from sqlalchemy.engine import make_url

from healthz.config import mask_password
from healthz.harness import store
from healthz.lab import fault_verdict, load, probes, rig
from healthz.lab.fault_figures import FaultFigures, LivezReading
from healthz.lab.faults import Fault, FaultError, Target
from healthz.lab.record import Record
from healthz.lab.runner import LabConfig, Progress, Session, slug
from healthz.lab.scenarios import Scenario
from healthz.postgres import APP_DATABASE, PostgreSQL
from healthz.service import HEALTHY_TIMEOUT, ServiceError


class FaultLab:
    """Runs ``faults`` against each scenario of ``config`` at ``config.concurrency[0]`` users and
    writes ``faults.json`` (the fault report is made from it), in a :class:`Session` of its own."""

    RESULTS = "faults.json"

    def __init__(
        self,
        config: LabConfig,
        faults: list[Fault],
        *,
        lead: float = 2.0,
        tail: float = 4.0,
        request_timeout: float = 10.0,
        progress=None,
        after: float | None = None,
    ) -> None:
        self.config = config
        self.progress = progress or Progress()
        self.record = Record(config)
        self.session = Session(config, self.RESULTS, self.record, FaultFigures.to_dict)
        self.faults, self.lead, self.tail, self.request_timeout = faults, lead, tail, request_timeout
        self.after = after  # each fault's own (Fault.after) when None
        self.bases: dict[str, str] = {}  # a fault's variant of a scenario -> the scenario
        self._set_up: set[str] = set()  # scenarios whose setup (a team's) has run on their database

    def plan(self) -> list[tuple[Fault, Scenario]]:
        """Every (fault, scenario) pair to run, with the fault's own variants of each scenario (each
        variant's base scenario kept in :attr:`bases`)."""
        pairs = []
        for fault in self.faults:
            for base in self.config.scenarios:
                for variant in fault.variants(base):
                    self.bases[variant.name] = base.name
                    pairs.append((fault, variant))
        return pairs

    results = property(lambda self: self.session.results, doc="The runs so far (FaultFigures).")
    meta = property(lambda self: self.session.meta, doc="The session's metadata.")

    def run(self) -> list[FaultFigures]:
        """Every (fault, scenario) of :meth:`plan` (:meth:`runs`) in one :class:`Session`."""
        faults = {
            f.name: {"description": f.description, "hold": f.hold, "expected": list(f.expected)} for f in self.faults
        }
        extra = {"users": self.config.concurrency[0], "lead": self.lead, "tail": self.tail, "faults": faults}
        return self.session.run(self.runs, extra | {"request_timeout": self.request_timeout})

    def runs(
        self, topology, url: str, pg: PostgreSQL | None, counters: probes.PostgresCounters
    ) -> Iterator[FaultFigures]:
        """Each (fault, scenario) of :meth:`plan` in turn; a fault that does not apply is recorded as skipped."""
        plan = self.plan()
        with contextlib.ExitStack() as databases:
            own: dict[str, tuple[str, probes.PostgresCounters]] = {}
            for i, (fault, scenario) in enumerate(plan, 1):
                label = f"[{i}/{len(plan)}] {fault.name} {scenario.name}"
                base = self.bases.get(scenario.name, scenario.name)
                reason = fault.skipped_for(scenario, topology)
                if reason:
                    self.progress.done(f"{label}: skipped, {reason}")
                    row = fault_row(fault, scenario, base, self.config, topology)
                    yield FaultFigures.from_dict(row | {"skipped": reason}, strict=True)
                    continue
                if scenario.service.database_of_its_own and base not in own:
                    own[base] = databases.enter_context(rig.own_database(scenario, url, pg, counters))
                step_url, step_counters = own.get(base, (url, counters))
                yield self.run_fault(fault, scenario, topology, step_url, pg, step_counters, label)

    def run_fault(
        self,
        fault: Fault,
        scenario: Scenario,
        topology,
        url: str,
        pg: PostgreSQL,
        counters: probes.PostgresCounters,
        label: str = "",
    ) -> FaultFigures:
        """One fault against one scenario: the figures of :func:`~healthz.lab.fault_verdict.measure` and
        more, and what :func:`~healthz.lab.fault_verdict.judge` found.

        gunicorn, locust, the sampler and the fault itself (ended if begun) are entered in one
        :class:`contextlib.ExitStack` as they start, so each is stopped once on every exit path."""
        cfg = self.config
        run_dir = cfg.output / "faults" / slug(fault.name) / slug(scenario.name)
        run_dir.mkdir(parents=True, exist_ok=True)
        topology.renew_app()
        with contextlib.ExitStack() as stack:
            stack.callback(self.record.write_configs)  # last: once the service has stopped
            run = self._prepare_fault(fault, scenario, topology, url, pg, run_dir, stack)
            raw = run.result
            try:
                self.progress.update(f"{label}: starting")
                times = self._inject(run, counters, pg, url, label, stack)
                raw.update(self._fault_figures(run, counters, times, stack))
            except (ServiceError, FaultError) as exc:
                raw["error"] = mask_password(str(exc))
        result = FaultFigures.from_dict(raw, strict=True)
        if result.measured:
            result = result.replace(**fault_verdict.judged(fault, result, self.request_timeout))
        store.write_json(run_dir / "result.json", result.to_dict())
        self.progress.done(f"{label}: {fault_line(result)}")
        return result

    def _prepare_fault(
        self, fault: Fault, scenario: Scenario, topology, url: str, pg: PostgreSQL, run_dir, stack: contextlib.ExitStack
    ) -> _FaultRun:
        """The run's gunicorn and locust (unstarted, entered in ``stack``), its target and its result so far."""
        cfg = self.config
        users, connection = cfg.concurrency[0], cfg.connection or scenario.connection
        gunicorn, env = rig.service(scenario, topology, topology.hosts[0], url, run_dir)
        stack.callback(gunicorn.stop)
        duration = load_seconds(self, fault)
        target = Target(pg, gunicorn, topology, scenario, users, database=make_url(url).database or APP_DATABASE)
        run = _FaultRun(fault, scenario, run_dir, gunicorn, target, duration)
        locust_cmd = load.locust_command(
            gunicorn.base_url,
            users,
            duration,
            connection=connection,
            max_requests=cfg.max_requests,
            csv_prefix=run.csv_prefix,
            html=run_dir / "locust.html",
            stats_interval=cfg.interval,
            request_timeout=self.request_timeout,
            timeline=run.timeline_file,
            path=scenario.path,
            retry=fault.retry,
        )
        run.locust = load.Locust(locust_cmd, run_dir / "locust.log", command_prefix=topology.client_prefix)
        stack.callback(run.locust.stop)
        run.result = fault_row(fault, scenario, self.bases.get(scenario.name, scenario.name), self.config, topology) | {
            "run_dir": str(run_dir.relative_to(cfg.output)),
            "failure_bound_s": fault.failure_bound(scenario, users),
            "commands": self.record.commands(
                scenario,
                gunicorn,
                env,
                topology,
                locust_cmd,
                run_dir,
                rerun_fault(fault, self.bases.get(scenario.name, scenario.name), self.config),
            ),
        }
        return run

    def _begin(self, run: _FaultRun, stack: contextlib.ExitStack, counters) -> float:
        """Begin the fault, entered in ``stack`` so that it is ended on any exit; when it began."""
        run.sessions_at_fault = counters.sessions()
        began = time.time()
        run.fault.begin(run.target)
        stack.callback(run.end_fault)
        return began

    def _inject(
        self, run: _FaultRun, counters, pg: PostgreSQL, url: str, label: str, stack: contextlib.ExitStack
    ) -> dict[str, float]:
        """Start the service and the load, hold the fault for its time with livez probed halfway, end
        it and let the load run out: when the load and the fault began and ended."""
        fault, gunicorn, scenario = run.fault, run.gunicorn, run.scenario
        base = self.bases.get(scenario.name, scenario.name)
        if base not in self._set_up:
            _set_up(run, self.progress, label)
            self._set_up.add(base)
        if fault.at_start:
            fault_began = self._begin(run, stack, counters)
        gunicorn.start()
        # Before any fault: a restart's new master boots its workers again.
        run.workers = scenario.service.workers_started([gunicorn]) or scenario.workers
        if not fault.at_start:
            status, body = gunicorn.wait_for(scenario.path, HEALTHY_TIMEOUT, request_timeout=5)
            if status != 200:
                raise ServiceError(
                    f"{scenario.path} answered {status} before the fault: {mask_password(body.strip())[:300]}"
                )
        run.prepare(stack)
        run.sampler = rig.sampler(self.config.interval, counters, [gunicorn], run.locust, pg, url)
        run.sampler.start()
        stack.callback(lambda: run.sampler.is_alive() and run.sampler.stop())
        run.locust.start()
        load_began = _wait_for_load(run.locust, run.csv_prefix)
        if fault.at_start:
            held_from = load_began + self.lead
        else:
            _sleep_until(load_began + self.lead)
            self.progress.update(f"{label}: fault begins")
            fault_began = self._begin(run, stack, counters)
            held_from = time.time()
        probes = {}
        if fault.hold:
            _sleep_until(held_from + fault.hold / 2)
            if not scenario.own_service:  # livez is the lab's service's
                # What a liveness probe sees (its own listener), and livez on the request port beside it.
                probes = {
                    "livez_during_fault": _LivezProbe(gunicorn, gunicorn.liveness_url),
                    "request_port_livez_during_fault": _LivezProbe(gunicorn, None),
                }
            _sleep_until(held_from + fault.hold)
        run.end_fault()
        fault_ended = fault_began if fault.instant else time.time()
        for key, probe in probes.items():
            run.result[key] = probe.result(before=fault_ended)
        self.progress.update(f"{label}: fault ended, load goes on")
        run.locust.wait(run.duration + 30 - (time.time() - load_began))
        return {
            "load_began": load_began,
            "fault_began": fault_began,
            "fault_ended": fault_ended,
            "load_ended": time.time(),
        }

    def _fault_figures(
        self, run: _FaultRun, counters, times: dict[str, float], stack: contextlib.ExitStack
    ) -> dict[str, Any]:
        """Every figure of a finished fault run; gunicorn is stopped (``stack``) between the backends
        counted at the end of the load and those left after it."""
        samples = run.sampler.stop()
        backends_end = counters.backends()
        # Read before it stops: a team's command's log is masked then.
        password = make_url(run.target.gunicorn.env.get("DATABASE_URL", "postgresql://")).password
        leaked = bool(password) and password in run.gunicorn.log_text()
        stack.close()
        backends_left = counters.wait_backends(0)
        sessions = counters.settled_sessions() - run.sessions_at_fault
        log, totals = run.gunicorn.log_text(), load.read_summary(run.csv_prefix)
        timeline = load.read_timeline(run.timeline_file)
        began = times["load_began"]
        return {
            "requests": totals["requests"],
            "failures": totals["failures"],
            "p50_ms": totals["p50_ms"],
            "p99_ms": totals["p99_ms"],
            "fault_began_s": round(times["fault_began"] - began, 2),
            "fault_ended_s": round(times["fault_ended"] - began, 2),
            "load_seconds": round(times["load_ended"] - began, 2),
            "service_errors": probes.log_counts(log)["error_kinds"],
            "workers": run.workers,
            "worker_restarts": probes.worker_restarts(log, run.workers),
            "sessions_after_fault": sessions,
            "password_in_log": leaked,
            "worker_timeouts": log.count("WORKER TIMEOUT"),
            "backends_peak": probes.peak(s.backends for s in samples),
            "backends_end": backends_end,
            "backends_left": backends_left,
            **run.target.notes,
            **fault_verdict.measure(timeline, times["fault_began"], times["fault_ended"], times["load_ended"]),
            "timeline": _relative(timeline, began),
        }


def load_seconds(lab: FaultLab, fault: Fault) -> float:
    """How long ``lab``'s load runs for ``fault``: the lead, its hold, the tail, what it adds after,
    and 1 s of slack for beginning and ending it (a restart, a replacement worker)."""
    after = fault.after if lab.after is None else lab.after
    return lab.lead + fault.hold + lab.tail + after + 1


def _set_up(run: _FaultRun, progress: Progress, label: str) -> None:
    """A team's setup (migrations, create_all) on its empty database, before its first fault."""
    if run.scenario.service.has_setup:
        progress.update(f"{label}: setup")
        run.scenario.service.set_up(run.gunicorn, run.run_dir / "setup.log", run.target.topology.hosts[0].prefix)


def fault_row(fault: Fault, scenario: Scenario, base: str, cfg: LabConfig, topology) -> dict[str, Any]:
    """What a fault run is, before any figure: the fault, the scenario (a variant of ``base``), its
    setup, the load and the topology."""
    return {
        "fault": fault.name,
        "scenario": scenario.name,
        "base_scenario": base,
        "pool_pre_ping": scenario.service_settings().pool_pre_ping,
        "summary": scenario.summary(),
        "worker_class": scenario.worker_class,
        "workers": scenario.workers,
        "threads": scenario.threads,
        "pool_capacity": scenario.pool_capacity(),
        "users": cfg.concurrency[0],
        "connection": cfg.connection or scenario.connection,
        "topology": topology.name,
        "hold": fault.hold,
        "own_service": scenario.own_service,
        "clients_retry": fault.retry,
        "error": None,
        "skipped": None,
        "problems": [],
    }


def rerun_fault(fault: Fault, base: str, cfg: LabConfig) -> str:
    """The ``healthz lab faults`` command that repeats one fault against ``base`` (the scenario it varies)."""
    args = [
        "healthz",
        "lab",
        "faults",
        "--fault",
        fault.name,
        "--scenario",
        base.split(":", 1)[0],
        "--users",
        str(cfg.concurrency[0]),
        "--topology",
        cfg.topology,
        "--max-connections",
        str(cfg.max_connections),
    ]
    return " ".join(args)


@dataclasses.dataclass
class _FaultRun:
    """The parts of one fault run, as :meth:`FaultLab._prepare_fault` made them."""

    fault: Fault
    scenario: Scenario
    run_dir: Any
    gunicorn: Any
    target: Target
    duration: float
    locust: load.Locust | None = None
    sampler: probes.Sampler | None = None
    result: dict[str, Any] = dataclasses.field(default_factory=dict)
    ended: bool = False
    workers: int = 0  # as the service started, before the fault
    sessions_at_fault: int = 0  # pg_stat_database.sessions as the fault began

    @property
    def csv_prefix(self):
        return self.run_dir / "locust"

    @property
    def timeline_file(self):
        return self.run_dir / "timeline.json"

    def prepare(self, stack: contextlib.ExitStack) -> None:
        """The fault's :meth:`~Fault.prepare`, its :meth:`~Fault.release` entered in ``stack`` first."""
        stack.callback(self.fault.release, self.target)
        self.fault.prepare(self.target)

    def end_fault(self) -> None:
        """End the fault once: the second call (the stack's, after a normal end) does nothing."""
        if not self.ended:
            self.ended = True
            self.fault.end(self.target)


def _wait_for_load(locust: load.Locust, csv_prefix, timeout: float = 30.0) -> float:
    """When locust's first requests completed (its start-up takes a second or so)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and locust.running():
        progress = load.last_progress(csv_prefix)
        if progress and progress[0] > 0:
            break
        time.sleep(0.05)
    return time.time()


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


class _LivezProbe(threading.Thread):
    """``GET /api/v1/livez/`` in the background while a fault lasts, as a liveness probe sends it:
    on ``base_url`` (the request port when None), given :data:`fault_verdict.LIVENESS_TIMEOUT` to answer
    and then timed until it does, so that a stuck worker delays the answer, not the fault's end."""

    def __init__(self, gunicorn, base_url: str | None) -> None:
        super().__init__(name="healthz-livez-probe", daemon=True)
        self.gunicorn, self.base_url = gunicorn, base_url
        self.status: int | None = None
        self.began = self.answered = time.time()
        self.start()

    def run(self) -> None:
        self.status, _ = self.gunicorn.get("/api/v1/livez/", timeout=LIVEZ_WAIT, base_url=self.base_url)
        self.answered = time.time()

    def result(self, before: float) -> LivezReading:
        """The answer, how long it took, whether it came before ``before`` (the fault's end) and where
        it was asked."""
        self.join(LIVEZ_WAIT + 15)
        return LivezReading(
            status=self.status or 0,
            seconds=round(self.answered - self.began, 2),
            during_fault=self.answered <= before,
            listener="liveness" if self.base_url else "request port",
        )


#: How long the livez probe waits for an answer: long enough to time a slow one.
LIVEZ_WAIT = 10.0


def _relative(timeline: list[dict], origin: float) -> list[dict]:
    """The timeline with times in seconds since the load began, for the report's plots."""
    return [{**row, "t": round(row["t"] - origin, 1)} for row in timeline]


def fault_line(result: FaultFigures) -> str:
    """A fault run's outcome in one line for the terminal."""
    if result.skipped:
        return f"skipped: {result.skipped}"
    if result.error:
        return f"not measured: {result.error[:200]}"
    errors = ", ".join(f"{k} {v:,}" for k, v in list(result.errors.items())[:3]) or "no errors"
    recovery = "not recovered" if result.recovery_seconds is None else f"recovered {result.recovery_seconds:g} s after"
    verdict = "as expected" if not result.problems else "PROBLEM: " + "; ".join(result.problems)
    return f"{errors}; {recovery}; {result.requests:,} requests; {verdict}"


__all__ = ["FaultLab", "fault_line", "load_seconds"]
