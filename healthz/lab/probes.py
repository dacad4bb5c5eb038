"""What the lab measures while a run goes on, and how it reads each figure.

* PostgreSQL's own counters: ``pg_stat_database.sessions`` (sessions opened, PostgreSQL 14+) and
  client backends in ``pg_stat_activity``;
* the kernel's socket table of the application's network namespace (``/proc/<pid>/net/tcp`` and
  ``tcp6`` of a process inside it): sockets toward the database port by TCP state, TIME_WAIT above all;
* CPU seconds of a process tree from ``/proc/<pid>/stat`` (its own, its reaped children's and its
  live descendants'), so a saturated load generator is told apart from a saturated service;
* the service's log: ``Cannot assign requested address`` lines and ``healthz 499 error=KIND`` lines;
* the service's ``/metrics``, read before and after the load: the mean time a request held its
  pooled connection and waited for it (:func:`pool_times`), where the service exposes them;
* ``healthz doctor`` itself, run in the middle of the load where the service runs, to be checked
  against what the probes above measured over the same seconds (:func:`measured_observation`).

:class:`Sampler` samples the first three in a thread, five times a second by default.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions

from healthz import errors, sockets
from healthz.doctor import Observation
from healthz.harness.process import ChildProcess
from healthz.lab.figures import HostSockets, Sample

EADDRNOTAVAIL_TEXT = sockets.EADDRNOTAVAIL_TEXT
_ERROR_LINE = re.compile(r"healthz [45]\d\d error=([a-z_]+)")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def tcp_states(pid: int, remote_port: int) -> collections.Counter:
    """Sockets toward ``remote_port`` by state, in the network namespace of process ``pid``
    (IPv4 and IPv6). Empty when the process is gone."""
    return sockets.states(sockets.read(f"/proc/{pid}/net", remote_port))


def parse_stat(text: str) -> tuple[int, int, int, int]:
    """``(utime, stime, cutime, cstime)`` in clock ticks from a ``/proc/<pid>/stat`` line; the
    command name may hold spaces and parentheses, so fields are counted from the last ``)``."""
    fields = text[text.rindex(")") + 2 :].split()
    # After the name: state is field 3 of stat(5), utime field 14, so index 11 here.
    return int(fields[11]), int(fields[12]), int(fields[13]), int(fields[14])


def children(pid: int) -> list[int]:
    """The live child PIDs of ``pid``, from every one of its threads."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(p) for p in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    return found


def own_cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) of process ``pid`` alone, not its children's; None when it is gone."""
    try:
        utime, stime, _, _ = parse_stat(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, ValueError, IndexError):
        return None
    return (utime + stime) / _CLOCK_TICKS


def cpu_seconds(pid: int | None) -> float | None:
    """CPU seconds (user + system) used by process ``pid``, its reaped children and its live
    descendants. None when there is no such process."""
    if pid is None:
        return None
    total, seen, stack = 0, set(), [pid]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            total += sum(parse_stat(Path(f"/proc/{current}/stat").read_text()))
        except (OSError, ValueError, IndexError):
            if current == pid:
                return None
            continue
        stack += children(current)
    return total / _CLOCK_TICKS


