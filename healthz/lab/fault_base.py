"""What every fault is: :class:`Fault` (its moments, what it may cause, what it needs), the
:class:`Target` it acts on, and :class:`FaultError`. The faults themselves: :mod:`healthz.lab.faults`
(the database, the network, a worker) and :mod:`healthz.lab.deploys` (reload, restart, recycle)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from healthz.lab.scenarios import Scenario
from healthz.postgres import APP_DATABASE, PostgreSQL

#: Causes any fault may add: a client that timed out waiting is a hang, and is never expected.
CLIENT = "client"
#: A run must end with this many seconds free of failures to count as recovered.
QUIET_TAIL = 1.0


class FaultError(RuntimeError):
    """A fault could not be injected; the message says why."""


@dataclasses.dataclass
class Target:
    """What a fault acts on: the throwaway server, the service, the topology and the load.

    ``notes`` are figures a fault reports (they join the run's result); ``state`` is what it keeps
    between :meth:`Fault.begin` and :meth:`Fault.end` and reports nowhere."""

    pg: PostgreSQL
    gunicorn: Any  # healthz.service.Gunicorn, or a team's command (own_service.AppService)
    topology: Any
    scenario: Scenario
    users: int
    database: str = APP_DATABASE  # the service's: a team's own has one of its own
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)
    state: dict[str, Any] = dataclasses.field(default_factory=dict)


class Fault:
    """One fault. Subclasses set the class attributes and implement :meth:`begin` and :meth:`end`.

    ``expected`` are the error kinds (or client causes, ``client`` for any) the fault may produce;
    ``at_start`` faults begin before gunicorn starts and end ``lead + hold`` seconds into the load;
    the others end ``hold`` seconds after :meth:`begin` returns. An ``instant`` fault (a kill) ends
    as it begins: :meth:`end` only waits for its aftermath, and recovery counts from the kill.
    """

    name = ""
    description = ""
    expected: tuple[str, ...] = ()
    at_start = False
    instant = False
    hold = 2.0
    worker_restarts = 0
    #: What of the lab's own service the fault sets (a knob, its table): a team's service is not run.
    needs_ours: str | None = None
    #: Seconds of load added after the runner's tail: how long a deploy's new workers take to reach
    #: the rate of the old ones is a figure of its own.
    after = 0.0
    #: Whether the load's clients resend an idempotent GET whose connection was cut (geventhttpclient's
    #: default, as browsers do); deploys count what clients that do not retry lose.
    retry = True

    def expected_restarts(self, workers: int) -> int:
        """Workers gunicorn boots because of this fault, for a service that started ``workers``."""
        return self.worker_restarts

    def skipped_for(self, scenario: Scenario, topology: Any) -> str | None:
        """Why this fault is not run against ``scenario`` in ``topology``: it needs the lab's own
        service, or :meth:`skip_reason`; None when it runs."""
        if scenario.own_service and self.needs_ours:
            return f"it needs the lab's own service ({self.needs_ours})"
        return self.skip_reason(scenario, topology)

    def scenarios(self, base: Scenario) -> list[Scenario]:
        """The scenario as this fault runs it (a fault may change settings or add variants)."""
        return [base]

    def variants(self, base: Scenario) -> list[Scenario]:
        """:meth:`scenarios`, but a team's service as it is when the fault needs the lab's own
        (it is skipped as it is, not varied)."""
        return [base] if base.own_service and self.needs_ours else self.scenarios(base)

    def skip_reason(self, scenario: Scenario, topology: Any) -> str | None:
        """Why this fault does not apply to ``scenario`` in ``topology``; None when it does."""
        return None

    def failure_bound(self, scenario: Scenario, users: int) -> float | None:
        """Seconds a failed request may take at most while the fault lasts; None for no bound
        beyond the client's request timeout."""
        return None

    def prepare(self, target: Target) -> None:
        """What a fault sets up once the service answers, before the load starts (a proxy started, a
        team's config read), so that :meth:`begin` is quick; :meth:`release` undoes it on every exit."""

    def release(self, target: Target) -> None:
        """Undo :meth:`prepare`, whether or not the fault began."""

    def begin(self, target: Target) -> None:
        raise NotImplementedError

    def end(self, target: Target) -> None:
        raise NotImplementedError


def replaced(target: Target, old: set[int], wanted: int, since: float, timeout: float) -> float | None:
    """Seconds from ``since`` (a monotonic time) until gunicorn runs ``wanted`` workers and none of
    ``old``; None when it did not within ``timeout`` seconds of ``since``."""
    while time.monotonic() < since + timeout:
        pids = set(target.gunicorn.worker_pids())
        if not pids & old and len(pids) >= wanted:
            return round(time.monotonic() - since, 2)
        time.sleep(0.05)
    return None
