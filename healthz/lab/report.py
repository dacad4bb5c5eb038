"""The lab's report, made from ``results.json`` alone (so it can be remade without rerunning):
``report.md``, a self-contained ``report.html`` (plots inlined), ``results.csv`` with one row per
run, and PNG plots against concurrency, one line per scenario.

The verdict is judged by :mod:`healthz.lab.verdict` from the figures; this module only renders it:
per scenario, whether the failure occurred and why, in numbers; then the answer to the report's
question and settings recommended for the measured load.
"""

from __future__ import annotations

import csv
import json
import shlex
from pathlib import Path
from typing import Any

from healthz.lab import advice, own_answer, plots, require_extra, verdict
from healthz.lab.figures import RunFigures
from healthz.lab.render import to_html, to_markdown
from healthz.lab.stack import Stack
from healthz.lab.tables import (
    BUDGET_COLUMNS,
    DOCTOR_COLUMNS,
    HOST_COLUMNS,
    PAIR_COLUMNS,
    PGBOUNCER_COLUMNS,
    STEP_COLUMNS,
    budget_rows,
    cause_list,
    doctor_rows,
    host_rows,
    not_taken,
    pair_rows,
    pgbouncer_rows,
    saturation,
    step_rows,
)
from healthz.plan import DatabaseLimits

require_extra()

CSV_FIELDS = (
    "scenario",
    "concurrency",
    "connection",
    "topology",
    "worker_class",
    "workers",
    "pool_capacity",
    "seconds",
    "requests",
    "failures",
    "error_rate",
    "rps",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "failures_by_cause",
    "service_errors",
    "address_unavailable",
    "pool_timeouts",
    "sessions_opened",
    "sessions_per_second",
    "sessions_per_request",
    "sessions_per_success",
    "stalled_seconds",
    "backends_peak",
    "backends_mean",
    "backends_left",
    "time_wait_peak",
    "established_peak",
    "ports",
    "cpu_gunicorn",
    "cpu_postgres",
    "cpu_locust",
    "worker_restarts",
    "worker_timeouts",
    "error",
    "run_dir",
    "rerun",
)


# -- formatting ------------------------------------------------------------------------------
_n = verdict.number


_pct = verdict.percent


def _facts(v: verdict.Verdict, limits: DatabaseLimits | None) -> list[str]:
    """The worst run's figures, one clause each."""
    worst = v.worst
    facts = [
        f"at {worst.concurrency:,} clients ({worst.connection}) opened {_n(worst.sessions_opened)} sessions for "
        f"{_n(worst.requests)} requests in {_n(worst.seconds, 0)} s ({_n(worst.sessions_per_second)}/s, "
        f"{_n(worst.sessions_per_request, 3)} per request, {_n(worst.sessions_per_success, 3)} per successful one)"
    ]
    if worst.time_wait_peak is not None and worst.by_host:
        of = f" of {worst.ports:,} ports each" if worst.ports else ""
        facts.append(
            f"TIME_WAIT peaked at {worst.time_wait_peak:,} across {len(worst.by_host)} hosts "
            f"({verdict.busiest_time_wait(worst):,} on the busiest{of})"
        )
    elif worst.time_wait_peak is not None:
        of = f" of {worst.ports:,} ports" if worst.ports else ""
        facts.append(f"TIME_WAIT peaked at {worst.time_wait_peak:,}{of}")
    if worst.backends_peak is not None:
        limit = f" of max_connections {limits.max_connections:,}" if limits else ""
        facts.append(f"backends peaked at {worst.backends_peak:,}{limit}")
    if v.outcome is verdict.Outcome.FAILED:
        if worst.failures:
            facts.append(
                f"{_pct(worst.error_rate)} of requests failed: {cause_list(worst.failures_by_cause, worst.requests)}"
            )
        if verdict.stalled(worst):
            facts.append(
                f"the service stopped answering: no request completed for {worst.stalled_seconds:.1f} s while "
                f"{worst.concurrency:,} clients waited ({_n(worst.rps)} requests/s over the run)"
            )
        if worst.worker_timeouts:
            facts.append(f"gunicorn killed {worst.worker_timeouts} stuck worker(s) (WORKER TIMEOUT)")
    else:
        facts.append(f"no failed requests, {_n(worst.rps)} requests/s, p99 {_n(worst.p99_ms)} ms")
    risk = v.first(verdict.PortsAtRisk) or v.first(verdict.ChurnHidden)
    if risk:
        facts.append(risk.sentence())
    return facts