class LineCounter:
    """Lines of a growing log that match ``pattern`` (bytes), counted from where the last call
    stopped: from the start of the file, or from its end at creation with ``from_end``. A line
    still being written is counted on the next call."""

    def __init__(self, logfile: Path, pattern: re.Pattern[bytes], *, from_end: bool = False) -> None:
        self.logfile, self.pattern, self.count, self.offset = Path(logfile), pattern, 0, 0
        if from_end:
            with contextlib.suppress(OSError):
                self.offset = self.logfile.stat().st_size

    def __call__(self) -> int:
        with contextlib.suppress(OSError), open(self.logfile, "rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read()
            complete = chunk.rfind(b"\n") + 1
            self.count += len(self.pattern.findall(chunk[:complete]))
            self.offset += complete
        return self.count


def attempts_pattern(address: str) -> re.Pattern[bytes]:
    """PostgreSQL's log line for a connection attempt from ``address`` (``log_connections = on``)."""
    return re.compile(rb"connection received: host=" + re.escape(address.encode()) + rb" ")


_RECEIVED = re.compile(r"connection received: host=(\S+)")
_DISCONNECTED = re.compile(r"disconnection: session time: .* host=(\S+)")


class ConnectionLog:
    """Connections PostgreSQL logged per client address (``log_connections`` and
    ``log_disconnections`` on) from a point in its log on: :meth:`mark` remembers where the log
    ends, :meth:`since_mark` reads what was written after it. Every attempt logs ``connection
    received: host=ADDRESS``; only a backend that became a session (what
    ``pg_stat_database.sessions`` counts) logs ``disconnection: ... host=ADDRESS`` when it ends, so
    read this after the sessions have ended. One refused (too many clients, reserved slots, a bad
    password) logs only the first."""

    def __init__(self, logfile: Path) -> None:
        self.logfile, self.offset = Path(logfile), 0

    def mark(self) -> None:
        try:
            self.offset = self.logfile.stat().st_size
        except OSError:
            self.offset = 0

    def since_mark(self) -> dict[str, dict[str, int]]:
        """``{address: {"received": n, "sessions": n}}``: connection attempts, and those that were sessions."""
        try:
            with open(self.logfile, "rb") as fh:
                fh.seek(self.offset)
                text = fh.read().decode(errors="replace")
        except OSError:
            return {}
        counts: dict[str, dict[str, int]] = {}
        for address in _RECEIVED.findall(text):
            counts.setdefault(address, {"received": 0, "sessions": 0})["received"] += 1
        for address in _DISCONNECTED.findall(text):
            counts.setdefault(address, {"received": 0, "sessions": 0})["sessions"] += 1
        return counts


def log_counts(text: str, own_service: bool = False) -> dict[str, int]:
    """From a service log: ``address_unavailable_lines`` (lines with the EADDRNOTAVAIL text, as
    libpq words it) and ``error_kinds``: the 499s by kind as our service logged them, and with
    ``own_service`` (a team's service, such as Django, whose log is not ours) every line with a
    driver error in libpq's words, by the kind its words give. Lines, not requests: a service may
    log one error twice."""
    kinds = collections.Counter(_ERROR_LINE.findall(text))
    if own_service:
        kinds.update(kind for kind in map(errors.kind_in_text, text.splitlines()) if kind)
    return {"address_unavailable_lines": text.count(EADDRNOTAVAIL_TEXT), "error_kinds": dict(kinds)}


def worker_restarts(service_log: str, workers: int) -> int:
    """Workers gunicorn booted beyond the ``workers`` it started with: replacements of workers that
    died or timed out."""
    return max(0, service_log.count("Booting worker with pid") - workers)


class PostgresCounters:
    """Reads ``pg_stat_database.sessions`` and client backends of database ``database`` over one
    autocommit connection opened from ``dsn`` (not counted: it is on another database, or opened
    before any baseline is taken). A connection broken by a server restart is opened again on the
    next read, so the lab's fault runs keep sampling across it."""

    SESSIONS = "SELECT sessions FROM pg_stat_database WHERE datname = %s"
    BACKENDS = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
        "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
    )

    def __init__(self, dsn: str, database: str) -> None:
        self.dsn, self.database = dsn, database
        self.conn = self._connect()

    def _connect(self) -> psycopg2.extensions.connection:
        conn = psycopg2.connect(self.dsn, application_name="healthz-probe", connect_timeout=10)
        conn.autocommit = True
        return conn

    BACKENDS_BY_ADDRESS = (
        "SELECT coalesce(host(client_addr), 'local'), count(*) FROM pg_stat_activity WHERE datname = %s "
        "AND backend_type = 'client backend' AND pid <> pg_backend_pid() GROUP BY 1"
    )

    def _rows(self, query: str) -> list[tuple]:
        """``query``'s rows for this database; a broken connection is closed, so the next read reconnects."""
        if self.conn.closed:
            self.conn = self._connect()
        try:
            with self.conn.cursor() as cur:
                cur.execute(query, (self.database,))
                return cur.fetchall()
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            self.conn.close()
            raise

    def _one(self, query: str) -> int:
        rows = self._rows(query)
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    def sessions(self) -> int:
        return self._one(self.SESSIONS)

    def backends(self) -> int:
        return self._one(self.BACKENDS)

    BACKENDS_IN_USE = (
        "SELECT count(*), count(*) FILTER (WHERE state IN ('active', 'idle in transaction')) FROM pg_stat_activity "
        "WHERE datname = %s AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
    )

    def backends_in_use(self) -> tuple[int, int]:
        """Client backends, and those of them in a statement or a transaction now (a connection a
        request holds), in one query: over a run, the mean in use over the request rate is how long a
        request holds one (Little's law), read from any service. A connection held between autocommit
        statements (Django's) shows as idle."""
        rows = self._rows(self.BACKENDS_IN_USE)
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    def backends_by_address(self) -> dict[str, int]:
        """Client backends of the database by client address (``local`` for a Unix socket)."""
        return {address: int(count) for address, count in self._rows(self.BACKENDS_BY_ADDRESS)}

    def settled_sessions(self, timeout: float = 10.0, quiet: float = 1.2, idle_quiet: float = 0.4) -> int:
        """``sessions`` once it has not moved for ``quiet`` seconds (a connected backend reports its
        counters when it goes idle, up to a second late), or ``idle_quiet`` seconds when no client
        backend is connected (one that exits reports them as it goes); or after ``timeout``."""
        deadline = time.monotonic() + timeout
        value, since = self.sessions(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.2)
            current = self.sessions()
            if current != value:
                value, since = current, time.monotonic()
            elif time.monotonic() - since >= (idle_quiet if self.backends() == 0 else quiet):
                break
        return value

    def wait_backends(self, at_most: int = 0, timeout: float = 15.0) -> int:
        """Wait until at most ``at_most`` client backends remain, or ``timeout``; return the count."""
        deadline = time.monotonic() + timeout
        while (count := self.backends()) > at_most and time.monotonic() < deadline:
            time.sleep(0.1)
        return count

    def close(self) -> None:
        self.conn.close()


