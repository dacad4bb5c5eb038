"""The fault report: from ``faults.json`` to ``faults.md``, a self-contained ``faults.html`` and one
timeline plot per fault.

It reads only what :mod:`healthz.lab.fault_runner` saved (the figures of
:func:`healthz.lab.fault_verdict.measure`) and judges each run again with
:func:`healthz.lab.fault_verdict.judge`, so ``healthz lab report`` remakes it under the current rules and a
test can check it against the same functions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from healthz.lab import idle_clients
from healthz.lab.fault_figures import FaultFigures
from healthz.lab.fault_verdict import judged
from healthz.lab.faults import FAULTS
from healthz.lab.render import to_html, to_markdown

PLOT_BIN = 0.5  # seconds per point on the timeline plots


def _kinds(errors: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in errors.items()) or "none"


def _seconds(value: float | None) -> str:
    return "not recovered" if value is None else f"{value:g}"


def outcome(result: FaultFigures) -> str:
    """``as expected``, ``PROBLEM``, ``skipped`` or ``not measured``."""
    if result.skipped:
        return "skipped"
    if result.error:
        return "not measured"
    return "PROBLEM" if result.problems else "as expected"


def _livez(result: FaultFigures, key: str = "livez_during_fault") -> str:
    """The livez probe's answer during the fault: status, seconds, and where it was asked."""
    probe = getattr(result, key)
    if not probe:
        return "-"
    late = "" if probe.during_fault else ", after the fault"
    where = f" ({probe.listener})" if probe.listener else ""
    return f"{probe.status or 'no answer'} in {probe.seconds:g} s{late}{where}"


def rows(results: list[FaultFigures]) -> list[list[str]]:
    """One row per fault run: the summary table."""
    table = []
    for r in results:
        if r.skipped or r.error:
            table.append([r.fault, r.scenario, outcome(r), r.skipped or r.error or "", *["-"] * 7])
            continue
        table.append(
            [
                r.fault,
                r.scenario,
                outcome(r) + (": " + "; ".join(r.problems) if r.problems else ""),
                _kinds(r.errors),
                f"{r.lost_after_end:,}",
                _seconds(r.recovery_seconds),
                f"{r.slowest_failure_ms:,.0f}" if r.failed else "-",
                f"{r.slowest_ok_ms:,.0f}",
                _livez(r),
                str(r.backends_left),
                str(r.worker_restarts),
            ]
        )
    return table


HEADERS = [
    "fault",
    "scenario",
    "outcome",
    "errors during the fault, by kind",
    "lost after its end",
    "recovery (s)",
    "slowest failure (ms)",
    "slowest 200 (ms)",
    "livez during",
    "backends left",
    "worker restarts",
]


def pre_ping_rows(results: list[FaultFigures]) -> list[list[str]]:
    """For each database restart and pooled scenario: requests failed without and with ``pool_pre_ping``."""
    runs = [r for r in results if r.fault.startswith("db-restart") and r.failed is not None]
    by_key = {(r.fault, r.base_scenario, bool(r.pool_pre_ping)): r for r in runs}
    table = []
    for (fault, base, pre_ping), r in by_key.items():
        with_ping = by_key.get((fault, base, True))
        if pre_ping or with_ping is None:
            continue
        table.append(
            [
                fault,
                r.scenario,
                f"{r.failed:,} ({r.lost_after_end:,} after restart)",
                f"{with_ping.failed:,} ({with_ping.lost_after_end:,} after restart)",
                _seconds(r.recovery_seconds),
                _seconds(with_ping.recovery_seconds),
            ]
        )
    return table


DEPLOY_HEADERS = (
    "deploy",
    "scenario",
    "clients",
    "requests lost, by kind",
    "sessions opened from it",
    "workers replaced in (s)",
    "back to its rate after (s)",
)


IDLE_HEADERS = (
    "scenario",
    "route",
    "kind",
    "served at once",
    "health checks failed at each step (the slowest answered)",
    "checks fail from",
    "liveness checks failed",
)