def in_numbers(v: verdict.Verdict, limits: DatabaseLimits | None) -> str:
    """The verdict's figures and findings in sentences: the Verdict table's last column."""
    if v.outcome is verdict.Outcome.NOT_MEASURED:
        return v.error or "no runs"
    notes = [f.sentence() for f in v.findings if not isinstance(f, (verdict.PortsAtRisk, verdict.ChurnHidden))]
    return "; ".join(_facts(v, limits)) + "." + ("".join(" " + n for n in notes))


def advice_of(data: dict[str, Any], verdicts: dict[str, verdict.Verdict] | None = None) -> advice.Advice:
    """The :class:`advice.Advice` of a run's ``results.json`` (``verdicts``: already judged from it):
    the database's cores are this machine's when the lab ran its own PostgreSQL here (unknown for
    a --database-url one)."""
    meta, results = data["meta"], data["results"]
    limits = DatabaseLimits.from_meta(meta)
    own_database = (meta.get("postgres") or {}).get("source") not in (None, "--database-url")
    config = meta.get("config") or {}
    return advice.advise(
        verdicts if verdicts is not None else verdict.judge_all(results, limits),
        results,
        limits,
        faithful=meta.get("topology", {}).get("faithful", True) is not False,
        db_cores=(meta.get("machine") or {}).get("cpus") if own_database else None,
        ports_default=config.get("ports") if meta.get("topology", {}).get("name") == "netns" else None,
    )


def answer_blocks(said: advice.Advice) -> list[tuple]:
    """The answer first, in at most :data:`advice.ANSWER_LINES` lines: the headline, then the change and the evidence."""
    lines = said.lines()
    return [("p", f"**{lines[0]}**"), ("ul", lines[1:])] if len(lines) > 1 else [("p", f"**{lines[0]}**")]


def settings_blocks(said: advice.Advice) -> list[tuple]:
    """Settings to paste, per framework, each with the measured figure behind it."""
    if not said.settings:
        return []
    blocks: list[tuple] = [
        ("h2", "Settings to paste"),
        (
            "p",
            f"Sized by the load measured on {said.chosen}. Rerun them as a scenario to check they hold: "
            f"`healthz lab run --scenarios-file {RECOMMENDED} -s recommended` (written beside this report).",
        ),
    ]
    for snippet in said.settings:
        blocks += [("h3", snippet.title), ("pre", snippet.code), ("p", f"Measured: {snippet.backed_by}.")]
    return blocks


#: The recommended setup as a scenario file, written beside the report.
RECOMMENDED = "recommended.toml"


def _rerun_recommended(run: RunFigures) -> str:
    """``run``'s rerun command with the recommended scenario in place of its own."""
    words = shlex.split(run.commands.get("rerun") or f"healthz lab run --scenario {run.scenario}")
    if "--scenario" in words:
        at = words.index("--scenario")
        words[at : at + 2] = ["--scenarios-file", RECOMMENDED, "--scenario", "recommended"]
    else:
        words += ["--scenarios-file", RECOMMENDED, "--scenario", "recommended"]
    return shlex.join(words)


