"""The load generator: locust, headless, as a child process, and what its CSV files say.

The command is the one a user types (``locust -f "$(healthz locustfile)" ...``), bounded in time
(``--run-time``) and in requests (``--max-requests``), with its CSV and HTML reports written into
the run's folder. The figures come from locust's own files, so a row of the lab's report can be
checked against locust's report beside it.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from healthz.harness.process import ChildProcess
from healthz.lab import probes, require_extra
from healthz.lab.own_service import DEFAULT_PATH
from healthz.locustfiles import HEALTHCHECK as LOCUSTFILE

require_extra()

#: Failures the locustfile names ``<status> <kind>`` (``499 pool_timeout``, or 503 with
#: HEALTHZ_ERROR_STATUS=503); anything else is the client's own (refused, timed out) or ``HTTP <status>``.
_SERVICE_ERROR = re.compile(r"^[45]\d\d ([a-z_]+)$")
#: A failure without the service's JSON error: its status alone (``499``, ``500``).
_STATUS = re.compile(r"^(?:HTTP )?([1-5]\d\d)$")


def locust_command(
    host: str,
    users: int,
    duration: float,
    *,
    connection: str,
    max_requests: int,
    csv_prefix: Path,
    html: Path,
    request_timeout: float = 10.0,
    stats_interval: float = 0.2,
    timeline: Path | None = None,
    targets: Sequence[str] = (),
    path: str = DEFAULT_PATH,
    processes: int = 1,
    rate: float = 0.0,
    workers: int = 0,
    master_port: int = 0,
    retry: bool = True,
) -> list[str]:
    """The headless locust command for one run; every bound is explicit. ``retry`` False makes a
    client that does not resend a request its connection cut (``--no-retry``, as wrk and ab). ``timeline`` adds the
    locustfile's per-0.1 s outcomes file (:func:`read_timeline`); ``targets`` spreads the users
    over several services, round robin (one per application host); ``path`` is the endpoint called;
    ``processes`` above 1 spreads the same users over that many locust worker processes (locust's
    own ``--processes``: a master and its forked workers); ``rate`` above 0 paces the users to that
    many requests per second in all, each timed from when it was due. ``workers`` above 0 makes
    this the master of locust's distributed mode (``--master --expect-workers``, on ``master_port``),
    waiting up to :data:`WORKERS_WAIT` seconds for that many :func:`worker_command` processes; the
    master runs no users, and writes every file."""
    extra = _extra_options(timeline, targets, path, processes, rate, workers, master_port)
    return [
        *(sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", host),
        *("--users", str(users), "--spawn-rate", str(users), "--run-time", f"{max(1, round(duration))}s"),
        *("--stop-timeout", "0", "--connection", connection, "--max-requests", str(max_requests)),
        *("--request-timeout", f"{request_timeout:g}", "--stats-interval", f"{stats_interval:g}"),
        *("--csv", str(csv_prefix), "--html", str(html), "--summary-file", f"{csv_prefix}_summary.json"),
        *("--only-summary", "--loglevel", "WARNING"),
        *extra,
        *([] if retry else ["--no-retry"]),
    ]


def _extra_options(
    timeline: Path | None,
    targets: Sequence[str],
    path: str,
    processes: int,
    rate: float,
    workers: int,
    master_port: int,
) -> list[str]:
    """The options :func:`locust_command` adds only where they differ from the defaults (locust's and ours)."""
    extra: list[str] = ["--timeline-file", str(timeline)] if timeline else []
    if path != DEFAULT_PATH:
        extra += ["--path", path]
    if processes > 1 and workers:
        raise ValueError("locust's --processes and distributed workers are two ways to the same thing: choose one")
    if processes > 1:
        extra += ["--processes", str(processes)]
    if workers:
        extra += ["--master", "--expect-workers", str(workers), "--expect-workers-max-wait", f"{WORKERS_WAIT:g}"]
        extra += ["--master-bind-port", str(master_port)] if master_port else []
    if rate > 0:
        extra += ["--rate", f"{rate:g}"]
    if len(targets) > 1:
        extra += ["--targets", ",".join(targets)]
    return extra


#: Seconds a distributed run's master waits for its workers to connect.
WORKERS_WAIT = 30.0


def worker_command(master_host: str, master_port: int) -> list[str]:
    """A worker of locust's distributed mode for the master at ``master_host:master_port``: it takes
    every option (users, rate, connection mode, cap) from the master when the run starts, so the
    same command serves on any machine that reaches the master."""
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--worker",
        "--master-host",
        master_host,
        "--master-port",
        str(master_port),
        "--loglevel",
        "WARNING",
    ]


