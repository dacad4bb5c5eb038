"""The fault experiment: for each fault and scenario, a fresh service under steady locust load, the
fault begun and ended at set times, and the recovery measured.

Order of one run: renew the app side of the topology, begin the fault now if it is present at
start-up (database down, slots taken), start gunicorn, wait for a 200 unless the fault prevents
one, start locust for ``lead + hold + tail`` seconds, begin the fault ``lead`` seconds in, probe
``/api/v1/livez/`` while it lasts, end it ``hold`` seconds later, let the load finish, stop
gunicorn, count the backends left and measure (:func:`healthz.lab.faults.measure`). A fault that
was begun is ended on every exit path, so the server always comes back up and locks are released.

Faults need a server the lab may stop, fill and lock: always a throwaway PostgreSQL, never
``--database-url``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

from healthz.config import mask_password
from healthz.lab import faults as catalogue
from healthz.lab import load, probes
from healthz.lab.faults import Fault, FaultError, Target
from healthz.lab.runner import Lab, LabConfig, _slug, _stop_run
from healthz.lab.scenarios import Scenario
from healthz.postgres import PostgreSQL
from healthz.service import ServiceError

HEALTHY_TIMEOUT = 20.0


class FaultLab(Lab):
    """Runs ``faults`` against each scenario of ``config`` at ``config.concurrency[0]`` users and
    writes ``faults.json`` (the fault report is made from it)."""

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
    ) -> None:
        super().__init__(config, progress)
        self.faults, self.lead, self.tail, self.request_timeout = faults, lead, tail, request_timeout

    def plan(self) -> list[tuple[Fault, Scenario]]:
        """Every (fault, scenario) pair to run, with the fault's own variants of each scenario."""
        return [
            (fault, variant)
            for fault in self.faults
            for base in self.config.scenarios
            for variant in fault.scenarios(base)
        ]

    def _meta(
        self, topology, pg: PostgreSQL | None, counters: probes.PostgresCounters, started: float
    ) -> dict[str, Any]:
        meta = super()._meta(topology, pg, counters, started)
        meta.update(
            users=self.config.concurrency[0],
            lead=self.lead,
            tail=self.tail,
            request_timeout=self.request_timeout,
            faults={
                f.name: {"description": f.description, "hold": f.hold, "expected": list(f.expected)}
                for f in self.faults
            },
        )
        return meta

    def runs(
        self, topology, url: str, pg: PostgreSQL | None, counters: probes.PostgresCounters
    ) -> Iterator[dict[str, Any]]:
        """Each (fault, scenario) of :meth:`plan` in turn; a fault that does not apply is recorded as skipped."""
        plan = self.plan()
        for i, (fault, scenario) in enumerate(plan, 1):
            label = f"[{i}/{len(plan)}] {fault.name} {scenario.name}"
            reason = fault.skip_reason(scenario, topology)
            if reason:
                self.progress.done(f"{label}: skipped, {reason}")
                yield self._row(fault, scenario, topology) | {"skipped": reason}
            else:
                yield self.run_fault(fault, scenario, topology, url, pg, counters, label)

    def _row(self, fault: Fault, scenario: Scenario, topology) -> dict[str, Any]:
        return {
            "fault": fault.name,
            "scenario": scenario.name,
            "summary": scenario.summary(),
            "worker_class": scenario.worker_class,
            "workers": scenario.workers,
            "threads": scenario.threads,
            "pool_capacity": scenario.pool_capacity(),
            "users": self.config.concurrency[0],
            "connection": self.config.connection or scenario.connection,
            "topology": topology.name,
            "hold": fault.hold,
            "error": None,
            "skipped": None,
            "problems": [],
        }

    def rerun_fault(self, fault: Fault, scenario: Scenario) -> str:
        cfg = self.config
        base = scenario.name.split(":", 1)[0].removesuffix("+pre_ping")
        args = [
            "healthz",
            "lab",
            "faults",
            "--fault",
            fault.name,
            "--scenario",
            base,
            "--users",
            str(cfg.concurrency[0]),
            "--topology",
            cfg.topology,
            "--max-connections",
            str(cfg.max_connections),
        ]
        return " ".join(args)

    def run_fault(
        self,
        fault: Fault,
        scenario: Scenario,
        topology,
        url: str,
        pg: PostgreSQL,
        counters: probes.PostgresCounters,
        label: str = "",
    ) -> dict[str, Any]:
        """One fault against one scenario: the figures of :func:`~healthz.lab.faults.measure` and
        more, and the problems :func:`~healthz.lab.faults.judge` found."""
        cfg = self.config
        users, connection = cfg.concurrency[0], cfg.connection or scenario.connection
        run_dir = cfg.output / "faults" / _slug(fault.name) / _slug(scenario.name)
        run_dir.mkdir(parents=True, exist_ok=True)
        topology.renew_app()
        gunicorn, env = self._service(scenario, topology, topology.hosts[0], url, run_dir)
        # Beginning and ending a fault take time of their own (a restart, a replacement worker): 1 s of slack.
        duration = self.lead + fault.hold + self.tail + 1
        csv_prefix, timeline_file = run_dir / "locust", run_dir / "timeline.json"
        locust_cmd = load.locust_command(
            gunicorn.base_url,
            users,
            duration,
            connection=connection,
            max_requests=cfg.max_requests,
            csv_prefix=csv_prefix,
            html=run_dir / "locust.html",
            stats_interval=cfg.interval,
            request_timeout=self.request_timeout,
            timeline=timeline_file,
        )
        locust = load.Locust(locust_cmd, run_dir / "locust.log", command_prefix=topology.client_prefix)
        result = self._row(fault, scenario, topology)
        result.update(
            run_dir=str(run_dir.relative_to(cfg.output)),
            failure_bound_s=fault.failure_bound(scenario, users),
            commands=self._commands(scenario, env, topology, locust_cmd, run_dir, self.rerun_fault(fault, scenario)),
        )
        target = Target(pg, gunicorn, topology, scenario, users)
        sampler: probes.Sampler | None = None
        begun = ended = False
        try:
            self.progress.update(f"{label}: starting")
            if fault.at_start:
                fault_began = time.time()
                fault.begin(target)
                begun = True
            gunicorn.start()
            if not fault.at_start:
                status, body = gunicorn.wait_for("/api/v1/healthz/", HEALTHY_TIMEOUT, request_timeout=5)
                if status != 200:
                    raise ServiceError(
                        f"/api/v1/healthz/ answered {status} before the fault: {mask_password(body.strip())[:300]}"
                    )
            sampler = self._sampler(counters, [gunicorn], locust, pg, url)
            sampler.start()
            locust.start()
            load_began = _wait_for_load(locust, csv_prefix)
            if fault.at_start:
                held_from = load_began + self.lead
            else:
                _sleep_until(load_began + self.lead)
                self.progress.update(f"{label}: fault begins")
                fault_began = time.time()
                fault.begin(target)
                begun, held_from = True, time.time()
            probe = None
            if fault.hold:
                _sleep_until(held_from + fault.hold / 2)
                probe = _LivezProbe(gunicorn, self.request_timeout)
                _sleep_until(held_from + fault.hold)
            fault.end(target)
            ended = True
            fault_ended = fault_began if fault.instant else time.time()
            if probe is not None:
                result["livez_during_fault"] = probe.result(before=fault_ended)
            self.progress.update(f"{label}: fault ended, load goes on")
            locust.wait(duration + 30 - (time.time() - load_began))
            load_ended = time.time()
            samples = sampler.stop()
            backends_end = counters.backends()
            gunicorn.stop()
            backends_left = counters.wait_backends(0)
            log = gunicorn.log_text()
            totals = load.read_summary(csv_prefix)
            notes = {k: v for k, v in target.notes.items() if not k.startswith("_")}
            timeline = load.read_timeline(timeline_file)
            result.update(
                requests=totals["requests"],
                failures=totals["failures"],
                p50_ms=totals["p50_ms"],
                p99_ms=totals["p99_ms"],
                fault_began_s=round(fault_began - load_began, 2),
                fault_ended_s=round(fault_ended - load_began, 2),
                load_seconds=round(load_ended - load_began, 2),
                service_errors=probes.log_counts(log)["error_kinds"],
                worker_restarts=probes.worker_restarts(log, scenario.workers),
                worker_timeouts=log.count("WORKER TIMEOUT"),
                backends_peak=probes.peak(s["backends"] for s in samples),
                backends_end=backends_end,
                backends_left=backends_left,
                **notes,
                **catalogue.measure(timeline, fault_began, fault_ended, load_ended),
            )
            result["timeline"] = _relative(timeline, load_began)
            result["problems"] = catalogue.judge(fault, result, self.request_timeout)
        except (ServiceError, FaultError) as exc:
            result["error"] = mask_password(str(exc))
        finally:
            if begun and not ended:
                fault.end(target)
            _stop_run(locust, sampler, [gunicorn])
        (run_dir / "result.json").write_text(json.dumps(result, indent=1, default=str))
        self.progress.done(f"{label}: {fault_line(result)}")
        return result


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
    """``GET /api/v1/livez/`` in the background while a fault lasts, so that a stuck worker delays
    the answer, not the fault's end."""

    def __init__(self, gunicorn, timeout: float) -> None:
        super().__init__(name="healthz-livez-probe", daemon=True)
        self.gunicorn, self.timeout = gunicorn, timeout
        self.status: int | None = None
        self.began = self.answered = time.time()
        self.start()

    def run(self) -> None:
        self.status, _ = self.gunicorn.get("/api/v1/livez/", timeout=self.timeout)
        self.answered = time.time()

    def result(self, before: float) -> dict[str, Any]:
        """``{"status", "seconds", "during_fault"}``: the answer, how long it took and whether it
        came before ``before`` (the fault's end)."""
        self.join(self.timeout + 15)
        return {
            "status": self.status or 0,
            "seconds": round(self.answered - self.began, 2),
            "during_fault": self.answered <= before,
        }


def _relative(timeline: list[dict], origin: float) -> list[dict]:
    """The timeline with times in seconds since the load began, for the report's plots."""
    return [{**row, "t": round(row["t"] - origin, 1)} for row in timeline]


def fault_line(result: dict[str, Any]) -> str:
    """A fault run's outcome in one line for the terminal."""
    if result.get("skipped"):
        return f"skipped: {result['skipped']}"
    if result.get("error"):
        return f"not measured: {result['error'][:200]}"
    errors = ", ".join(f"{k} {v:,}" for k, v in list(result["errors"].items())[:3]) or "no errors"
    recovery = (
        "not recovered" if result["recovery_seconds"] is None else f"recovered {result['recovery_seconds']:g} s after"
    )
    verdict = "as expected" if not result["problems"] else "PROBLEM: " + "; ".join(result["problems"])
    return f"{errors}; {recovery}; {result['requests']:,} requests; {verdict}"


__all__ = ["FaultLab", "fault_line"]