def recommended_scenario(said: advice.Advice, results: list[RunFigures]) -> str | None:
    """``recommended.toml``: the chosen scenario with the pool sized by need, to rerun as is."""
    if not said.chosen or not said.sizing:
        return None
    run = advice.top([r for r in results if r.scenario == said.chosen])
    lines = [
        "# The lab's recommendation for the load it measured (healthz lab report): rerun it to check it holds:",
        f"#   {_rerun_recommended(run)}",
        "[scenario.recommended]",
        f'base = "{said.chosen}"',
        f'description = "{said.chosen} with the pool the measured load needs: {said.sizing.line().replace(chr(34), "")}"',
    ]
    if run.placement.pooled:
        lines.append(f"pgbouncer_pool_size = {said.sizing.pgbouncer_pool_size}")
    if run.pool.bounded:
        lines.append(f"pool_size = {said.sizing.pool_size}")
    return "\n".join(lines) + "\n"


def write_csv(results: list[RunFigures], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for r in results:
            row = {**r.to_dict(), "rerun": r.commands["rerun"]}
            for name in ("gunicorn", "postgres", "locust"):
                row[f"cpu_{name}"] = (r.cpu_seconds or {}).get(name)
            for key in ("failures_by_cause", "service_errors"):
                row[key] = json.dumps(getattr(r, key) or {})
            writer.writerow(row)


# -- documents -------------------------------------------------------------------------------
def _setup(meta: dict[str, Any], results: list[RunFigures], scenarios: list[str]) -> list[tuple]:
    """The set-up: topology, PostgreSQL, machine, versions, command; then each scenario and what it stands for."""
    topology, pg, machine, config = (meta.get(key, {}) for key in ("topology", "postgres", "machine", "config"))
    return [
        ("h2", "Set-up"),
        (
            "ul",
            [
                f"Topology: {topology.get('description', '-')}",
                f"PostgreSQL {pg.get('version', '-')} ({pg.get('source', '-')}), max_connections {pg.get('max_connections', '-')}, "
                f"superuser_reserved_connections {pg.get('superuser_reserved_connections', '-')}",
                f"Machine: {machine.get('cpus', '-')} CPUs, {machine.get('platform', '-')}, Python {machine.get('python', '-')}; "
                f"load average at start {', '.join(f'{x:.2f}' for x in machine.get('loadavg', []))}",
                "Versions: " + ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items()),
                *(
                    f"Your service `{name}` runs (read from its venv and command): {Stack.from_dict(stack).line()}"
                    for name, stack in meta.get("stacks", {}).items()
                ),
                f"Command: `{meta.get('command') or '-'}`; each step ran up to {config.get('duration', '-')} s or "
                f"{config.get('max_requests', '-')} requests; probes sampled every {config.get('interval', '-')} s",
            ],
        ),
        ("h3", "Scenarios"),
        (
            "table",
            ("scenario", "configuration", "stands for"),
            [
                [
                    n,
                    next(r.summary for r in results if r.scenario == n),
                    next(r.description for r in results if r.scenario == n),
                ]
                for n in scenarios
            ],
        ),
    ]


