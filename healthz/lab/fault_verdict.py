"""A fault run measured and judged, from the locustfile's timeline and the run's figures: pure.

:func:`measure` reads the timeline (outcomes per tenth of a second) into errors before, during and
after the fault and the seconds until every answer is 200 again; :func:`judge` sets a run against
what its fault should cause (:class:`FaultFinding`, one :class:`Trouble` each); :func:`judged` is
what ``faults.json`` stores of it.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable
from typing import Any

from healthz.lab.fault_figures import FaultFigures
from healthz.lab.faults import CLIENT, QUIET_TAIL, Fault


def measure(timeline: list[dict], fault_began: float, fault_ended: float, load_ended: float) -> dict[str, Any]:
    """The figures of one fault run from the locustfile's timeline (Unix times).

    ``errors_before`` are failures before the fault began (none is expected); ``errors`` are the
    failures from its beginning to the end of the load, by cause; ``lost_after_end`` those after the
    fault ended; ``recovery_seconds`` is from the fault's end to the end of the last tenth of a
    second with a failure (0 when none came after it), None when no request succeeded after the
    fault's end or after the last failure, or failures went on into the last :data:`QUIET_TAIL`
    seconds of the load.
    """
    before: dict[str, int] = {}
    during: dict[str, int] = {}
    after_end = ok_during = 0
    last_failure: float | None = None
    last_ok = first_ok_after = None
    slowest_failure = slowest_ok = 0.0
    for row in timeline:
        t, failed = row["t"], row.get("failed") or {}
        target = before if t + 0.1 <= fault_began else during
        for cause, count in failed.items():
            target[cause] = target.get(cause, 0) + count
        if t + 0.1 > fault_began:
            slowest_failure = max(slowest_failure, row.get("failed_max_ms") or 0.0)
            slowest_ok = max(slowest_ok, row.get("ok_max_ms") or 0.0)
            if failed:
                last_failure = t
            if t >= fault_ended:
                after_end += sum(failed.values())
            elif row.get("ok"):
                ok_during += row["ok"]
        if row.get("ok"):
            last_ok = t
            if t >= fault_ended and first_ok_after is None:
                first_ok_after = t
    if first_ok_after is None:
        recovery: float | None = None  # nothing succeeded after the fault: a stuck service fails nothing
    elif last_failure is None or last_failure + 0.1 <= fault_ended:
        recovery = 0.0
    elif last_failure + 0.1 > load_ended - QUIET_TAIL or last_ok is None or last_ok < last_failure:
        recovery = None
    else:
        recovery = round(last_failure + 0.1 - fault_ended, 1)
    return {
        "errors_before": before,
        "errors": dict(sorted(during.items(), key=lambda kv: -kv[1])),
        "failed": sum(during.values()),
        "lost_after_end": after_end,
        "ok_during_fault": ok_during,
        "recovery_seconds": recovery,
        "first_ok_after_seconds": None if first_ok_after is None else round(max(0.0, first_ok_after - fault_ended), 1),
        "slowest_failure_ms": round(slowest_failure, 1),
        "slowest_ok_ms": round(slowest_ok, 1),
        "rate_back_seconds": rate_back(timeline, fault_began, fault_ended),
    }


#: A rate "back" is this share of the rate of 200s before the fault, over :data:`RATE_WINDOW` seconds
#: (a shared 2-core machine moves the rate by a fifth from one half second to the next).
RATE_SHARE, RATE_WINDOW = 0.75, 1.0


def rate_back(timeline: list[dict], fault_began: float, fault_ended: float, ramp: float = 0.5) -> float | None:
    """Seconds from the fault's end until 200s come at :data:`RATE_SHARE` of their rate before it
    (from ``ramp`` seconds into the load to the fault, per tenth), over a :data:`RATE_WINDOW`-second
    window; None when they never do or there was no rate before it (a fault present at start-up)."""
    ok = {round(row["t"] * 10): row.get("ok") or 0 for row in timeline}
    if not ok:
        return None
    first, began, ended, last = min(ok) + round(ramp * 10), round(fault_began * 10), round(fault_ended * 10), max(ok)
    if began - first < 5:
        return None
    before = sum(ok.get(t, 0) for t in range(first, began)) / (began - first)
    window = round(RATE_WINDOW * 10)
    for start in range(ended, last - window + 2):
        if sum(ok.get(t, 0) for t in range(start, start + window)) >= RATE_SHARE * before * window:
            return round(max(0, start - ended) / 10, 1)
    return None


def _expected(cause: str, expected: Iterable[str], own_service: bool = False) -> bool:
    """Whether a failure ``cause`` is one the fault may cause: its kinds, a client's error when
    ``client`` is among them (a timeout never), and any error status of a team's own service."""
    if own_service and cause.isdigit():
        return True  # it names no kind: its status is its answer to the fault
    return any(
        cause == e or (e == CLIENT and cause.startswith(CLIENT + " ") and cause != "client timeout") for e in expected
    )


#: A liveness probe's timeout: Kubernetes' default timeoutSeconds, as deploy/kubernetes sets it.
LIVENESS_TIMEOUT = 1.0


