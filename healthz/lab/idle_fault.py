"""The ``idle-clients`` fault: connections held open without being used, stepped from half of what
the workers can serve at once to twice it, while the load runs; at each step the health check's and
the liveness listener's answers timed (:mod:`healthz.lab.idle_clients`, run where the load's clients
are), straight to gunicorn and through nginx in front of it (:mod:`healthz.lab.nginx`).

A green worker serves ``worker_connections`` clients at once and a gthread worker ``threads``: a
client that sends half a request holds one of them until it finishes. The figures say at how many
such clients the health check starts failing (:func:`healthz.lab.idle_clients.limit`), and whether
the proxy moves that limit.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from healthz.harness.process import ChildProcess, ProcessError
from healthz.lab import idle_clients
from healthz.lab.fault_base import CLIENT, Fault, FaultError, Target
from healthz.lab.idle_clients import KINDS, IdleStep
from healthz.lab.nginx import Nginx, NginxError
from healthz.lab.scenarios import Scenario

#: Holders at each step, as shares of what the workers serve at once (workers x threads, or x worker_connections).
SHARES = (0.5, 1.0, 2.0)
ROUTES = ("direct", "nginx")
#: The most a step takes: the holders opened, settled, the checks' timeout, the pause after.
STEP_SECONDS = idle_clients.CONNECT_TIMEOUT + 2 * idle_clients.SETTLE + idle_clients.CHECK_TIMEOUT


def served_at_once(worker_class: str, threads: int, worker_connections: int) -> int:
    """Requests one gunicorn worker serves at once: its threads under gthread (and under sync with
    more than one thread, which gunicorn runs as gthread), one under sync, else ``worker_connections``.
    ``worker_class`` as gunicorn takes it: ``gthread``, ``sync`` or a class path (``...ThreadWorker``)."""
    name = worker_class.lower()
    sync = "sync" in name
    if "gthread" in name or "threadworker" in name or (sync and threads > 1):
        return threads
    return 1 if sync else worker_connections


def _per_worker(scenario: Scenario, gunicorn: Any) -> int:
    """What one worker of the running service serves at once: the scenario's settings for ours, what
    gunicorn resolved from a team's command (``--print-config``) for theirs."""
    if not scenario.own_service:
        return scenario.concurrency_per_worker
    read = scenario.service.stack(gunicorn)
    config = (read.gunicorn if read is not None else None) or {}
    return served_at_once(
        str(config.get("worker_class", "sync")),
        int(config.get("threads", 1)),
        int(config.get("worker_connections", scenario.worker_connections)),
    )


class IdleClients(Fault):
    """Idle and slow-header clients held against the service, stepped up, checks timed at each step;
    the steps are its figures (``idle_steps``). ``shares``, ``kinds`` and ``routes`` choose the steps."""

    name = "idle-clients"
    description = (
        "Clients that hold a connection without using it, while the load runs: idle keep-alive ones (one request "
        "that needs no database, then nothing) and slow-header ones (half a request, never finished), stepped from half of what the workers "
        "serve at once to twice it; at each step 20 health checks (3 s each) and 5 liveness checks are timed, "
        "straight to gunicorn and through nginx in front of it."
    )
    # The load's requests wait behind the holders; none is refused or answered with an error.
    expected = (CLIENT,)

    def __init__(
        self, shares: tuple[float, ...] = SHARES, kinds: tuple[str, ...] = KINDS, routes: tuple[str, ...] = ROUTES
    ) -> None:
        self.shares, self.kinds, self.routes = shares, kinds, routes
        self.hold = round(len(shares) * len(kinds) * len(routes) * STEP_SECONDS + 2, 1)

    def steps(self, capacity: int) -> list[int]:
        """The holders at each step for workers that serve ``capacity`` requests at once."""
        return sorted({max(1, round(share * capacity)) for share in self.shares})

    def prepare(self, target: Target) -> None:
        """Before the load: nginx started in front (when a route asks for it) and the steps worked out
        from what the running workers serve at once (a team's: gunicorn's resolved config)."""
        gunicorn, topology, scenario = target.gunicorn, target.topology, target.scenario
        target.state["routes"] = {"direct": gunicorn.base_url}
        if "nginx" in self.routes:
            try:
                nginx = Nginx(f"{gunicorn.host}:{gunicorn.port}", gunicorn.host, command_prefix=topology.app_prefix)
                target.state["nginx"] = nginx.start()
            except (NginxError, ProcessError) as exc:
                raise FaultError(str(exc)) from None
            target.state["routes"]["nginx"] = nginx.base_url
        workers = len(gunicorn.worker_pids()) or scenario.workers
        target.notes["idle_capacity"] = workers * _per_worker(scenario, gunicorn)

    def begin(self, target: Target) -> None:
        gunicorn, scenario, routes = target.gunicorn, target.scenario, target.state["routes"]
        out = gunicorn.logfile.parent / "idle-steps.json"
        command = [sys.executable, "-m", "healthz.lab.idle_clients", "--path", scenario.path]
        # An idle client asks once for what needs no database (the lab's livez, a team's ready_path).
        command += ["--idle-path", scenario.service.ready_path or scenario.path]
        command += [a for name in self.routes for a in ("--route", f"{name}={routes[name]}")]
        command += ["--steps", ",".join(map(str, self.steps(target.notes["idle_capacity"])))]
        command += ["--kinds", ",".join(self.kinds), "--seconds", str(self.hold), "--out", str(out)]
        liveness = getattr(gunicorn, "liveness_url", None)
        if liveness and not scenario.own_service:
            command += ["--livez", liveness]
        child = ChildProcess([*target.topology.client_prefix, *command], gunicorn.logfile.parent / "idle-clients.log")
        target.state.update(child=child, out=out)
        child.start()

    def end(self, target: Target) -> None:
        child: ChildProcess = target.state["child"]
        try:
            status = child.wait(STEP_SECONDS * 2)  # the last step may still be timing its checks
            if status != 0:
                raise FaultError(f"the idle clients exited with status {status}: {child.log_tail(5)}")
            steps = json.loads(target.state["out"].read_text())
            target.notes["idle_steps"] = [IdleStep.from_dict(s) for s in steps]
        finally:
            self.release(target)

    def release(self, target: Target) -> None:
        """Stop what :meth:`prepare` and :meth:`begin` started, whichever of it did."""
        for part in ("child", "nginx"):
            started: Any = target.state.pop(part, None)
            if started is not None:
                started.stop()