class Sampler(threading.Thread):
    """Samples, every ``interval`` seconds until :meth:`stop`: time since start, sessions opened
    and client backends (``counters``), sockets toward ``db_port`` (one port or several: PostgreSQL's
    and PgBouncer's) in the namespace of the process ``netns_pid()`` returns (summed over several
    getters, one per application host, each host's also under ``hosts``), CPU seconds of each
    process in ``cpu_pids`` (name -> getter of a PID or a list of PIDs, summed), client backends by
    client address with ``by_address``, and whatever ``extra()`` returns (PgBouncer's figures).

    A probe that fails (the database restarting, a process gone) leaves its value None in that
    sample instead of stopping the sampler.
    """

    def __init__(
        self,
        counters: PostgresCounters,
        *,
        db_port: int | Sequence[int],
        netns_pid: Callable[[], int | None] | Sequence[Callable[[], int | None]],
        cpu_pids: dict[str, Callable[[], int | None | list[int | None]]],
        interval: float = 0.2,
        extra: Callable[[], dict[str, int]] | None = None,
        by_address: bool = False,
    ) -> None:
        super().__init__(name="healthz-sampler", daemon=True)
        self.counters, self.cpu_pids, self.by_address = counters, cpu_pids, by_address
        self.netns_pids = [netns_pid] if callable(netns_pid) else list(netns_pid)
        self.db_ports = [db_port] if isinstance(db_port, int) else list(db_port)
        self.extra = extra
        self.interval = interval
        self.samples: list[Sample] = []
        self._stop_event = threading.Event()
        self.started_at = time.monotonic()

    def sample(self) -> Sample:
        row: dict[str, Any] = {"t": round(time.monotonic() - self.started_at, 3), "at": round(time.time(), 3)}
        try:
            row["sessions"] = self.counters.sessions()
            row["backends"], row["in_use"] = self.counters.backends_in_use()
            if self.by_address:
                row["backends_by_address"] = self.counters.backends_by_address()
        except psycopg2.Error:
            row["sessions"] = row["backends"] = row["in_use"] = None
        hosts = [self._sockets(getter()) for getter in self.netns_pids]
        for key in ("time_wait", "established"):
            present = [getattr(h, key) for h in hosts if getattr(h, key) is not None]
            row[key] = sum(present) if present else None
        if len(hosts) > 1:
            row["hosts"] = tuple(hosts)
        row["cpu"] = {name: self._cpu(getter()) for name, getter in self.cpu_pids.items()}
        if self.extra is not None:
            try:
                extra = dict(self.extra())
            except psycopg2.Error:
                extra = {}  # PgBouncer restarting or gone: this sample goes without its figures
            row["host_opened"] = extra.pop("host_opened", None)
            row["pooler"] = extra
        return Sample(**row)

    def _sockets(self, pid: int | None) -> HostSockets:
        """The sockets toward the database's port(s) in the namespace of ``pid`` (None: not running)."""
        if not pid:
            return HostSockets(None, None)
        states: collections.Counter = collections.Counter()
        for port in self.db_ports:
            states += tcp_states(pid, port)
        return HostSockets(states.get("TIME_WAIT", 0), states.get("ESTABLISHED", 0))

    @staticmethod
    def _cpu(pids: int | None | list[int | None]) -> float | None:
        """CPU seconds of one process tree, or summed over several (None when none is readable)."""
        if not isinstance(pids, list):
            return cpu_seconds(pids)
        seconds = [v for v in (cpu_seconds(p) for p in pids) if v is not None]
        return sum(seconds) if seconds else None

    def run(self) -> None:
        self.started_at = time.monotonic()
        while not self._stop_event.is_set():
            began = time.monotonic()
            self.samples.append(self.sample())
            self._stop_event.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def stop(self) -> list[Sample]:
        """Stop sampling, take one last sample, and return them all."""
        self._stop_event.set()
        if self.is_alive():
            self.join(5)
        self.samples.append(self.sample())
        return self.samples


