"""What one fault run is and what it measured, typed: :class:`FaultFigures` is written to each
``result.json`` and ``faults.json`` and read back from them into the same class, so that the verdict
(:mod:`healthz.lab.fault_verdict`) and the report (:mod:`healthz.lab.fault_report`) read fields, not keys.
A skipped run or one that could not be measured holds what it is and why, and None for its figures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from healthz.lab.figures import fields_of
from healthz.lab.idle_clients import IdleStep


@dataclasses.dataclass(frozen=True)
class LivezReading:
    """``GET /api/v1/livez/`` sent halfway through a fault: its status (0: no answer), how long it
    took, whether the answer came before the fault ended, and where it was asked (``liveness``, the
    listener of its own, or ``request port``)."""

    status: int
    seconds: float
    during_fault: bool
    listener: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> LivezReading | None:
        return cls(**data) if data else None


@dataclasses.dataclass(frozen=True)
class FaultFigures:
    """One fault against one scenario."""

    # What ran: the fault, the scenario (a variant of ``base_scenario``), its setup, load and topology.
    fault: str
    scenario: str
    base_scenario: str
    pool_pre_ping: bool
    summary: str
    worker_class: str
    workers: int
    threads: int
    pool_capacity: int | None
    users: int
    connection: str
    topology: str
    hold: float
    own_service: bool = False  # a team's command: its failures are its statuses
    clients_retry: bool = True  # whether the load resent a request whose connection was cut
    error: str | None = None  # why it could not be measured
    skipped: str | None = None  # why it was not run
    problems: list[str] = dataclasses.field(default_factory=list)  # the findings as sentences
    run_dir: str | None = None
    failure_bound_s: float | None = None  # how long a failure may take under this fault
    commands: dict[str, str] = dataclasses.field(default_factory=dict)
    livez_during_fault: LivezReading | None = None
    request_port_livez_during_fault: LivezReading | None = None
    # The load's totals and the fault's moments, in seconds since the load began.
    requests: int | None = None
    failures: int | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    fault_began_s: float | None = None
    fault_ended_s: float | None = None
    load_seconds: float | None = None
    # The service's log and PostgreSQL's backends.
    service_errors: dict[str, int] = dataclasses.field(default_factory=dict)
    worker_restarts: int | None = None
    worker_timeouts: int | None = None
    password_in_log: bool = False  # the database's password in the service's log while it ran
    sessions_after_fault: int | None = None  # sessions opened from the fault's beginning (a deploy's new pools)
    rate_back_seconds: float | None = None  # from the fault's end until the pre-fault rate of 200s is back
    replaced_workers: int | None = None  # what a deploy replaced
    down_seconds: float | None = None  # a restart: from SIGTERM until the old master had exited
    backends_peak: int | None = None
    backends_end: int | None = None
    backends_left: int | None = None
    # What the fault noted of itself (pool-exhausted, too-many-clients, worker-kill).
    budget: str | None = None
    slots_free: int | None = None
    killed_pid: int | None = None
    killed_worker_connections: int | None = None
    replaced_seconds: float | None = None
    backends_released_seconds: float | None = None
    killed_worker_backends_left: int | None = None
    idle_capacity: int | None = None  # idle-clients: requests the workers serve at once (the steps' unit)
    idle_steps: list[IdleStep] = dataclasses.field(default_factory=list)  # idle-clients: each step's checks
    # From the timeline (fault_verdict.measure).
    errors_before: dict[str, int] = dataclasses.field(default_factory=dict)
    errors: dict[str, int] = dataclasses.field(default_factory=dict)
    failed: int | None = None
    lost_after_end: int | None = None
    ok_during_fault: int | None = None
    recovery_seconds: float | None = None
    first_ok_after_seconds: float | None = None
    slowest_failure_ms: float | None = None
    slowest_ok_ms: float | None = None
    timeline: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    findings: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # trouble and figures, for programs

    @property
    def measured(self) -> bool:
        """Whether it ran to its figures (not skipped, no error)."""
        return not self.skipped and not self.error and self.failed is not None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], strict: bool = False) -> FaultFigures:
        """Read back from a results file; ``strict``: a key that is not a field is an error (the lab's
        own writing), else it is left out (a file from another version)."""
        fields = fields_of(cls, data, strict=strict)
        for key in ("livez_during_fault", "request_port_livez_during_fault"):
            if not isinstance(fields.get(key), (LivezReading, type(None))):
                fields[key] = LivezReading.from_dict(fields[key])
        if "idle_steps" in fields:
            fields["idle_steps"] = [
                s if isinstance(s, IdleStep) else IdleStep.from_dict(s) for s in fields["idle_steps"]
            ]
        return cls(**fields)

    def replace(self, **changes: Any) -> FaultFigures:
        return dataclasses.replace(self, **changes)
