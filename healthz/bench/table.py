"""The benchmark's results as a table for the terminal (and as Markdown for the README)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .cases import CaseFigures, measured_case, measured_cases
from .rate import LATE_MS
from .targets import TARGET_CASE, littles_mean_ms, over_django

COLUMNS = (
    "case",
    "req/s",
    "±",
    "p50 ms",
    "p99 ms",
    "failed",
    "/livez",
    "/NullPool",
    "/pgbench",
    "stmts/req",
    "sessions",
    "CPU µs/req gunicorn",
    "CPU µs/req postgres",
    "RSS MiB/worker",
)


def _number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ratio(value: float | None, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.2f}{suffix}" if value < 10 else f"{value:.1f}{suffix}"


def _spread(block: dict[str, Any]) -> str:
    return f"{100 * block['spread']:.0f}%"


def _latency(block: dict[str, Any]) -> str:
    value = block["median"]
    return f"{value:.2f}" if value < 10 else f"{value:,.0f}"


def rows(results: dict[str, Any]) -> list[list[str]]:
    """One row per measured series: each worker class's livez, each case's healthz, pgbench."""
    out: list[list[str]] = []
    for case in measured_cases(results):
        if case.livez:
            out.append(_padded(_throughput(f"{case.worker_class} livez (ceiling)", case.livez) + ["1.00"]))
        out.append(_case_row(case, results.get("ratios", {}).get(case.name, {})))
    for peer in (results.get("django") or {}).get("peers", []):
        out.append(
            _padded(
                [
                    *_throughput(f"{peer['name']} (the report's Django)", peer["healthz"]),
                    "",
                    "",
                    "",
                    "",
                    f"{peer['sessions_opened']:,}",
                ]
            )
        )
    bench = results.get("pgbench")
    if bench:
        for key, label in (
            ("persistent", "pgbench, persistent connections"),
            ("connect", "pgbench -C, a connection per query"),
        ):
            tps = bench[key]["tps"]
            name = f"{label} ({bench['clients']} clients)"
            out.append(_padded([name, _number(tps["median"]), _spread(tps), "", "", f"{bench[key]['failed']:,}"]))
    return out


def _padded(cells: list[str]) -> list[str]:
    """``cells`` with empty cells after them, up to a full row of :data:`COLUMNS`."""
    return cells + [""] * (len(COLUMNS) - len(cells))


def _throughput(name: str, series: dict[str, Any]) -> list[str]:
    """Name, median req/s, spread, p50, p99 and failures of one wrk series."""
    return [
        name,
        _number(series["rps"]["median"]),
        _spread(series["rps"]),
        _latency(series["p50_ms"]),
        _latency(series["p99_ms"]),
        f"{series['failed']:,}",
    ]


def _case_row(case: CaseFigures, ratio: dict[str, Any]) -> list[str]:
    """A healthz case: its throughput, its ratios, statements per request, sessions, CPU and memory."""
    rss = case.rss_mib_per_worker
    return [
        *_throughput(case.name, case.healthz),
        _ratio(ratio.get("livez")),
        _ratio(ratio.get("nullpool"), "x"),
        _ratio(ratio.get("pgbench")),
        _ratio(case.statements["per_request"]),
        f"{case.sessions_opened:,}",
        *(_number(case.cpu_us_per_request.get(side)) for side in ("service", "postgres")),
        _number(max(rss), 0) if rss else "-",
    ]


def _aligned(header: Sequence[str], body: list[list[str]]) -> list[str]:
    widths = [max(len(str(row[i])) for row in [list(header), *body]) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(
            str(cell).ljust(w) if i == 0 else str(cell).rjust(w) for i, (cell, w) in enumerate(zip(row, widths))
        )

    return [line(header), "  ".join("-" * w for w in widths), *(line(row) for row in body)]


def heading(results: dict[str, Any]) -> list[str]:
    cfg, box, pg = results["config"], results["machine"], results.get("postgresql", {})
    return [
        f"healthz benchmark: {results.get('wrk', 'wrk').split(' Copyright')[0]}, {cfg['connections']} keep-alive connections"
        + (
            f" (each closed after its {cfg['reconnect_every']}th request, so they spread across workers), "
            if cfg.get("reconnect_every")
            else ", "
        )
        + f"median of {cfg['repeats']} runs of {cfg['duration']:g} s each after a {cfg['warmup']:g} s warm-up; "
        "± is the runs' spread, (max - min) / median",
        f"machine: {box['cpu']}, {box['cores']} cores, {box['memory_gib']} GiB, Linux {box['kernel']}, Python {box['python']}; "
        f"PostgreSQL {pg.get('version', '?')}, statements counted from {pg.get('statements_from', '?')}",
    ]


def target_lines(results: dict[str, Any]) -> list[str]:
    marks = {True: "met    ", False: "NOT MET", None: "n/a    "}
    return [f"  {marks[t['met']]}  {t['target']}: {t['value']}" for t in results.get("targets", [])]


def render(results: dict[str, Any]) -> str:
    """The whole terminal report: heading, table, the crowd run and the targets."""
    lines = [*heading(results), "", *_aligned(COLUMNS, rows(results))]
    for key in ("crowd", "crowd_unfair"):
        crowd = results.get(key)
        if not crowd:
            continue
        run = crowd["run"]
        errors = ", ".join(f"{k} {v:,}" for k, v in run["errors"].items() if v) or "no errors"
        lines += [
            "",
            f"{crowd['name']} at {crowd['connections']:,} connections for {results['config']['crowd_duration']:g} s: "
            f"{run['rps']:,.0f} req/s, p50 {run['p50_ms']:.1f} ms, p90 {run.get('p90_ms', 0):,.0f} ms, "
            f"p99 {run['p99_ms']:,.0f} ms (Little's mean {littles_mean_ms(crowd) or 0:,.0f} ms), "
            f"{run['failed']:,} failed of {run['requests']:,} ({errors}), {crowd['sessions_opened']:,} sessions opened",
        ]
    lines += _cpu_lines(results)
    lines += _django_lines(results)
    lines += _fixed_rate_lines(results.get("fixed_rate"))
    lines += ["", "targets:", *target_lines(results), "", f"{results.get('seconds', 0):.0f} s in all"]
    return "\n".join(lines)


def _cpu_lines(results: dict[str, Any]) -> list[str]:
    """What bounds healthz/livez on shared cores: CPU per response of each, both sides."""
    case = measured_case(results, TARGET_CASE)
    if not case or not case.livez_cpu_us_per_request:
        return []
    ours, live = case.cpu_us_per_request, case.livez_cpu_us_per_request
    healthz = ours["service"] + ours["postgres"]
    livez = live["service"] + live["postgres"]
    return [
        "",
        f"{TARGET_CASE} CPU per response: livez {_number(live['service'])} µs in gunicorn; healthz "
        f"{_number(ours['service'])} µs in gunicorn + {_number(ours['postgres'])} µs in PostgreSQL. With every "
        f"process on the same {results.get('machine', {}).get('cores', '?')} cores, healthz/livez can reach about "
        f"{livez / healthz:.2f} (the load generator's share aside); `python -m healthz.bench.profile` shows where "
        "the worker's part goes.",
    ]


def _django_lines(results: dict[str, Any]) -> list[str]:
    """healthz's sized pool over each Django peer, or why the peers did not run."""
    django = results.get("django")
    if not django:
        return []
    if django.get("skipped"):
        return ["", f"the report's Django: not run ({django['skipped']})"]
    ratios = ", ".join(f"{name} {ratio:.2f}x" for name, ratio in over_django(results).items() if ratio is not None)
    return ["", f"{TARGET_CASE} req/s over the report's Django ({django['project']}, same load): {ratios}"]