class DoctorProbe:
    """``healthz doctor --json`` run as a :class:`ChildProcess` where the service runs
    (``command_prefix``: the app namespace), against the service's own ``DATABASE_URL`` (passed in
    the environment, never on the command line), for ``sample`` seconds; its output in ``logfile``."""

    def __init__(self, database_url: str, sample: float, logfile: Path, *, command_prefix: Sequence[str] = ()) -> None:
        command = [*command_prefix, sys.executable, "-m", "healthz", "doctor", "--json", "--sample", f"{sample:g}"]
        self.sample = sample
        self.logfile = Path(logfile)
        self.child = ChildProcess(
            command, self.logfile, name="healthz doctor", env={**os.environ, "DATABASE_URL": database_url}
        )
        self.started = False

    @property
    def command(self) -> list[str]:
        return self.child.command

    def start(self) -> DoctorProbe:
        self.child.start()
        self.started = True
        return self

    def result(self, timeout: float = 30.0) -> dict | None:
        """The doctor's JSON with its exit status under ``"exit"``, or None when it was never
        started; ``{"exit": status, "error": ...}`` when it printed no JSON (stopped after
        ``timeout`` seconds)."""
        if not self.started:
            return None
        status = self.child.wait(timeout)
        if status is None:
            status = self.child.stop(grace=1)
        text = self.child.log_text()
        try:
            data = json.loads(text[text.index("{") :])
        except ValueError:
            return {"exit": status, "error": text[-300:].strip() or "no output"}
        return {**data, "exit": status}

    def stop(self) -> None:
        self.child.stop(grace=1)


