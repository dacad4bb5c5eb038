"""The ratios the benchmark reports and the targets it judges, from its results alone.

Ratios compare medians measured in the same command: a case's healthz requests/s over its worker
class's livez (the stack's ceiling), over the same worker class with NullPool, and over pgbench's
transactions/s on persistent connections (the database's limit).
"""

from __future__ import annotations

from typing import Any

from .cases import SIZED, TARGET_WORKER, UNPOOLED

TARGET_CASE = f"{TARGET_WORKER}-{SIZED}"
CEILING_SHARE = 0.6
OVER_NULLPOOL = 10.0
#: Under the crowd, the p99 may be at most this many times Little's law's mean wait.
FAIR_P99 = 2.0
#: ... with the gate's throughput at least this share of the same run without it.
FAIR_THROUGHPUT = 0.9


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
    cases = results.get("cases", [])
    livez = {c["worker_class"]: _median(c.get("livez")) for c in cases if c.get("livez")}
    unpooled = {c["worker_class"]: _median(c["healthz"]) for c in cases if c["pool"] == UNPOOLED and not c["variant"]}
    pgbench = _median(results.get("pgbench", {}).get("persistent"), "tps")
    out = {}
    for case in cases:
        rps = _median(case["healthz"])
        out[case["name"]] = {
            "livez": _ratio(rps, livez.get(case["worker_class"])),
            "nullpool": _ratio(rps, unpooled.get(case["worker_class"])),
            "pgbench": _ratio(rps, pgbench),
        }
    return out


def _target(text: str, met: bool | None, value: str) -> dict[str, Any]:
    return {"target": text, "met": met, "value": value}


def judge(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target as ``{"target", "met", "value"}``; ``met`` is None when the run did not
    measure it (a case or the crowd run left out)."""
    case = next((c for c in results.get("cases", []) if c["name"] == TARGET_CASE), None)
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
    sent = case["statements"] if case else None
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