def _sections(results: list[RunFigures], limits: DatabaseLimits | None) -> list[tuple]:
    """The sections that only some runs have (several hosts, PgBouncer, the doctor), each with what its figures mean."""
    sections = [
        (
            "Application hosts",
            "Each application host's share: requests and failures from locust (its users were spread over the hosts round robin), "
            "sessions it opened and connections PostgreSQL refused it from PostgreSQL's connection log (by client address), its "
            "peak of client backends (pg_stat_activity by client address), of TIME_WAIT sockets in its namespace, and the "
            "EADDRNOTAVAIL lines in its service log.",
            HOST_COLUMNS,
            host_rows(results),
        ),
        (
            "The connection budget: hosts x workers x pool against max_connections",
            "Connections needed at most, as `healthz plan` counts them: every worker's in-process pool full, or, through PgBouncer, "
            "its server connections (default_pool_size per instance). Available = max_connections less "
            "superuser_reserved_connections. `hosts that fit` is `healthz plan`'s max_hosts for the same workers and pool; `too "
            "many clients` counts the 499s PostgreSQL's refusals caused.",
            BUDGET_COLUMNS,
            budget_rows(results, limits),
        ),
        (
            "PgBouncer: which placement removes the port exhaustion, which only moves it",
            "Runs with PgBouncer between the service and PostgreSQL. Client connections = the service's connections to PgBouncer "
            "(its `login attempt` log lines); server sessions = PostgreSQL's pg_stat_database.sessions; TIME_WAIT = the "
            "application host's sockets toward PostgreSQL and PgBouncer; waiting and max wait from `SHOW POOLS`, wait per "
            "transaction from `SHOW STATS`.",
            PGBOUNCER_COLUMNS,
            pgbouncer_rows(results),
        ),
        (
            "Own services beside the lab's scenarios that stand for them",
            "Each own service (a scenario with `app`: the team's command, such as the report's Django project in "
            "examples/django-report) beside the lab's Flask scenario that claims to behave like it (`counterpart`), at the "
            "same step; each cell is own / stand-in. Sessions from pg_stat_database.sessions, backends from pg_stat_activity, "
            "TIME_WAIT from the application namespace. An own service answers a failure with a status only (the report's 499): "
            "its causes are the lines of its log with a libpq error, by the kind libpq's words give.",
            PAIR_COLUMNS,
            pair_rows(results),
        ),
        (
            "healthz doctor against the measurement",
            "In the middle of each run the lab ran `healthz doctor --json` where the service runs (its network namespace, its "
            "DATABASE_URL), as a team would on a live host. The doctor counts the connections the host opened from its socket "
            "table. Over the same seconds the lab counted them its own way: PgBouncer's logged logins from that host when the "
            "service reaches PgBouncer over TCP, else the connection attempts from that host in the lab's PostgreSQL's log, else "
            "(a --database-url database, or a Unix socket) pg_stat_database.sessions; it applied the doctor's own rules to its "
            "figures. `agrees` compares the two diagnoses (`not compared` when the lab's probes took no sample in the "
            "doctor's window).",
            DOCTOR_COLUMNS,
            doctor_rows(results),
        ),
    ]
    blocks: list[tuple] = []
    for title, text, columns, rows in sections:
        if rows:
            blocks += [("h2", title), ("p", text), ("table", columns, rows)]
    return blocks


def build(
    data: dict[str, Any],
    drawn: list[tuple[str, str]],
    *,
    verdicts: dict[str, verdict.Verdict] | None = None,
    said: advice.Advice | None = None,
    theirs: list[own_answer.OwnAnswer] | None = None,
) -> list[tuple]:
    """The report of ``data`` (:func:`read`) as blocks: ``("h1"|"h2"|"h3"|"p"|"pre", text)``, ``("table", headers, rows)``,
    ``("img", file, title)``, ``("ul", items)``, with the plots ``drawn`` (:func:`plots.write`). Rendered to
    Markdown and HTML alike. ``verdicts``, ``said`` and ``theirs`` (the answers for own code), when the
    caller has them, are ``data``'s, judged and advised once."""
    meta, results = data["meta"], data["results"]
    limits = DatabaseLimits.from_meta(meta)
    verdicts = verdicts if verdicts is not None else verdict.judge_all(results, limits)
    said = said or advice_of(data, verdicts)
    theirs = theirs if theirs is not None else own_answer.answers(meta, results, verdicts, limits)
    ours = [] if theirs and said.reply is advice.Reply.OWN_SERVICE else [*answer_blocks(said), *settings_blocks(said)]
    blocks: list[tuple] = [
        ("h1", "healthz lab report"),
        *[block for answer in theirs for block in answer.blocks()],
        *ours,
        *_verdict_blocks(verdicts, said, limits),
        *[("p", text) for text in not_taken(results)],
        *[("p", text) for text in saturation(results)],
        *_setup(meta, results, list(dict.fromkeys(r.scenario for r in results))),
    ]
    if not meta.get("topology", {}).get("faithful", True):
        blocks.append(("p", LOOPBACK_CAVEAT))
    blocks += _step_blocks(results)
    blocks += _sections(results, limits)
    if drawn:
        blocks.append(("h2", "Plots"))
        blocks += [("img", name, title) for name, title in drawn]
    return blocks + _rerun_blocks(results)