def idle_rows(results: list[FaultFigures]) -> list[list[str]]:
    """One row per scenario, route and kind of idle client: the health checks failed at each step
    (holders: failed of checks), the fewest holders at which one failed, and the liveness checks that
    failed over all steps."""
    table = []
    for r in results:
        if r.skipped or r.error or not r.idle_steps:
            continue
        for route, kind in dict.fromkeys((s.route, s.kind) for s in r.idle_steps):
            steps = [s for s in r.idle_steps if (s.route, s.kind) == (route, kind)]
            first = idle_clients.limit(steps, route, kind)
            livez = sum(s.livez_checks for s in steps)
            table.append(
                [
                    r.scenario,
                    route,
                    kind,
                    "-" if r.idle_capacity is None else f"{r.idle_capacity:,}",
                    " · ".join(f"{s.clients:,}: {s.failed}/{s.checks}{_slowest(s.worst_ms)}" for s in steps),
                    "held at every step" if first is None else f"{first:,} clients",
                    "-" if not livez else f"{sum(s.livez_failed for s in steps)}/{livez}",
                ]
            )
    return table


def _slowest(ms: float | None) -> str:
    return "" if ms is None else f" ({ms:,.0f} ms)"


def deploy_rows(results: list[FaultFigures]) -> list[list[str]]:
    """One row per deploy that ran (the faults whose clients did not retry: gunicorn's own moves):
    what they lost, the sessions the new workers opened, and how long until the service answered
    at its rate before the deploy. A client that resent a cut request hid what was lost."""
    table = []
    for r in results:
        if r.skipped or r.error or r.clients_retry:
            continue
        table.append(
            [
                r.fault,
                r.scenario,
                r.connection,
                f"{r.failed:,}" + (f" ({_kinds(r.errors)})" if r.errors else ""),
                "-" if r.sessions_after_fault is None else f"{r.sessions_after_fault:,}",
                "-" if r.replaced_seconds is None else f"{r.replaced_seconds:g}",
                "not back" if r.rate_back_seconds is None else f"{r.rate_back_seconds:g}",
            ]
        )
    return table


def details(results: list[FaultFigures]) -> list[str]:
    """What a fault noted beyond the table: the budget exceeded, the killed worker's backends."""
    notes = []
    for r in results:
        if r.skipped or r.error:
            continue
        waited = r.slowest_ok_ms / 1000
        if waited > 1 and r.pool_capacity and r.fault not in ("pool-exhausted", "statement-timeout"):
            notes.append(
                f"`{r.fault}` on `{r.scenario}`: a request that ended 200 had waited {waited:.1f} s. While new connections "
                "fail, QueuePool does not wake the requests already waiting for a pooled connection: they wait until one is "
                "returned or `pool_timeout` passes (30 s by default). A shorter `pool_timeout` bounds that wait."
            )
        if r.fault == "pool-exhausted" and not r.errors:
            if r.worker_class == "gthread" and r.threads <= r.pool_capacity:
                notes.append(
                    f"`pool-exhausted` on `{r.scenario}`: no request waited for the pool, so `pool_timeout` never applied: a "
                    f"gthread worker serves no more requests at once than its {r.threads} threads, and its pool holds "
                    f"{r.pool_capacity}, so every thread waited on the lock and the requests behind them, `/api/v1/livez/` "
                    f"on the request port among them ({_livez(r, 'request_port_livez_during_fault')}), queued in gunicorn; "
                    f"the slowest took {waited:.1f} s. Only `statement_timeout` bounds that wait (see `statement-timeout`); "
                    f"the liveness listener (`HEALTHZ_LIVENESS_BIND`) answered apart from them ({_livez(r)})."
                )
            else:
                notes.append(
                    f"`pool-exhausted` on `{r.scenario}`: no request waited for the pool: {r.users} clients for "
                    f"{r.workers} workers x {r.pool_capacity} pooled connections never ran it out; raise --users."
                )
        if r.budget is not None:
            notes.append(f"`{r.fault}` on `{r.scenario}`: {r.budget}.")
        if r.killed_pid is not None:
            notes.append(
                f"`worker-kill` on `{r.scenario}`: worker {r.killed_pid} held {r.killed_worker_connections} database "
                f"connection(s); gunicorn replaced it in {r.replaced_seconds:g} s and PostgreSQL had ended its backends "
                f"{r.backends_released_seconds:g} s after the kill ({r.killed_worker_backends_left} left)."
            )
    return notes