class Trouble(str, enum.Enum):
    """What can go wrong in a fault run besides the fault's own, expected errors."""

    ERRORS_BEFORE = "errors before the fault"
    UNEXPECTED_ERRORS = "unexpected errors"
    NOT_RECOVERED = "not recovered"
    SLOW_FAILURE = "slow failure"  # a failure slower than the fault's bound
    HANG = "hang"  # a request as slow as the client's timeout
    LIVEZ_BLOCKED = "livez blocked"  # /api/v1/livez/ did not answer within a liveness probe's timeout
    WORKER_RESTARTS = "worker restarts"  # not the number the fault causes
    BACKENDS_LEFT = "backends left"
    KILLED_WORKER_BACKENDS = "killed worker's backends left"
    PASSWORD_IN_LOG = "password in the log"

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class FaultFinding:
    """One thing that went wrong in a fault run: its :class:`Trouble` and the figures that show it."""

    trouble: Trouble
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)

    def sentence(self) -> str:
        f, t = self.figures, self.trouble
        if t in (Trouble.ERRORS_BEFORE, Trouble.UNEXPECTED_ERRORS):
            return f"{t}: " + ", ".join(f"{k} {v}" for k, v in f["errors"].items())
        if t is Trouble.NOT_RECOVERED:
            return "not recovered by the end of the load"
        if t is Trouble.SLOW_FAILURE:
            return f"a failed request took {f['ms'] / 1000:.1f} s (bound {f['bound_s']:g} s)"
        if t is Trouble.HANG:
            return f"a request took {f['ms'] / 1000:.1f} s, the client's timeout: a hang"
        if t is Trouble.LIVEZ_BLOCKED:
            return (
                f"/api/v1/livez/ ({f.get('listener', 'request port')}) did not answer within a liveness probe's "
                f"{LIVENESS_TIMEOUT:g} s while the fault lasted ({f['status'] or 'no answer'} after {f['seconds']:g} s): "
                "every worker was busy waiting on the database"
            )
        if t is Trouble.WORKER_RESTARTS:
            return f"{f['restarts']} worker restart(s), expected {f['expected']}"
        if t is Trouble.BACKENDS_LEFT:
            return f"{f['backends']} backend(s) left after gunicorn stopped"
        if t is Trouble.PASSWORD_IN_LOG:
            return "the database's password appeared in the service's log"
        return f"{f['backends']} backend(s) of the killed worker still open"

    def to_dict(self) -> dict[str, Any]:
        return {"trouble": self.trouble.value, "figures": self.figures}


def judge(fault: Fault, result: FaultFigures, request_timeout: float) -> list[FaultFinding]:
    """What went wrong in a fault run, from its figures; empty when the service behaved: only the
    fault's expected errors, recovered, failures within the fault's bound, no request near the
    client's timeout, ``/api/v1/livez/`` sent halfway through the fault answered within
    :data:`LIVENESS_TIMEOUT` (on the liveness listener when the service has one), the expected worker restarts, no backend left behind."""
    found = []
    if result.errors_before:
        found.append(FaultFinding(Trouble.ERRORS_BEFORE, {"errors": dict(result.errors_before)}))
    unexpected = {k: v for k, v in result.errors.items() if not _expected(k, fault.expected, result.own_service)}
    if unexpected:
        found.append(FaultFinding(Trouble.UNEXPECTED_ERRORS, {"errors": unexpected}))
    if result.recovery_seconds is None:
        found.append(FaultFinding(Trouble.NOT_RECOVERED))
    bound = result.failure_bound_s
    if bound is not None and result.slowest_failure_ms > bound * 1000:
        found.append(FaultFinding(Trouble.SLOW_FAILURE, {"ms": result.slowest_failure_ms, "bound_s": bound}))
    slowest = max(result.slowest_failure_ms, result.slowest_ok_ms)
    if slowest >= request_timeout * 1000 * 0.95:
        found.append(FaultFinding(Trouble.HANG, {"ms": slowest}))
    livez = result.livez_during_fault
    # Sent halfway through the fault: an answer within a probe's timeout is one the fault did not hold back
    # (a short fault may end before it arrives; a blocked livez waits out the fault's rest, over 1 s).
    if livez and (livez.status != 200 or livez.seconds > LIVENESS_TIMEOUT):
        figures = {"status": livez.status, "seconds": livez.seconds, "listener": livez.listener}
        found.append(FaultFinding(Trouble.LIVEZ_BLOCKED, figures))
    expected_restarts = fault.expected_restarts(result.workers)
    if result.worker_restarts != expected_restarts:
        found.append(
            FaultFinding(Trouble.WORKER_RESTARTS, {"restarts": result.worker_restarts, "expected": expected_restarts})
        )
    if result.backends_left:
        found.append(FaultFinding(Trouble.BACKENDS_LEFT, {"backends": result.backends_left}))
    if result.killed_worker_backends_left:
        found.append(FaultFinding(Trouble.KILLED_WORKER_BACKENDS, {"backends": result.killed_worker_backends_left}))
    if result.password_in_log:
        found.append(FaultFinding(Trouble.PASSWORD_IN_LOG))
    return found


def judged(fault: Fault, result: FaultFigures, request_timeout: float) -> dict[str, Any]:
    """``result``'s findings as ``faults.json`` holds them: ``problems`` (sentences, for people)
    and ``findings`` (trouble and figures, for programs)."""
    found = judge(fault, result, request_timeout)
    return {"problems": [f.sentence() for f in found], "findings": [f.to_dict() for f in found]}


__all__ = ["measure", "judge", "judged", "LIVENESS_TIMEOUT", "Trouble", "FaultFinding"]
