"""One way to start and stop a child process: :class:`ChildProcess`.

Every program the lab, the faults, the bench and their tests run (PostgreSQL, gunicorn, a team's
command, PgBouncer, locust, the doctor probe) is one of these: started in a process group of its own
so that stopping it stops whatever it started (gunicorn's workers, a shell's children), its output
appended to a log file, readiness waited for with a bound, and stopped by :meth:`ChildProcess.stop`
with a sequence of signals, ``grace`` seconds apart, each sent only while something of the group is
left: SIGINT, SIGTERM, then SIGKILL unless the program asks for another first signal (gunicorn's
graceful stop is SIGTERM; SIGINT is its quick shutdown).
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from healthz.config import mask_password

#: The default stop: ask politely, then firmly, then kill.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)


class ProcessError(RuntimeError):
    """A child could not start, exited or was not ready in time; the message carries the end of its
    log, masked. ``os_error`` is the OSError of a child that could not start at all."""

    def __init__(self, message: str, os_error: OSError | None = None) -> None:
        super().__init__(message)
        self.os_error = os_error


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is left (zombies aside: reaped by their parent)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member that changed its user (PostgreSQL dropping root): still ours
        return True
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def kill_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` to group ``pgid``; False when the group is gone."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    return True


def raise_open_files(needed: int) -> None:
    """Lift this process's soft open-file limit to ``needed`` (up to the hard limit), for thousands of
    connections at once; the children it starts (wrk, gunicorn) inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed and (hard == resource.RLIM_INFINITY or hard > soft):
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (needed if hard == resource.RLIM_INFINITY else min(needed, hard), hard)
        )


def read_log(path: Path) -> str:
    """A child's log as text; empty when there is none yet."""
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def log_tail(path: Path, lines: int = 15, secrets: Sequence[str] = ()) -> str:
    """The last ``lines`` lines of the log at ``path``, URL passwords and ``secrets`` masked."""
    text = mask_password("\n".join(read_log(path).splitlines()[-lines:]))
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _unignore_sigint() -> None:
    """A shell without job control starts a background job with SIGINT ignored, and an ignored
    signal stays ignored across exec: every child would sit through the SIGINT that stops it (locust
    ran on for the whole grace). A handler of ours is reset to the default in the child instead."""
    try:
        if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:  # not the main thread: the disposition is left as it is
        pass


class ChildProcess:
    """``command`` as our child, the leader of a process group of its own, with its output (stdout
    and stderr) appended to ``logfile``.

    ``env`` replaces the environment (None: this process's), ``cwd`` is where it runs, ``run_as``
    holds Popen's ``user``/``group``/``extra_groups`` for a program that must not run as root,
    ``stop_signals`` the signals :meth:`stop` sends in turn (to the whole group, or with
    ``signal_group`` False to the command alone but for the last, SIGKILL: for a server that stops
    its own children in order, as PostgreSQL's postmaster and gunicorn's arbiter do), and
    ``secrets`` strings masked in :meth:`log_tail` besides URL passwords. Use it as a context manager: entering starts it,
    leaving stops it, on every exit path."""

    def __init__(
        self,
        command: Sequence[str],
        logfile: Path,
        *,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
        run_as: Mapping[str, Any] | None = None,
        stop_signals: Sequence[int] = STOP_SIGNALS,
        signal_group: bool = True,
        secrets: Sequence[str] = (),
    ) -> None:
        if not command:
            raise ValueError("a child process needs a command")
        if not stop_signals or stop_signals[-1] != signal.SIGKILL:
            raise ValueError("stop_signals must end with SIGKILL, so that stop() always ends the group")
        self.command = list(command)
        self.logfile = Path(logfile)
        self.name = name or Path(self.command[0]).name
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.run_as = dict(run_as or {})
        self.stop_signals = tuple(stop_signals)
        self.signal_group = signal_group
        self.secrets = [s for s in secrets if s]
        self.process: subprocess.Popen | None = None

    # -- life --------------------------------------------------------------------------------
    def start(self) -> ChildProcess:
        """Start the command; :class:`ProcessError` when it cannot be started at all (not found,
        not executable, a ``cwd`` that does not exist)."""
        if self.process is not None:
            raise ProcessError(f"{self.name} was started already")
        _unignore_sigint()
        self.logfile.parent.mkdir(parents=True, exist_ok=True)
        with open(self.logfile, "ab") as log:
            try:
                self.process = subprocess.Popen(
                    self.command,
                    env=self.env,
                    cwd=self.cwd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    **self.run_as,
                )
            except OSError as exc:
                raise ProcessError(f"{self.name} could not be started: {exc.strerror or exc}", exc) from None
        return self

    def wait_ready(self, ready: Callable[[], bool], timeout: float, interval: float = 0.1) -> None:
        """Call ``ready`` every ``interval`` seconds until it is true; :class:`ProcessError` with the
        log's end when the process exits first or ``timeout`` seconds pass (then it is stopped)."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running():
                raise ProcessError(f"{self.name} exited with status {self.returncode}: {self.log_tail()}")
            if ready():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise ProcessError(f"{self.name} was not ready within {timeout:g} s: {self.log_tail()}")
            time.sleep(interval)

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for the process to end by itself; its status, or None."""
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def send(self, signum: int) -> bool:
        """Send ``signum`` to the process alone (not its group); False when it has ended."""
        if not self.running():
            return False
        self.process.send_signal(signum)
        return True

    def stop(self, grace: float = 10.0, signals: Sequence[int] | None = None) -> int | None:
        """Stop the whole group: each of ``signals`` (default :attr:`stop_signals`) in turn,
        ``grace`` seconds apart, sent only while something of the group is left; the command's exit
        status (None if never started). Stopping twice is harmless."""
        if self.process is None:
            return None
        pgid = self.process.pid
        signals = tuple(signals or self.stop_signals)
        for signum in signals:
            alone = not self.signal_group and signum != signal.SIGKILL
            sent = self.send(signum) if alone else kill_group(pgid, signum)
            if (not sent and not group_alive(pgid)) or self._group_ends(pgid, grace):
                break
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            pass
        return self.process.returncode

    def _group_ends(self, pgid: int, within: float) -> bool:
        deadline = time.monotonic() + within
        while True:
            if self.process.poll() is not None and not group_alive(pgid):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    # -- state -------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        return read_log(self.logfile)

    def log_tail(self, lines: int = 15) -> str:
        """The last ``lines`` lines of the log, URL passwords and :attr:`secrets` masked."""
        return log_tail(self.logfile, lines, self.secrets)

    def __enter__(self) -> ChildProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
