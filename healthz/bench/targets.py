"""The ratios the benchmark reports and the targets it judges, from its results alone.

Ratios compare medians measured in the same command: a case's healthz requests/s over its worker
class's livez (the stack's ceiling), over the same worker class with NullPool, and over pgbench's
transactions/s on persistent connections (the database's limit).
"""

from __future__ import annotations

from typing import Any

from .cases import SIZED, TARGET_WORKER, UNPOOLED, CaseFigures, measured_case, measured_cases

TARGET_CASE = f"{TARGET_WORKER}-{SIZED}"
CEILING_SHARE = 0.6
OVER_NULLPOOL = 10.0
#: Under the crowd, the p99 may be at most this many times Little's law's mean wait.
FAIR_P99 = 2.0
#: ... with the gate's throughput at least this share of the same run without it.
FAIR_THROUGHPUT = 0.9
#: healthz's sized pool against the report's Django under gthread with CONN_MAX_AGE=600, same load.
OVER_DJANGO = 1.5
DJANGO_BASELINE = "django-gthread-persistent"
#: The fixed-rate driver first saturates the service at this share of wrk's closed-model maximum;
#: its throughput then is the capacity beside the driver, and the rates are these shares of it.
SATURATED_SHARE = 1.5
RATE_SHARES = (0.5, 0.9)
#: At 90% of the maximum, the p99 from the due time within a probe's timeout (Kubernetes' 1 s), none dropped.
RATE_P99_MS = 1000.0
#: Saturated, the driver's throughput within this share of wrk's maximum: the two agree on the capacity.
DRIVER_AGREEMENT = 0.15


def littles_mean_ms(crowd: dict[str, Any]) -> float | None:
    """The mean time in the system a closed-model crowd implies: connections / throughput."""
    rps = crowd["run"]["rps"]
    return crowd["connections"] / rps * 1000 if rps else None


def fairness(crowd: dict[str, Any]) -> float | None:
    """p99 over Little's law's mean: 1 when everyone waits alike, far above when some starve."""
    mean = littles_mean_ms(crowd)
    return crowd["run"]["p99_ms"] / mean if mean else None


def _median(block: dict[str, Any] | None, key: str = "rps") -> float | None:
    return block[key]["median"] if block else None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


