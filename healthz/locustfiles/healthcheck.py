"""Load for ``GET /api/v1/healthz/``, as the report's ``ab`` run made it.

    locust -f "$(healthz locustfile)" --host http://127.0.0.1:8000                 # web UI
    locust -f "$(healthz locustfile)" --host http://127.0.0.1:8000 --headless -u 500 -r 500 -t 20s \\
        --connection close --max-requests 50000

Options (each also read from the environment variable in brackets):

* ``--connection keep-alive|close`` [``HEALTHZ_CONNECTION``, default ``keep-alive``]: ``close`` sends
  ``Connection: close`` so every request opens a new TCP connection, which is what ``ab`` without
  ``-k`` does and what makes gunicorn's green workers start one greenlet, and so one Django or
  SingletonThreadPool connection, per request.
* ``--max-requests N`` [``HEALTHZ_MAX_REQUESTS``, 0 = no cap]: stop after N requests (with
  locust's ``--processes P``, each worker stops after N / P).
* ``--request-timeout S`` [``HEALTHZ_REQUEST_TIMEOUT``, default 10]: connect and read timeout, so a
  stuck server shows as failures instead of a hang.
* ``--stats-interval S`` [``HEALTHZ_STATS_INTERVAL``, default 1]: how often ``--csv`` history rows
  are written (the lab uses 0.2, five samples a second).
* ``--summary-file PATH`` [``HEALTHZ_SUMMARY_FILE``]: at exit, write the final totals as JSON:
  requests, failures, p50/p95/p99 in ms, failures by error, and when the run started and ended. locust's ``--csv`` files are written
  periodically and can miss the last requests; this is written after the last one.
* ``--timeline-file PATH`` [``HEALTHZ_TIMELINE_FILE``]: at exit, write every request's outcome in
  tenths of a second of completion time (Unix time): successes, failures by name and the slowest
  response of each, so a fault's start, its errors and the first clean second after it can be read
  off (the lab's fault runs use it).
* ``--path PATH`` [``HEALTHZ_PATH``, default ``/api/v1/healthz/``]: the endpoint called, for a
  service whose health check lives elsewhere.
* ``--targets URL,URL,...`` [``HEALTHZ_TARGETS``]: spread the users over several services (one per
  application host), round robin: user *i* calls ``targets[i % n]``, named ``/api/v1/healthz/ @N``
  (N from 1) so locust's tables and the summary's ``by_name`` give each host's share. Without it
  every user calls ``--host``.
* ``--rate R`` [``HEALTHZ_RATE``, 0 = off]: a fixed arrival rate of R requests per second in all,
  each of the U users sending one every U / R seconds on its own schedule instead of back to back.
  Each request's response time is then counted from when it was *due* on that schedule, so a slow
  answer that holds the next request back shows in that request's time too (no coordinated
  omission); one sent over 10 ms after it was due is *late*, and the summary counts the requests
  *due* in the run, so those never sent are its shortfall. Enough users keep the schedule: a user
  falls behind once an answer takes longer than U / R seconds.
* ``--no-retry`` [``HEALTHZ_NO_RETRY``]: a request whose connection breaks after it was sent fails,
  as with ``wrk`` or ``ab``; by default geventhttpclient resends an idempotent GET on a new
  connection, as browsers do (the lab's deploy faults count what a client that does not retry loses).
* the step ramp's ``--step-users``, ``--step-seconds``, ``--steps``, used when ``HEALTHZ_SHAPE=step-ramp``
  or when ``step_ramp.py`` is added to ``-f`` (``healthz locustfile --step-ramp``).

No wait between requests, like ``ab``. A failure with the service's JSON error is named by its
status and kind (``499 address_unavailable``), so locust's failure table lists the causes; one
without (another service, such as the report's Django view) by its status alone (``499``, ``500``).
"""

from __future__ import annotations

import atexit
import csv
import itertools
import json
import os
import re
import time

import gevent
import geventhttpclient.client
import locust.runners
import locust.stats
from locust import FastHttpUser, constant, events, task
from locust.exception import CatchResponseError
from locust.runners import MasterRunner, WorkerRunner