LOOPBACK_CAVEAT = (
    "**Loopback caveat:** on 127.0.0.1 Linux reuses TIME_WAIT ports (net.ipv4.tcp_tw_reuse = 2), so "
    "ephemeral-port exhaustion barely shows and cannot be reproduced faithfully; the sessions-opened "
    "figures still show which scenarios churn. `--topology netns` reproduces the failure."
)
STEP_LEGEND = (
    "Figures per run: req/s and latency percentiles from locust; failed = share of requests locust counted as "
    "failures, causes = the service's error kind of each 499 (or the client's own error); sessions opened = "
    "delta of pg_stat_database.sessions (for a PgBouncer row, also the service's connections to PgBouncer per "
    "second, from its logins); hold / checkout ms = mean time a request held its pooled connection and waited for "
    "it (connecting included), from the service's /metrics; backends = client backends in pg_stat_activity; "
    "TIME_WAIT = sockets toward the PostgreSQL port in the application's network namespace; EADDRNOTAVAIL lines = "
    "`Cannot assign requested address` in the service log; CPU s = CPU seconds of each process tree during the run."
)


def _verdict_blocks(
    verdicts: dict[str, verdict.Verdict], said: advice.Advice, limits: DatabaseLimits | None
) -> list[tuple]:
    """The verdict table: each scenario on its worst step, with a kernel knob's effect beside its own."""
    knobs = {k.scenario: k for k in said.knobs}
    rows = [
        [n, str(v.outcome), v.cause or "-", in_numbers(v, limits) + (f" {knobs[n].sentence()}" if n in knobs else "")]
        for n, v in verdicts.items()
    ]
    return [
        ("h2", "Verdict"),
        (
            "p",
            "The question, from the original report: under gunicorn's eventlet workers a health endpoint fails above about "
            "500 concurrent clients with `could not connect to server: Cannot assign requested address`. "
            "Does connection pooling alone fix it? Each scenario, judged on its worst step:",
        ),
        ("table", ("scenario", "outcome", "cause", "in numbers"), rows),
    ]


def _step_blocks(results: list[RunFigures]) -> list[tuple]:
    """A table of every run's figures per concurrency step, after the legend of its columns."""
    blocks: list[tuple] = [("h2", "Results by concurrency step"), ("p", STEP_LEGEND)]
    paced = [r for r in results if r.rate]
    if paced:
        blocks.append(("p", fixed_rate_note(paced)))
    for step in sorted({r.concurrency for r in results}):
        blocks += [("h3", f"{step:,} concurrent clients"), ("table", STEP_COLUMNS, step_rows(results, step))]
    return blocks


def fixed_rate_note(paced: list[RunFigures]) -> str:
    """What a fixed-rate run's latencies mean, and each run's late and never-sent requests."""
    runs = "; ".join(
        f"{r.scenario} at {r.concurrency:,} clients: {r.late or 0:,} late, {r.not_sent or 0:,} never sent of "
        f"{r.due or 0:,} due"
        for r in paced
    )
    return (
        f"**Fixed rate** (`--rate {paced[0].rate:g}`): the users send {_n(paced[0].rate)} requests per second in all, "
        "each on its own schedule, and a request's latency counts from when it was due, so a slow answer that held "
        "the next request back shows in both (no coordinated omission). Late = sent over 10 ms after it was due; "
        f"never sent = due in the run but not sent by its end. {runs}."
    )


def _rerun_blocks(results: list[RunFigures]) -> list[tuple]:
    """Where each run's files are and the command that repeats it."""
    return [
        ("h2", "Rerun any row"),
        (
            "p",
            "Each run's folder holds locust's CSV and HTML reports, the service log, `gunicorn --print-config` and "
            "`commands.txt` with the exact gunicorn and locust commands (passwords masked).",
        ),
        (
            "table",
            ("scenario", "clients", "folder", "rerun with"),
            [[r.scenario, f"{r.concurrency:,}", r.run_dir, f"`{r.commands['rerun']}`"] for r in results],
        ),
    ]