def ratios(results: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Case name -> ``{"livez": ..., "nullpool": ..., "pgbench": ...}`` (None where the run lacks
    the other side)."""
    cases = measured_cases(results)
    livez = {c.worker_class: _median(c.livez) for c in cases if c.livez}
    unpooled = {c.worker_class: _median(c.healthz) for c in cases if c.pool == UNPOOLED and not c.variant}
    pgbench = _median(results.get("pgbench", {}).get("persistent"), "tps")
    out = {}
    for case in cases:
        rps = _median(case.healthz)
        out[case.name] = {
            "livez": _ratio(rps, livez.get(case.worker_class)),
            "nullpool": _ratio(rps, unpooled.get(case.worker_class)),
            "pgbench": _ratio(rps, pgbench),
        }
    return out


def _target(text: str, met: bool | None, value: str) -> dict[str, Any]:
    return {"target": text, "met": met, "value": value}


def judge(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target as ``{"target", "met", "value"}``; ``met`` is None when the run did not
    measure it (a case or the crowd run left out)."""
    case = measured_case(results, TARGET_CASE)
    ratio = results.get("ratios", {}).get(TARGET_CASE) or ratios(results).get(TARGET_CASE, {})
    share, over = ratio.get("livez"), ratio.get("nullpool")
    out = [
        _target(
            f"{TARGET_CASE} healthz/livez >= {CEILING_SHARE:g}",
            None if share is None else share >= CEILING_SHARE,
            "not measured" if share is None else f"{share:.2f}",
        ),
        _target(
            f"{TARGET_CASE} healthz/NullPool >= {OVER_NULLPOOL:g}x",
            None if over is None else over >= OVER_NULLPOOL,
            "not measured" if over is None else f"{over:.1f}x",
        ),
    ]
    sent = case.statements if case else None
    if sent and sent["requests"]:
        exact = sent["ok"] == sent["requests"] and sent["sent"] == sent["requests"]
        out.append(
            _target(
                f"{TARGET_CASE} exactly 1 statement per request",
                exact,
                f"{sent['sent']:,} statements for {sent['requests']:,} requests ({sent['ok']:,} answered 200)",
            )
        )
    else:
        out.append(_target(f"{TARGET_CASE} exactly 1 statement per request", None, "not measured"))
    crowd = results.get("crowd")
    label = (
        f"{TARGET_CASE} 0 failed at {crowd['connections']:,} connections"
        if crowd
        else f"{TARGET_CASE} 0 failed at 2,000 connections"
    )
    if crowd:
        run = crowd["run"]
        out.append(
            _target(
                label,
                run["failed"] == 0 and run["requests"] > 0,
                f"{run['failed']:,} failed of {run['requests']:,} ({run['rps']:,.0f} req/s, p99 {run['p99_ms']:,.0f} ms)",
            )
        )
    else:
        out.append(_target(label, None, "not measured"))
    out += _fair_targets(crowd, results.get("crowd_unfair"))
    out += _rate_targets(results.get("fixed_rate"))
    out.append(_django_target(case, results.get("django")))
    out.append(_check_target(results.get("check")))
    return out


def _check_target(check: dict[str, Any] | None) -> dict[str, Any]:
    """``healthz check`` held on the sized pool within its wall-time budget, PostgreSQL's start included."""
    text = "healthz check, 2,000 requests at 100 clients, PostgreSQL start included, within 30 s"
    if not check:
        return _target(text, None, "not measured")
    cold, reused = check["cold"], check["reused_server"]
    met = cold["passed"] and cold["wall_seconds"] is not None and cold["wall_seconds"] <= check["budget_s"]
    return _target(text, met, f"{cold['wall_seconds']} s cold, {reused['wall_seconds']} s on a reused server")


def over_django(results: dict[str, Any]) -> dict[str, float | None]:
    """Django peer name -> healthz's sized pool req/s over the peer's (medians, same command)."""
    case = measured_case(results, TARGET_CASE)
    peers = (results.get("django") or {}).get("peers", [])
    return {p["name"]: _ratio(_median(case.healthz) if case else None, _median(p["healthz"])) for p in peers}


def _django_target(case: CaseFigures | None, django: dict[str, Any] | None) -> dict[str, Any]:
    """healthz's sized pool >= :data:`OVER_DJANGO` x the report's Django under gthread, its p99 no worse."""
    text = f"{TARGET_CASE} >= {OVER_DJANGO:g} x {DJANGO_BASELINE}'s req/s, p99 no worse"
    peer = next((p for p in (django or {}).get("peers", []) if p["name"] == DJANGO_BASELINE), None)
    if not case or not peer:
        why = (django or {}).get("skipped", "not measured")
        return _target(text, None, why)
    ours, theirs = case.healthz, peer["healthz"]
    ratio = _ratio(_median(ours), _median(theirs))
    p99, their_p99 = _median(ours, "p99_ms"), _median(theirs, "p99_ms")
    met = ratio is not None and ratio >= OVER_DJANGO and p99 <= their_p99
    return _target(
        text,
        met,
        f"{ratio:.2f} x ({_median(ours):,.0f} / {_median(theirs):,.0f} req/s), p99 {p99:,.0f} ms against {their_p99:,.0f} ms",
    )


def _rate_targets(fixed: dict[str, Any] | None) -> list[dict[str, Any]]:
    """At 90% of the closed-model maximum: p99 from the due time within :data:`RATE_P99_MS`, none
    dropped; saturated: the driver's throughput within :data:`DRIVER_AGREEMENT` of wrk's."""
    text = f"{TARGET_CASE} at 90% of its capacity: p99 from the due time <= {RATE_P99_MS:,.0f} ms, none dropped"
    check = f"fixed-rate driver saturated: throughput within {DRIVER_AGREEMENT:.0%} of wrk's maximum"
    runs = fixed["runs"] if fixed else []
    at90 = next((r for r in runs if r.get("basis", "capacity") == "capacity" and r["share"] == 0.9), None)
    saturated = next((r for r in runs if r["share"] > 1), None)
    out = []
    if at90 and at90["p99_ms"] is not None:
        met = at90["p99_ms"] <= RATE_P99_MS and at90["dropped"] == 0
        out.append(
            _target(
                text,
                met,
                f"p99 {at90['p99_ms']:,.0f} ms, p99.9 {at90['p999_ms']:,.0f} ms, {at90['dropped']:,} dropped, "
                f"{at90['late']:,} late of {at90['due']:,} at {at90['rate']:,.0f} req/s",
            )
        )
    else:
        out.append(_target(text, None, "not measured"))
    closed = fixed["closed"]["rps"] if fixed else None
    if saturated and closed:
        agreement = saturated["throughput"] / closed
        out.append(
            _target(
                check,
                abs(agreement - 1) <= DRIVER_AGREEMENT,
                f"{saturated['throughput']:,.0f} / {closed:,.0f} req/s = {agreement:.2f}",
            )
        )
    else:
        out.append(_target(check, None, "not measured"))
    return out


def _fair_targets(crowd: dict[str, Any] | None, unfair: dict[str, Any] | None) -> list[dict[str, Any]]:
    """p99 within :data:`FAIR_P99` x Little's mean under the crowd, and the gate costing at most
    1 - :data:`FAIR_THROUGHPUT` of the throughput without it (same command)."""
    text = f"{TARGET_CASE} p99 <= {FAIR_P99:g} x Little's mean (connections / req/s) under the crowd"
    cost = f"{TARGET_CASE} throughput with the first-come gate >= {FAIR_THROUGHPUT:g} x without"
    if not crowd:
        return [_target(text, None, "not measured"), _target(cost, None, "not measured")]
    ratio, mean = fairness(crowd), littles_mean_ms(crowd)
    value = f"p99 {crowd['run']['p99_ms']:,.0f} ms = {ratio:.1f} x {mean:,.0f} ms" if ratio else "no requests"
    if unfair and fairness(unfair):
        value += f" (without the gate: p99 {unfair['run']['p99_ms']:,.0f} ms = {fairness(unfair):.1f} x)"
    out = [_target(text, None if ratio is None else ratio <= FAIR_P99, value)]
    share = _ratio(crowd["run"]["rps"], unfair["run"]["rps"]) if unfair else None
    out.append(
        _target(
            cost,
            None if share is None else share >= FAIR_THROUGHPUT,
            "not measured"
            if share is None
            else f"{share:.2f} ({crowd['run']['rps']:,.0f} / {unfair['run']['rps']:,.0f} req/s)",
        )
    )
    return out