class Locust:
    """locust run by ``command`` (inside ``command_prefix``), its output in ``logfile``; with
    ``workers``, a distributed run's master and its worker processes, each a ``(command, prefix)``
    started after the master and logging to ``logfile`` too. Each is a :class:`ChildProcess`."""

    def __init__(
        self,
        command: Sequence[str],
        logfile: Path,
        *,
        command_prefix: Sequence[str] = (),
        workers: Sequence[tuple[Sequence[str], Sequence[str]]] = (),
    ) -> None:
        self.command = [*command_prefix, *command]
        self.worker_commands = [[*prefix, *worker] for worker, prefix in workers]
        self.logfile = Path(logfile)
        self.master = ChildProcess(self.command, self.logfile, name="locust", signal_group=False)
        self.workers = [
            ChildProcess(command, self.logfile, name=f"locust worker {i}")
            for i, command in enumerate(self.worker_commands, 1)
        ]

    def start(self) -> Locust:
        self.master.start()
        for worker in self.workers:
            worker.start()
        return self

    @property
    def pid(self) -> int | None:
        return self.master.pid

    def process_cpu(self) -> dict[int, float]:
        """CPU seconds (user + system) of locust and of each of its worker processes, each its own
        (not its children's), by PID; empty when it is not running."""
        if not self.running():
            return {}
        pids = [self.pid, *probes.children(self.pid), *(w.pid for w in self.workers if w.running())]
        readings = {pid: probes.own_cpu_seconds(pid) for pid in pids}
        return {pid: seconds for pid, seconds in readings.items() if seconds is not None}

    def running(self) -> bool:
        return self.master.running()

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGINT (locust writes its reports and exits; a master first tells its workers to quit),
        then SIGTERM and SIGKILL ``grace`` seconds apart; then any worker still running, the same way."""
        status = self.master.stop(grace)
        for worker in self.workers:
            worker.stop(grace)
        return status

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for locust to stop by itself, then stop it."""
        self.master.wait(timeout)
        return self.stop()


#: locust's own warning when one of its processes runs out of CPU.
CPU_WARNING = "CPU usage above"


def busiest_share(before: dict[int, float], after: dict[int, float], seconds: float) -> float | None:
    """The largest share of one core any locust process used between two :meth:`Locust.process_cpu`
    readings ``seconds`` apart; None without two readings."""
    if seconds <= 0 or not after:
        return None
    shares = [(after[pid] - before.get(pid, 0.0)) / seconds for pid in after if pid in before]
    return round(max(shares), 3) if shares else None


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "", "N/A") else None
    except ValueError:
        return None


