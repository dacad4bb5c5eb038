"""A run's figures from what was read during it: pure functions, no process, no I/O.

:func:`summarise` turns locust's totals and history, the probe samples, PostgreSQL's session
counter and the service log into the fields of :class:`~healthz.lab.figures.RunFigures`;
:func:`host_figures` splits them by application host, :func:`pooler_figures` gives PgBouncer's;
:func:`one_line` says a run in one line; :func:`doctor_lead` and :func:`doctor_sample` place the
doctor's window inside a run.
"""

from __future__ import annotations

from typing import Any

from healthz.config import mask_password
from healthz.doctor import Diagnosis, diagnose
from healthz.lab import load, probes
from healthz.lab.figures import RunFigures, Sample
from healthz.lab.scenarios import Scenario


def summarise(
    totals: dict[str, Any],
    history: list[dict],
    samples: list[Sample],
    sessions_before: int,
    sessions_after: int,
    backends_left: int,
    service_log: str,
    scenario: Scenario,
    port_range: tuple[int, int] | None,
    hosts: int = 1,
    workers_started: int | None = None,
) -> dict[str, Any]:
    """The figures of one run from locust's totals and history, the probe samples, the session
    counter before and after, and the service log (of every host, with ``hosts`` of them).
    Worker restarts count gunicorn's boots beyond ``workers_started`` (default: the scenario's
    workers on every host)."""
    requests, failures = totals["requests"], totals["failures"]
    seconds = totals.get("seconds") or (history[-1]["t"] if history else None)
    sessions = sessions_after - sessions_before
    logged = probes.log_counts(service_log, own_service=scenario.own_service)
    return {
        "seconds": seconds,
        "requests": requests,
        "failures": failures,
        "error_rate": failures / requests if requests else None,
        "rps": requests / seconds if seconds else None,
        "p50_ms": totals["p50_ms"],
        "p95_ms": totals["p95_ms"],
        "p99_ms": totals["p99_ms"],
        "failures_by_cause": totals["failures_by_cause"],
        "rate": totals.get("rate"),
        "due": totals.get("due"),
        "late": totals.get("late"),
        "stalled_seconds": load.stalled_seconds(history, history[1]["t"] - history[0]["t"])
        if len(history) > 1
        else 0.0,
        "service_errors": logged["error_kinds"],
        "address_unavailable": logged["address_unavailable_lines"],
        "pool_timeouts": logged["error_kinds"].get("pool_timeout", 0),
        "sessions_opened": sessions,
        "sessions_per_second": sessions / seconds if seconds else None,
        "sessions_per_request": sessions / requests if requests else None,
        "sessions_per_success": sessions / (requests - failures) if requests > failures else None,
        "backends_peak": probes.peak(s.backends for s in samples),
        "backends_mean": probes.mean(s.backends for s in samples),
        "in_use_mean": probes.mean(s.in_use for s in samples),
        "backends_left": backends_left,
        "time_wait_peak": probes.peak(s.time_wait for s in samples),
        "established_peak": probes.peak(s.established for s in samples),
        "ports_held_peak": probes.peak(s.ports_held for s in samples),
        "ports": (port_range[1] - port_range[0] + 1) if port_range else None,
        "cpu_seconds": {name: cpu_seconds(samples, name) for name in ("gunicorn", "postgres", "locust")},
        "worker_restarts": probes.worker_restarts(
            service_log, scenario.workers * hosts if workers_started is None else workers_started
        ),
        "worker_timeouts": service_log.count("WORKER TIMEOUT"),
        "samples": samples,
        "history": history,
    }


def cpu_seconds(samples: list[Sample], name: str) -> float | None:
    """CPU seconds of the ``name`` process tree over the samples (locust's own since it started,
    whose first reading comes once it runs); None without a reading."""
    values = [s.cpu[name] for s in samples if s.cpu.get(name) is not None]
    if not values:
        return None
    return round(max(values) - (0 if name == "locust" else values[0]), 2)


def one_line(run: RunFigures) -> str:
    """A run's outcome in one line for the terminal."""
    if run.error:
        return f"not measured: {run.error[:200]}"
    causes = ", ".join(f"{k} {v:,}" for k, v in list(run.failures_by_cause.items())[:3])
    return (
        f"{run.rps or 0:,.0f} req/s, p99 {run.p99_ms or 0:,.0f} ms, {run.requests:,} requests, "
        f"{run.failures:,} failed{f' ({causes})' if causes else ''}, {run.sessions_opened:,} sessions opened, "
        f"TIME_WAIT peak {run.time_wait_peak if run.time_wait_peak is not None else '-'}"
    )