def terminal(data: dict[str, Any]) -> str:
    """What ``healthz lab run`` prints at the end: the answer first, then the verdict per scenario."""
    limits = DatabaseLimits.from_meta(data["meta"])
    verdicts = verdict.judge_all(data["results"], limits)
    said = advice_of(data, verdicts)
    answers = [a.lines() for a in own_answer.answers(data["meta"], data["results"], verdicts, limits)]
    if not answers or said.reply is not advice.Reply.OWN_SERVICE:
        answers.append(said.lines())
    table = verdict_table(data, verdicts)
    text = [line for lines in answers for line in [lines[0], *(f"  {x}" for x in lines[1:]), ""]]
    return "\n".join([*text, "Verdict", table])


def verdict_table(data: dict[str, Any], verdicts: dict[str, verdict.Verdict] | None = None) -> str:
    """The verdict as plain text for the terminal: one line per scenario (``verdicts``: ``data``'s, if judged)."""
    meta, results = data["meta"], data["results"]
    if verdicts is None:
        verdicts = verdict.judge_all(results, DatabaseLimits.from_meta(meta))
    width = max((len(n) for n in verdicts), default=10)
    lines = []
    for name, v in verdicts.items():
        w = v.worst
        if w is None:
            figures = f"not measured: {v.error or 'no runs'}"
        else:
            figures = (
                f"{_pct(w.error_rate)} failed ({v.cause or 'none'}), {_n(w.sessions_per_second)} sessions/s, "
                f"TIME_WAIT peak {_n(w.time_wait_peak)}, {_n(w.rps)} req/s"
            )
        lines.append(f"{name:<{width}}  {str(v.outcome):<7}  {figures}")
    doctored = [r.doctor for r in results if r.doctor and not r.doctor.error]
    if doctored:
        agreed = sum(1 for d in doctored if d.agrees)
        compared = [d for d in doctored if d.agrees is not None]
        unmeasured = len(doctored) - len(compared)
        lines.append(
            f"healthz doctor, run during each step, agreed with the measurement in {agreed} of {len(compared)} runs"
            + (
                f" ({unmeasured} not compared: the lab's probes had no figures for the doctor's window)"
                if unmeasured
                else ""
            )
        )
    lines += [text.replace("**", "") for text in not_taken(results) + saturation(results)]
    return "\n".join(lines)


def read(folder: Path) -> dict[str, Any]:
    """``folder``'s ``results.json``: its ``meta`` as written, its ``results`` as :class:`RunFigures`."""
    data = json.loads((Path(folder) / "results.json").read_text())
    return {"meta": data["meta"], "results": [RunFigures.from_dict(r) for r in data["results"]]}


def write(folder: Path) -> dict[str, Path]:
    """Make every report file in ``folder`` from its ``results.json``; return their paths."""
    folder = Path(folder)
    data = read(folder)
    limits = DatabaseLimits.from_meta(data["meta"])
    drawn = plots.write(data["results"], folder, limits)
    write_csv(data["results"], folder / "results.csv")
    verdicts = verdict.judge_all(data["results"], limits)
    said = advice_of(data, verdicts)
    theirs = own_answer.answers(data["meta"], data["results"], verdicts, limits)
    blocks = build(data, drawn, verdicts=verdicts, said=said, theirs=theirs)
    chosen = [a for a in theirs if a.chosen]
    scenario = chosen[0].recommended() if chosen else recommended_scenario(said, data["results"])
    if scenario:
        (folder / RECOMMENDED).write_text(scenario)
    (folder / "report.md").write_text(to_markdown(blocks))
    (folder / "report.html").write_text(to_html(blocks, folder))
    return {
        "markdown": folder / "report.md",
        "html": folder / "report.html",
        "csv": folder / "results.csv",
        "json": folder / "results.json",
    }