RATE_COLUMNS = (
    "share",
    "rate req/s",
    "answered/s",
    "p50 ms",
    "p99 ms",
    "p99.9 ms",
    "max ms",
    "late",
    "dropped",
    "failed",
    "p99 ms from send",
    "driver CPU µs/req",
)


def _fixed_rate_lines(fixed: dict[str, Any] | None) -> list[str]:
    """The fixed-rate table: saturated first, then shares of the capacity it found; latency from the due time."""
    if not fixed:
        return []
    closed = fixed["closed"]
    body = [
        [
            f"{r['share']:.0%} of {'wrk' if r.get('basis') == 'wrk' else 'capacity'}",
            _number(r["rate"]),
            _number(r["throughput"]),
            _number(r["p50_ms"], 1),
            _number(r["p99_ms"]),
            _number(r["p999_ms"]),
            _number(r["max_ms"]),
            f"{r['late']:,}",
            f"{r['dropped']:,}",
            f"{r['failed']:,}",
            _number(r["sent_p99_ms"]),
            _number(r.get("cpu_us_per_request")),
        ]
        for r in fixed["runs"]
    ]
    return [
        "",
        f"fixed rate: {fixed['name']}, first saturated at a share of wrk's closed-model maximum "
        f"({closed['rps']:,.0f} req/s, {closed['connections']} connections), which gives its capacity beside the "
        f"driver ({fixed.get('capacity') or 0:,.0f} req/s), then shares of that capacity; latency from each "
        f"request's due time (no coordinated omission), late = sent over {LATE_MS:g} ms after it was due, "
        "dropped = not answered in time; driver CPU = the driver's own, taken from the cores the service shares",
        *_aligned(RATE_COLUMNS, body),
    ]


def markdown(results: dict[str, Any]) -> str:
    """The table as Markdown, for the README."""
    body = rows(results)
    return "\n".join(
        [
            "| " + " | ".join(COLUMNS) + " |",
            "|" + "|".join("---" if i == 0 else "---:" for i in range(len(COLUMNS))) + "|",
            *("| " + " | ".join(row) + " |" for row in body),
        ]
    )