PATH = "/api/v1/healthz/"
CONNECTION_MODES = ("keep-alive", "close")


@events.init_command_line_parser.add_listener
def add_arguments(parser) -> None:
    group = parser.add_argument_group("healthz")
    group.add_argument(
        "--connection",
        choices=CONNECTION_MODES,
        default="keep-alive",
        env_var="HEALTHZ_CONNECTION",
        help="keep-alive: reuse each user's TCP connection; close: a new connection per request (ab without -k)",
    )
    group.add_argument(
        "--max-requests",
        type=int,
        default=0,
        env_var="HEALTHZ_MAX_REQUESTS",
        help="stop after this many requests (0: no cap)",
    )
    group.add_argument(
        "--request-timeout",
        type=float,
        default=10.0,
        env_var="HEALTHZ_REQUEST_TIMEOUT",
        help="connect and read timeout, seconds",
    )
    group.add_argument(
        "--stats-interval",
        type=float,
        default=1.0,
        env_var="HEALTHZ_STATS_INTERVAL",
        help="seconds between --csv history rows",
    )
    group.add_argument(
        "--summary-file", default="", env_var="HEALTHZ_SUMMARY_FILE", help="write final totals as JSON here at exit"
    )
    group.add_argument(
        "--timeline-file",
        default="",
        env_var="HEALTHZ_TIMELINE_FILE",
        help="write per-0.1 s outcomes as JSON here at exit",
    )
    group.add_argument(
        "--path", default=PATH, env_var="HEALTHZ_PATH", help="the endpoint called (default /api/v1/healthz/)"
    )
    group.add_argument(
        "--targets",
        default="",
        env_var="HEALTHZ_TARGETS",
        help="comma-separated base URLs to spread the users over, round robin (default: --host)",
    )
    group.add_argument(
        "--rate",
        type=float,
        default=0.0,
        env_var="HEALTHZ_RATE",
        help="requests per second in all, spread over the users, each timed from when it was due (0: back to back)",
    )
    _add_retry_and_ramp_arguments(group)


def _add_retry_and_ramp_arguments(group) -> None:
    """``--no-retry``, and the step ramp's options (``step_ramp.py``), in our group of locust's parser."""
    group.add_argument(
        "--no-retry",
        action="store_true",
        default=False,
        env_var="HEALTHZ_NO_RETRY",
        help="fail a request whose connection breaks after it was sent (default: resend an idempotent GET once)",
    )
    group.add_argument(
        "--step-users", type=int, default=100, env_var="HEALTHZ_STEP_USERS", help="step ramp: users added per step"
    )
    group.add_argument(
        "--step-seconds", type=float, default=10.0, env_var="HEALTHZ_STEP_SECONDS", help="step ramp: seconds per step"
    )
    group.add_argument("--steps", type=int, default=5, env_var="HEALTHZ_STEPS", help="step ramp: number of steps")


@events.init.add_listener
def configure(environment, **_kwargs) -> None:
    """Take the options: in this process's users (:func:`configure_users`), and for the files the
    process that holds the totals writes at exit (locust alone, or the master of a distributed run)."""
    options = environment.parsed_options
    if options is None:  # locust used as a library without a command line
        return
    locust.stats.CSV_STATS_INTERVAL_SEC = options.stats_interval
    locust.stats.CSV_STATS_FLUSH_INTERVAL_SEC = options.stats_interval
    if isinstance(environment.runner, WorkerRunner):
        # A worker's options are its own command line's until the master's arrive with the first
        # spawn, just before test_start: the users are configured then.
        # A worker reports to its master every 3 s by default: the master's history rows would show
        # no requests in between, which reads as a stalled service. Set before its reporter first sleeps.
        locust.runners.WORKER_REPORT_INTERVAL = WORKER_REPORT_SECONDS
        environment.events.test_start.add_listener(_configure_worker)
        environment.events.report_to_master.add_listener(_report_to_master)
        return
    environment.events.test_start.add_listener(SCHEDULE.start)
    environment.events.test_stop.add_listener(SCHEDULE.stop)
    # The users in all, for the workers' pacing: a worker's own -u is not the master's.
    options.healthz_users = options.num_users
    configure_users(environment)
    timeline = Timeline() if options.timeline_file else None
    if isinstance(environment.runner, MasterRunner):
        environment.events.worker_report.add_listener(lambda client_id, data: _worker_report(data, timeline))
    if options.summary_file:
        environment.events.quit.add_listener(
            lambda **_kw: write_summary(environment.runner.stats, options.summary_file, SCHEDULE)
        )
    if timeline is not None:
        environment.events.request.add_listener(timeline.record)
        environment.events.quit.add_listener(lambda **_kw: timeline.write(options.timeline_file))
    if getattr(options, "csv_prefix", None):
        environment.events.quit.add_listener(lambda **_kw: atexit.register(write_final_csv, environment))