def _rows(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as fh:
            return list(csv.DictReader(fh))
    except OSError:
        return []


def read_summary(csv_prefix: Path) -> dict[str, Any]:
    """The run's final totals from the locustfile's ``--summary-file``: requests, failures,
    p50/p95/p99 latency in ms, failures by cause, the run's length in seconds, and with
    ``--targets`` each target's requests, failures and causes (``by_host``, in target order). A 499's cause is the service's error kind;
    the client's own failures keep locust's wording, shortened. Empty figures when locust wrote none."""
    try:
        data = json.loads(Path(f"{csv_prefix}_summary.json").read_text())
    except (OSError, ValueError):
        data = {}
    failures: dict[str, int] = {}
    for error, count in (data.get("failures_by_error") or {}).items():
        failures[cause(error)] = failures.get(cause(error), 0) + int(count)
    by_host: dict[int, dict[str, Any]] = {}
    for name, entry in (data.get("by_name") or {}).items():
        _, sep, number = name.rpartition(" @")
        if sep and number.isdigit():
            causes: dict[str, int] = {}
            for error, count in entry.get("failures_by_error", {}).items():
                causes[cause(error)] = causes.get(cause(error), 0) + int(count)
            by_host[int(number)] = {
                "requests": int(entry["requests"]),
                "failures": int(entry["failures"]),
                "failures_by_cause": causes,
            }
    start, end = data.get("start_time"), data.get("end_time")
    return {
        "requests": int(data.get("requests") or 0),
        "failures": int(data.get("failures") or 0),
        "p50_ms": data.get("p50_ms"),
        "p95_ms": data.get("p95_ms"),
        "p99_ms": data.get("p99_ms"),
        # The run's length, not first-to-last request: a server that stops answering must not look fast.
        "seconds": round(end - start, 3) if start and end and end > start else None,
        "failures_by_cause": dict(sorted(failures.items(), key=lambda kv: -kv[1])),
        "by_host": [by_host[n] for n in sorted(by_host)],
        # A fixed-rate run's schedule (--rate): requests due in the run and those sent late.
        "rate": data.get("rate"),
        "due": data.get("due"),
        "late": data.get("late"),
    }


def cause(error: str) -> str:
    """What a locust failure name says went wrong: the service's error kind for a 499
    (``499 pool_timeout`` is ``pool_timeout``), the status of a failure without one (``500``), else
    the client's cause (:func:`_client_cause`)."""
    match = _SERVICE_ERROR.match(error)
    if match:
        return match.group(1)
    status = _STATUS.match(error)
    return status.group(1) if status else _client_cause(error)


def read_timeline(path: Path) -> list[dict[str, Any]]:
    """The locustfile's ``--timeline-file``: one row per tenth of a second with a completed request,
    ``{"t": unix time, "ok": n, "ok_max_ms": ms, "failed": {cause: n}, "failed_max_ms": ms}``, failures
    named by :func:`cause`. Empty when locust wrote none."""
    try:
        rows = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return []
    for row in rows:
        merged: dict[str, int] = {}
        for error, count in row.get("failed", {}).items():
            merged[cause(error)] = merged.get(cause(error), 0) + int(count)
        row["failed"] = merged
    return rows


def _client_cause(error: str) -> str:
    """locust's error text shortened to a cause: ``client timeout``, or ``client`` and the
    exception's name (``client ConnectionRefusedError``)."""
    if "timed out" in error or "Timeout" in error:
        return "client timeout"
    name = error.split("(", 1)[0].split(":", 1)[0].strip()
    return "client " + (name or "error")


def read_history(csv_prefix: Path, interval: float) -> list[dict[str, float | None]]:
    """locust's ``_stats_history.csv`` (Aggregated rows, one every ``interval`` seconds) as samples:
    time since the first row, users, total requests and failures, requests/s over the sample, and
    p50/p99 of the last seconds. locust stamps rows in whole seconds, so time is taken from the row's
    position instead."""
    samples: list[dict[str, float | None]] = []
    previous: float | None = None
    rows = [row for row in _rows(Path(f"{csv_prefix}_stats_history.csv")) if row.get("Name") == "Aggregated"]
    for index, row in enumerate(rows):
        total = _number(row.get("Total Request Count")) or 0.0
        samples.append(
            {
                "t": round(index * interval, 3),
                "users": _number(row.get("User Count")),
                "requests": total,
                "failures": _number(row.get("Total Failure Count")),
                "rps": None if previous is None else (total - previous) / interval,
                "p50_ms": _number(row.get("50%")),
                "p99_ms": _number(row.get("99%")),
            }
        )
        previous = total
    return samples


def last_progress(csv_prefix: Path) -> tuple[float, float, float] | None:
    """``(requests, failures, current requests/s)`` from the last history row, for a progress line
    (columns by position: Requests/s is the 5th, Total Request Count the 18th)."""
    try:
        with open(f"{csv_prefix}_stats_history.csv", "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - 4096))
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        fields = next(csv.reader([line]), [])
        if len(fields) > 20 and fields[3] == "Aggregated":
            current_rps, total, failures = _number(fields[4]), _number(fields[17]), _number(fields[18])
            return (total or 0.0, failures or 0.0, current_rps or 0.0)
    return None


def stalled_seconds(history: list[dict[str, float | None]], interval: float) -> float:
    """The longest stretch, in seconds, in which users were running and no request completed:
    a server that stopped answering (its requests still in flight, so not yet failures)."""
    longest = current = 0.0
    for sample in history:
        if (sample.get("users") or 0) > 0 and sample.get("rps") == 0:
            current += interval
            longest = max(longest, current)
        else:
            current = 0.0
    return round(longest, 3)