def pooler_figures(samples: list[Sample]) -> dict[str, Any]:
    """PgBouncer over a run: client connections it accepted (``logins``), transactions, the peak
    of waiting clients and of server connections in use, the longest wait, and the mean wait per
    transaction in ms. None for figures no sample had."""
    rows = [s.pooler for s in samples if s.pooler.get("pooler_logins") is not None]
    if not rows:
        return {"logins": None}
    first, last = rows[0], rows[-1]
    xacts = last["pooler_total_xact_count"] - first["pooler_total_xact_count"]
    waited = last["pooler_total_wait_time"] - first["pooler_total_wait_time"]
    return {
        "logins": last["pooler_logins"] - first["pooler_logins"],
        "transactions": xacts,
        "cl_waiting_peak": probes.peak(s.get("pooler_cl_waiting") for s in rows),
        "sv_active_peak": probes.peak(s.get("pooler_sv_active") for s in rows),
        "maxwait_ms_peak": probes.peak(s["pooler_maxwait"] * 1000 + s["pooler_maxwait_us"] / 1000 for s in rows),
        "wait_ms_per_transaction": round(waited / xacts / 1000, 3) if xacts > 0 else None,
    }


def doctor_lead(duration: float) -> float:
    """Seconds into the load when ``healthz doctor`` starts: past the start-up burst (pools
    filling; PgBouncer opens its server connections a few per second)."""
    return min(3.0, duration * 0.3)


def doctor_sample(duration: float) -> float:
    """The doctor's sample window: done well before the load ends."""
    return round(min(5.0, duration * 0.4), 1)


def host_figures(
    hosts: list,
    service_logs: list[str],
    totals: dict[str, Any],
    samples: list[Sample],
    sessions_by_address: dict[str, dict[str, int]],
) -> list[dict[str, Any]]:
    """Each application host's share of a run: requests and failures (locust's ``--targets``
    names), sessions it opened and connections PostgreSQL refused it (PostgreSQL's log, by client
    address: :class:`probes.ConnectionLog`), its peak of client backends
    and of TIME_WAIT and ESTABLISHED sockets, and its service log's (``service_logs``, host by host)
    EADDRNOTAVAIL lines."""
    figures = []
    for i, (host, service_log) in enumerate(zip(hosts, service_logs)):
        share = totals["by_host"][i] if i < len(totals.get("by_host", [])) else {}
        logged = sessions_by_address.get(host.app_host, {"received": 0, "sessions": 0})
        per_host = [s.hosts[i] for s in samples if len(s.hosts) > i]
        figures.append(
            {
                "host": host.name,
                "address": host.app_host,
                "requests": share.get("requests"),
                "failures": share.get("failures"),
                "failures_by_cause": share.get("failures_by_cause", {}),
                "sessions_opened": logged["sessions"],
                "refused": logged["received"] - logged["sessions"],
                "backends_peak": probes.peak(
                    (s.backends_by_address or {}).get(host.app_host, 0) for s in samples if s.sessions is not None
                ),
                "time_wait_peak": probes.peak(h.time_wait for h in per_host),
                "established_peak": probes.peak(h.established for h in per_host),
                "address_unavailable": probes.log_counts(service_log)["address_unavailable_lines"],
            }
        )
    return figures


def doctor_comparison(
    data: dict[str, Any],
    samples: list[Sample],
    port_range: tuple[int, int] | None,
    postgres: dict[str, Any],
    transport: str,
) -> dict[str, Any]:
    """The doctor's ``--json`` output (``data``, with its ``exit``) beside the diagnosis the same
    rules give on the lab's own figures over the doctor's window (:func:`probes.measured_observation`,
    with the database's limits from ``postgres``, the run's meta), and whether they agree."""
    if "diagnosis" not in data:
        return {"exit": data.get("exit"), "error": mask_password(str(data.get("error", "not run")))[:300]}
    seen, said = data["observation"], data["diagnosis"]
    measured = probes.measured_observation(
        samples,
        seen["started_at"],
        seen["started_at"] + seen["window"],
        port_range=port_range,
        max_connections=postgres.get("max_connections", seen["max_connections"]),
        reserved_connections=postgres.get("superuser_reserved_connections", seen["reserved_connections"]),
        # The doctor's host's own connections when a log counts them (PgBouncer's, or PostgreSQL's with
        # several hosts), else PostgreSQL's session counter.
        opened_key="host_opened" if any(s.host_opened is not None for s in samples) else "sessions",
        transport=transport,
    )
    measured_diagnosis = diagnose(measured) if measured else None
    return {
        "exit": data["exit"],
        "status": said["status"],
        "opened": seen["opened"],
        "sessions_opened": seen["sessions_opened"],
        "window": seen["window"],
        "opened_per_second": said["opened_per_second"],
        "seconds_to_exhaustion": said["seconds_to_exhaustion"],
        "exhausted": bool(said.get("exhausted")),
        "findings": said["findings"],
        "measured_status": measured_diagnosis.status if measured_diagnosis else None,
        "measured_sessions_per_second": measured_diagnosis.opened_per_second if measured_diagnosis else None,
        "agrees": None
        if measured_diagnosis is None
        else set(measured_diagnosis.problems) == set(Diagnosis.problems_of(said)),
    }


def pgbouncer_identity(scenario: Scenario, instances: int) -> dict[str, Any]:
    """A PgBouncer scenario's placement, pool mode and pool size, and how many ran."""
    return {
        "placement": scenario.pgbouncer.value,
        "pool_mode": scenario.pgbouncer_pool_mode,
        "default_pool_size": scenario.pgbouncer_pool_size,
        "instances": instances,
    }