def write_final_csv(environment) -> None:
    """Rewrite ``--csv``'s ``_stats.csv`` and ``_failures.csv`` with the final totals. locust writes
    them every ``--stats-interval`` and closes them without a last write, so a run that stops
    itself (``--max-requests``) leaves them short or empty; this runs at exit, after they are closed."""
    prefix = environment.parsed_options.csv_prefix
    writer = locust.stats.StatsCSV(environment, locust.stats.PERCENTILES_TO_REPORT)
    for suffix, write in (("_stats.csv", writer.requests_csv), ("_failures.csv", writer.failures_csv)):
        with open(f"{prefix}{suffix}", "w", newline="") as fh:
            write(csv.writer(fh))


def load_processes(environment) -> int:
    """How many processes share the users: the master's ``--expect-workers`` in a worker (locust's
    ``--processes P`` sets it to P; a distributed run's master passes it to its workers), else 1."""
    options = environment.parsed_options
    if isinstance(environment.runner, WorkerRunner):
        return max(1, int(getattr(options, "expect_workers", 1) or 1))
    return 1


def configure_users(environment) -> None:
    """Set :class:`HealthzUser` from the options: timeouts, connection mode, targets, path, this
    process's share of ``--max-requests`` and of ``--rate``. A master runs no users, but keeps the
    whole rate for the summary's requests due."""
    options = environment.parsed_options
    HealthzUser.connection_timeout = HealthzUser.network_timeout = options.request_timeout
    HealthzUser.default_headers = {"Connection": "close"} if options.connection == "close" else None
    HealthzUser.targets = [t.strip().rstrip("/") for t in options.targets.split(",") if t.strip()]
    HealthzUser.path = options.path if options.path.startswith("/") else "/" + options.path
    if getattr(options, "no_retry", False):
        # geventhttpclient asks this before resending a request its connection cut (RFC 9110 9.2.2).
        geventhttpclient.client._may_retry_after_send_error = lambda method: False
    processes = load_processes(environment)
    if options.max_requests > 0 and not isinstance(environment.runner, MasterRunner):
        _cap_requests(environment, -(-options.max_requests // processes))
    users = getattr(options, "healthz_users", None) or options.num_users or 0
    HealthzUser.users_here = max(1, users // processes)
    if options.rate > 0:
        # Every user sends one every U / R s wherever it runs, so the users' rates add up to R; each
        # process staggers its own share of them over that interval.
        HealthzUser.interval = users / options.rate if users else 0.0
        SCHEDULE.rate = options.rate / processes


def _configure_worker(environment, **_kwargs) -> None:
    configure_users(environment)
    # test_start comes again with every run the web UI starts: listen once.
    if environment.parsed_options.timeline_file and not TIMELINE.listening:
        environment.events.request.add_listener(TIMELINE.record)
        TIMELINE.listening = True


def _report_to_master(client_id, data) -> None:
    """A worker's share of the schedule and timeline since its last report, for the master to add up."""
    data["healthz_late"], SCHEDULE.late = SCHEDULE.late, 0
    if TIMELINE.buckets:
        data["healthz_timeline"], TIMELINE.buckets = list(TIMELINE.buckets.values()), {}


def _worker_report(data, timeline: Timeline | None) -> None:
    SCHEDULE.late += int(data.get("healthz_late") or 0)
    if timeline is not None:
        timeline.merge(data.get("healthz_timeline") or [])


class Schedule:
    """The fixed-rate schedule's counts in this process: the rate (0: none), requests sent late, and
    when the test started and stopped (Unix time, None before) for the requests due in it."""

    rate = 0.0
    late = 0
    started: float | None = None
    stopped: float | None = None

    def start(self, **_kwargs) -> None:
        self.started, self.stopped = time.time(), None

    def stop(self, **_kwargs) -> None:
        self.stopped = time.time()

    def seconds(self, default_start: float) -> float:
        """The test's length so far: from its start (else ``default_start``) to its stop, or now."""
        return max(0.0, (self.stopped or time.time()) - (self.started or default_start))


SCHEDULE = Schedule()
#: How often a distributed run's worker sends its figures to the master.
WORKER_REPORT_SECONDS = 0.2
#: A request sent this long after it was due is late.
LATE_SECONDS = 0.010


def write_summary(stats, path: str, schedule: Schedule | None = None) -> None:
    """The final totals of ``stats`` (a locust ``RequestStats``) as JSON in ``path``; with a
    fixed-rate ``schedule``, also the requests due in the run and those sent late."""
    total = stats.total
    by_error: dict[str, int] = {}
    for entry in stats.errors.values():  # one entry per request name and error: sum the names
        by_error[error_name(entry.error)] = by_error.get(error_name(entry.error), 0) + entry.occurrences
    summary = {
        "requests": total.num_requests,
        "failures": total.num_failures,
        "p50_ms": total.get_response_time_percentile(0.5) if total.num_requests else None,
        "p95_ms": total.get_response_time_percentile(0.95) if total.num_requests else None,
        "p99_ms": total.get_response_time_percentile(0.99) if total.num_requests else None,
        "failures_by_error": by_error,
        "by_name": {
            entry.name: {
                "requests": entry.num_requests,
                "failures": entry.num_failures,
                "failures_by_error": {
                    error_name(e.error): e.occurrences for e in stats.errors.values() if e.name == entry.name
                },
            }
            for entry in stats.entries.values()
        },
        "start_time": total.start_time,
        "end_time": time.time(),
        "last_request_timestamp": total.last_request_timestamp,
    }
    if schedule is not None and schedule.rate > 0:
        summary["rate"] = schedule.rate
        summary["due"] = int(schedule.rate * schedule.seconds(total.start_time))
        summary["late"] = schedule.late
    with open(path, "w") as fh:
        json.dump(summary, fh, indent=1)


#: A failure as a distributed run's master holds it: its workers send the exception's repr.
_REPORTED_FAILURE = re.compile(r"""^CatchResponseError\((['"])(.*)\1\)$""")


def error_name(error: object) -> str:
    """A failure's name as locust's table shows it in one process (``499 pool_timeout``), whether
    ``error`` is the exception or, in a distributed run's master, the repr its worker sent."""
    text = str(error)
    match = _REPORTED_FAILURE.match(text)
    return match.group(2) if match else text


class Timeline:
    """Outcomes by tenth of a second of completion: ``{"t": 1764226800.3, "ok": n, "ok_max_ms": ms,
    "failed": {name: n}, "failed_max_ms": ms}``. A failure's name is the one locust's failure table
    shows for a 499 (``499 pool_timeout``), else the client's exception (``ConnectionResetError(...)``)."""

    def __init__(self) -> None:
        self.buckets: dict[int, dict] = {}
        self.listening = False  # a worker's: recording its requests

    def record(self, response_time=None, exception=None, **_kwargs) -> None:
        bucket = self._bucket(int(time.time() * 10))
        ms = float(response_time or 0.0)
        if exception is None:
            bucket["ok"] += 1
            bucket["ok_max_ms"] = max(bucket["ok_max_ms"], ms)
        else:
            name = str(exception) if isinstance(exception, CatchResponseError) else repr(exception)
            bucket["failed"][name] = bucket["failed"].get(name, 0) + 1
            bucket["failed_max_ms"] = max(bucket["failed_max_ms"], ms)

    def _bucket(self, tick: int) -> dict:
        return self.buckets.setdefault(
            tick, {"t": tick / 10, "ok": 0, "ok_max_ms": 0.0, "failed": {}, "failed_max_ms": 0.0}
        )

    def merge(self, buckets: list[dict]) -> None:
        """Add a worker's buckets (as :meth:`record` made them) to these."""
        for theirs in buckets:
            mine = self._bucket(round(theirs["t"] * 10))
            mine["ok"] += theirs["ok"]
            mine["ok_max_ms"] = max(mine["ok_max_ms"], theirs["ok_max_ms"])
            for name, count in theirs["failed"].items():
                mine["failed"][name] = mine["failed"].get(name, 0) + count
            mine["failed_max_ms"] = max(mine["failed_max_ms"], theirs["failed_max_ms"])

    def write(self, path: str) -> None:
        with open(path, "w") as fh:
            json.dump([self.buckets[tick] for tick in sorted(self.buckets)], fh)


#: A worker's timeline since its last report to the master.
TIMELINE = Timeline()


def _cap_requests(environment, cap: int) -> None:
    sent = 0

    def count(**_kwargs) -> None:
        nonlocal sent
        sent += 1
        if sent == cap:
            headless = environment.parsed_options.headless
            # Not from this greenlet: quitting kills the users, this request's greenlet among them.
            gevent.spawn(environment.runner.quit if headless else environment.runner.stop)

    environment.events.request.add_listener(count)


def failure_name(status: int, body: object) -> str | None:
    """The failure to record for a response, or None for a 200: ``<status> <kind>`` from the
    service's JSON error (``499 pool_timeout``; ``503 ...`` under HEALTHZ_ERROR_STATUS=503), else
    the status alone (``499``, the report's; ``500``)."""
    if status == 200:
        return None
    kind = body.get("error") if isinstance(body, dict) else None
    if isinstance(kind, str) and kind:
        return f"{status} {kind}"
    return str(status)


class HealthzUser(FastHttpUser):
    """One client calling the health endpoint back to back (on its share of ``--targets``, when given)."""

    wait_time = constant(0)
    path = PATH
    targets: list[str] = []
    #: Seconds between this user's requests at a fixed rate (``--rate``); 0: back to back.
    interval = 0.0
    #: The users this process runs (its share of ``-u``), over which the first requests are staggered.
    users_here = 1
    _started = itertools.count()

    def on_start(self) -> None:
        self.url, self.name = self.path, self.path
        started = next(self._started)
        if self.targets:
            index = started % len(self.targets)
            self.url, self.name = self.targets[index] + self.path, f"{self.path} @{index + 1}"
        # Users start together; their schedules are staggered so the arrivals are even.
        self.due = time.time() + (started % self.users_here) / max(1.0, SCHEDULE.rate or 1.0)

    @task
    def healthz(self) -> None:
        due = None
        if self.interval:
            due, self.due = self.due, self.due + self.interval
            wait = due - time.time()
            if wait > 0:
                gevent.sleep(wait)
            elif -wait > LATE_SECONDS:
                SCHEDULE.late += 1
        with self.client.get(self.url, name=self.name, catch_response=True) as response:
            if due is not None:  # from when it was due, not from when it could be sent
                response.request_meta["response_time"] = (time.time() - due) * 1000
            body = None
            if response.status_code >= 400:
                try:
                    body = response.json()
                except ValueError:
                    body = None
            failure = failure_name(response.status_code, body)
            if failure is not None and response.status_code != 0:
                response.failure(failure)


if os.environ.get("HEALTHZ_SHAPE") == "step-ramp":
    from step_ramp import StepRamp  # noqa: F401  (locust picks up the shape class it finds here)