def write_plots(results: list[FaultFigures], folder: Path) -> list[tuple[str, str]]:
    """One PNG per fault: for each scenario, successes and failures per second over the load,
    the fault's span shaded. Returns ``(file name, title)`` pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    for fault in dict.fromkeys(r.fault for r in results):
        runs = [r for r in results if r.fault == fault and r.timeline]
        if not runs:
            continue
        fig, axes = plt.subplots(len(runs), 1, figsize=(7, 1.9 * len(runs) + 0.6), dpi=100, sharex=True, squeeze=False)
        for ax, r in zip(axes[:, 0], runs):
            ok: dict[float, float] = {}
            failed: dict[float, float] = {}
            for row in r.timeline:
                key = round(row["t"] // PLOT_BIN * PLOT_BIN, 2)
                ok[key] = ok.get(key, 0) + row["ok"] / PLOT_BIN
                failed[key] = failed.get(key, 0) + sum(row["failed"].values()) / PLOT_BIN
            xs = sorted(set(ok) | set(failed))
            ax.plot(xs, [ok.get(x, 0) for x in xs], color="tab:green", label="200/s")
            ax.plot(xs, [failed.get(x, 0) for x in xs], color="tab:red", label="failed/s")
            ax.axvspan(
                r.fault_began_s,
                max(r.fault_ended_s, r.fault_began_s + 0.1),
                color="grey",
                alpha=0.25,
                label="fault",
            )
            ax.set_title(r.scenario, fontsize=8)
            ax.set_ylabel("per second", fontsize=7)
            ax.tick_params(labelsize=7)
            ax.grid(True, alpha=0.3)
        axes[0, 0].legend(fontsize=7, loc="upper right")
        axes[-1, 0].set_xlabel("seconds since the load began")
        fig.suptitle(fault, fontsize=10)
        fig.tight_layout()
        name = f"fault_{fault}.png"
        fig.savefig(folder / name)
        plt.close(fig)
        made.append((name, f"{fault}: 200s and failures per second, the fault shaded"))
    return made


def build(data: dict[str, Any], plots: list[tuple[str, str]]) -> list[tuple]:
    """The report as blocks (see :func:`healthz.lab.render.to_markdown`)."""
    meta, results = data["meta"], data["results"]
    blocks: list[tuple] = [
        ("h1", "healthz lab: faults"),
        ("p", _setup(meta)),
        ("p", _behaved(results)),
        ("p", EXPECTED),
        ("table", HEADERS, rows(results)),
        *_pre_ping_blocks(results),
    ]
    deploys = deploy_rows(results)
    if deploys:
        blocks += [
            ("h2", "Deploys: what clients that do not retry lose"),
            ("p", DEPLOYS),
            ("table", DEPLOY_HEADERS, deploys),
        ]
    idle = idle_rows(results)
    if idle:
        blocks += [
            ("h2", "Idle clients: at how many the health check fails"),
            ("p", IDLE),
            ("table", IDLE_HEADERS, idle),
        ]
    notes = details(results)
    if notes:
        blocks += [("h2", "Details"), ("ul", notes)]
    blocks += [
        ("h2", "The faults"),
        ("ul", [f"`{name}`: {f['description']}" for name, f in meta.get("faults", {}).items()]),
    ]
    if plots:
        blocks.append(("h2", "Timelines"))
        blocks += [("img", name, title) for name, title in plots]
    blocks += [
        ("h2", "Rerun one"),
        ("pre", "\n".join(dict.fromkeys(r.commands["rerun"] for r in results if r.commands))),
    ]
    return blocks


EXPECTED = (
    "Recovery is the time from the fault's end until every response is 200 again (to the tenth of a second; "
    "0 when no request failed after the fault ended). 'As expected' means: only the errors the fault should "
    "cause, recovered before the load ended, failed requests within the fault's bound, no request near the "
    "client's timeout, the expected worker restarts and no backend left behind."
)
DEPLOYS = (
    "Each deploy under the same steady load, from clients that do not resend a request whose connection was cut "
    "(as wrk and ab; a browser or a load balancer that retries idempotent requests hides some of these). Sessions "
    "are PostgreSQL's from the deploy to the end of the load: the new workers' pools, opened at once. Back to its "
    "rate: from the deploy until 200s come at three quarters of their rate before it, over a second."
)
IDLE = (
    "Clients that hold a connection without using it, while the load runs: `idle` sent one keep-alive request "
    "that needs no database (livez; a team's `ready_path`) and nothing more, `slow-header` half a request, never finished. At each step (that many clients held) 20 "
    "health checks, each on a new connection with 3 s to answer, and 5 liveness checks went at once; `direct` "
    "to gunicorn, `nginx` through nginx in front of it, buffering each request whole (deploy/nginx/healthz.conf)."
)
PRE_PING_HEADERS = (
    "fault",
    "scenario",
    "failed without pre_ping",
    "failed with pre_ping",
    "recovery without (s)",
    "recovery with (s)",
)
NO_STALE_CONNECTION = (
    "Without `pool_pre_ping` no request failed after the restart either: under steady load the first "
    "request on a dropped connection fails while the server is going down, and SQLAlchemy then "
    "invalidates the whole pool, so no stale connection outlives the restart. The requests lost are "
    "those in flight at the shutdown and those refused while the server was down, with or without "
    "the ping; `pool_pre_ping` pays off when the server restarts while connections sit idle."
)


def _setup(meta: dict[str, Any]) -> str:
    """The command, the load, the fault's timing and the server, in one paragraph."""
    pg, machine = meta.get("postgres", {}), meta.get("machine", {})
    return (
        f"Command: `{meta.get('command') or 'healthz lab faults'}`. {meta.get('users')} steady locust users per run; "
        f"each fault begins {meta.get('lead'):g} s into the load (or before it, when present at start-up) and the load "
        f"runs {meta.get('tail'):g} s past its end. PostgreSQL {pg.get('version')} (max_connections {pg.get('max_connections')}), "
        f"{machine.get('cpus')} CPUs, topology {meta.get('topology', {}).get('name')}, {meta.get('seconds', '?')} s in all."
    )


