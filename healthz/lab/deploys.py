"""Deploys as faults: what shipping a change does to a gunicorn service under load, measured with
clients that do not retry (as wrk and ab; a browser or a load balancer that retries idempotent
requests hides part of it).

=============  ===================================================================================
``reload``     SIGHUP to the master: new workers start, the old ones finish their requests and exit
``restart``    SIGTERM to the master, then a new master on the same address once it has exited, as a
               process manager restarts a service
``recycle``    one worker's graceful exit, the path ``max_requests`` takes (SIGTERM to the worker: it
               stops accepting, finishes its requests, exits; the master starts another)
=============  ===================================================================================

``worker-kill`` (:mod:`healthz.lab.faults`, where every fault is listed) is the fourth: a worker killed outright. Each needs
gunicorn's master: a team's command that is not gunicorn's is skipped, saying so.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from healthz.lab.fault_base import CLIENT, Fault, FaultError, Target, replaced
from healthz.lab.scenarios import Scenario

#: Seconds a deploy may take before the fault says it did not finish.
TIMEOUT = 30.0
#: Seconds of load after the runner's tail: new workers reach the old ones' rate within a few here.
AFTER = 4.0


class Deploy(Fault):
    """A deploy under load: instant (its moment is the signal), clients that do not retry, and the
    workers it replaces expected to boot (:meth:`expected_restarts`)."""

    expected = (CLIENT,)
    instant = True
    hold = 0.0
    retry = False
    after = AFTER

    def skip_reason(self, scenario: Scenario, topology: Any) -> str | None:
        if not scenario.service.runs_gunicorn:
            return "its command is not gunicorn's: the lab signals gunicorn's master"
        return None

    @staticmethod
    def _workers(target: Target) -> list[int]:
        workers = target.gunicorn.worker_pids()
        if not workers:
            raise FaultError("gunicorn has no worker: nothing to deploy over")
        return workers

    def expected_restarts(self, workers: int) -> int:
        return workers  # each replaced worker boots anew

    @staticmethod
    def _wait_replaced(target: Target, old: set[int], wanted: int) -> None:
        """Until none of ``old`` runs and ``wanted`` workers do: the seconds it took in the notes."""
        seconds = replaced(target, old, wanted, target.state["began"], TIMEOUT)
        if seconds is None:
            raise FaultError(f"{len(old)} old worker(s) were not replaced within {TIMEOUT:g} s")
        target.notes["replaced_seconds"] = seconds


class Reload(Deploy):
    name = "reload"
    description = (
        "SIGHUP to gunicorn's master under load, as a deploy reloads it: every worker is replaced by a new one, the "
        "old ones finish their requests and exit. Clients do not retry: a request a closing worker cuts is lost."
    )

    def begin(self, target: Target) -> None:
        old = self._workers(target)
        target.gunicorn.child.send(signal.SIGHUP)
        target.state.update(began=time.monotonic(), old=set(old))
        target.notes["replaced_workers"] = len(old)

    def end(self, target: Target) -> None:
        self._wait_replaced(target, target.state["old"], len(target.state["old"]))


class Restart(Deploy):
    name = "restart"
    description = (
        "SIGTERM to gunicorn's master under load, then a new master on the same address once it has exited, as a "
        "process manager restarts a service: requests in flight finish, new ones are refused until it listens again."
    )

    def begin(self, target: Target) -> None:
        target.notes["replaced_workers"] = len(self._workers(target))
        target.gunicorn.child.send(signal.SIGTERM)
        target.state["began"] = time.monotonic()

    def end(self, target: Target) -> None:
        began = target.state["began"]
        if target.gunicorn.child.wait(TIMEOUT) is None:
            raise FaultError(f"gunicorn's master did not exit within {TIMEOUT:g} s of SIGTERM")
        target.notes["down_seconds"] = round(time.monotonic() - began, 2)
        target.gunicorn.start()  # the same address, the same log: its workers boot anew
        target.notes["replaced_seconds"] = round(time.monotonic() - began, 2)


class Recycle(Deploy):
    name = "recycle"
    description = (
        "One worker exits gracefully under load, the path max_requests takes (SIGTERM to the worker: it stops "
        "accepting, finishes its requests, exits) and gunicorn starts another. Clients do not retry."
    )
    worker_restarts = 1
    expected_restarts = Fault.expected_restarts  # the one it recycled

    def begin(self, target: Target) -> None:
        workers = self._workers(target)
        os.kill(workers[0], signal.SIGTERM)
        target.state.update(began=time.monotonic(), old={workers[0]}, wanted=len(workers))
        target.notes["replaced_workers"] = 1

    def end(self, target: Target) -> None:
        self._wait_replaced(target, target.state["old"], target.state["wanted"])


#: The deploys, in the order a run goes through them.
DEPLOYS = (Reload(), Restart(), Recycle())

__all__ = ["DEPLOYS", "Deploy", "Reload", "Restart", "Recycle"]