def measured_observation(
    samples: list[Sample],
    start: float,
    end: float,
    *,
    port_range: tuple[int, int] | None,
    max_connections: int,
    reserved_connections: int,
    opened_key: str = "sessions",
    transport: str = "tcp",
) -> Observation | None:
    """What the lab's own probes saw between unix times ``start`` and ``end``, as the doctor's
    :class:`~healthz.doctor.Observation`: connections opened from the counter ``opened_key``
    (PostgreSQL's sessions, or a log's count of the first host's connections), sockets held and in
    TIME_WAIT from the first app namespace's table, the peak of client backends;
    a port range found full counts as the doctor's failed connect(). None without two samples in
    the window."""
    # The doctor ran on the first application host: its sockets, not every host's.
    inside = [s.on_first_host() for s in samples if start <= s.at <= end and s.sessions is not None]
    if len(inside) < 2:
        return None
    first, last = inside[0], inside[-1]
    sessions = opened = int(last.sessions - first.sessions)
    if opened_key != "sessions":
        if getattr(first, opened_key) is None or getattr(last, opened_key) is None:
            return None
        opened = int(getattr(last, opened_key) - getattr(first, opened_key))
    ports = port_range[1] - port_range[0] + 1 if port_range else None
    held = peak((s.time_wait or 0) + (s.established or 0) for s in inside)
    # What the doctor learns when its own connect() fails: every port of the range is taken.
    full = (
        f"the port range was full ({held:,} sockets of {ports:,} ports)"
        if ports and held is not None and held >= ports
        else None
    )
    return Observation(
        database="(the lab's probes)",
        transport=transport,
        port_range=port_range,
        tcp_tw_reuse=None,
        window=round(last.at - first.at, 3),
        opened=opened if transport == "tcp" else None,
        # As the doctor reads them: at the end of its window.
        sockets_by_state={"ESTABLISHED": int(last.established or 0), "TIME_WAIT": int(last.time_wait or 0)},
        sessions_opened=sessions,
        max_connections=max_connections,
        reserved_connections=reserved_connections,
        backends=[{"application_name": "", "client_addr": "", "count": int(peak(s.backends for s in inside) or 0)}],
        unreachable=full,
    )


#: The histograms of ``/metrics`` the lab reads: the hold time and the checkout wait (which includes connecting).
POOL_TIMES = {"hold": "healthz_pool_connection_held_seconds", "checkout": "healthz_pool_checkout_wait_seconds"}
_SERIES = re.compile(r"^(\w+)_(sum|count) ([0-9.eE+-]+)$", re.M)


def pool_totals(exposition: str) -> dict[str, float]:
    """The ``_sum`` and ``_count`` of each :data:`POOL_TIMES` histogram in Prometheus text, keyed
    ``hold_sum``, ``hold_count`` and so on; none for a text without them (not our service)."""
    names = {metric: key for key, metric in POOL_TIMES.items()}
    return {f"{names[m[1]]}_{m[2]}": float(m[3]) for m in _SERIES.finditer(exposition) if m[1] in names}


def pool_times(before: dict[str, float], after: dict[str, float]) -> dict[str, float | None]:
    """Mean milliseconds per request between two :func:`pool_totals`: ``hold_ms`` and
    ``checkout_ms``; None where a histogram is missing or saw no request."""
    out: dict[str, float | None] = {}
    for key in POOL_TIMES:
        count = after.get(f"{key}_count", 0) - before.get(f"{key}_count", 0)
        total = after.get(f"{key}_sum", 0) - before.get(f"{key}_sum", 0)
        out[f"{key}_ms"] = total / count * 1000 if f"{key}_count" in after and count > 0 else None
    return out


def peak(values: Iterable[float | int | None]) -> float | int | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def mean(values: Iterable[float | int | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None