def _behaved(results: list[FaultFigures]) -> str:
    """How many measured runs behaved as expected, and the first problem of each that did not."""
    measured = [r for r in results if not r.skipped and not r.error]
    problems = [r for r in measured if r.problems]
    named = "; ".join(f"`{r.fault}` on `{r.scenario}` ({r.problems[0]})" for r in problems)
    return (
        f"**{len(measured) - len(problems)} of {len(measured)} fault runs behaved as expected**"
        + (f"; {len(problems)} did not: {named}" if problems else "")
        + "."
    )


def _pre_ping_blocks(results: list[FaultFigures]) -> list[tuple]:
    """The database restarts with pool_pre_ping off and on, side by side, when both ran."""
    pre_ping = pre_ping_rows(results)
    if not pre_ping:
        return []
    blocks: list[tuple] = [("h2", "Database restarts: pool_pre_ping off and on"), ("table", PRE_PING_HEADERS, pre_ping)]
    if all(row[2].endswith("(0 after restart)") for row in pre_ping):
        blocks.append(("p", NO_STALE_CONNECTION))
    return blocks


def summary_table(data: dict[str, Any]) -> str:
    """One line per fault run for the terminal."""
    lines = []
    for r in data["results"]:
        figures = (
            r.skipped
            or r.error
            or (
                f"{_kinds(r.errors)}; recovery {_seconds(r.recovery_seconds)} s"
                + (f"; {'; '.join(r.problems)}" if r.problems else "")
            )
        )
        lines.append(f"{r.fault:<21} {r.scenario:<52} {outcome(r):<12} {figures}")
    return "\n".join(lines)


def read(folder: Path) -> dict[str, Any]:
    """``faults.json`` in ``folder``: ``{"meta": ..., "results": [FaultFigures, ...]}``."""
    data = json.loads((Path(folder) / "faults.json").read_text())
    return {"meta": data["meta"], "results": [FaultFigures.from_dict(r) for r in data["results"]]}


def write(folder: Path) -> dict[str, Path]:
    """Make faults.md, faults.html and the timeline plots in ``folder`` from its ``faults.json``."""
    data = read(folder)
    timeout = data["meta"].get("request_timeout", 10.0)
    # Judged again, so that a remade report applies the current rules.
    data["results"] = [
        r.replace(**judged(FAULTS[r.fault], r, timeout)) if r.fault in FAULTS and r.measured else r
        for r in data["results"]
    ]
    plots = write_plots(data["results"], folder)
    blocks = build(data, plots)
    paths = {"markdown": folder / "faults.md", "html": folder / "faults.html"}
    paths["markdown"].write_text(to_markdown(blocks))
    paths["html"].write_text(to_html(blocks, folder, title="healthz lab: faults"))
    return paths


__all__ = ["build", "read", "write", "write_plots", "rows", "pre_ping_rows", "summary_table", "outcome"]
