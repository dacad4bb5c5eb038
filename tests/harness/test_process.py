"""ChildProcess on real processes: start, readiness with a bound, a group that ignores SIGINT and
SIGTERM stopped all the same, and nothing left running."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from healthz.harness.process import ChildProcess, ProcessError, group_alive

# A parent that ignores SIGINT and SIGTERM, with a child that does too; both print, then sleep.
STUBBORN = """
import signal, subprocess, sys, time
for s in (signal.SIGINT, signal.SIGTERM):
    signal.signal(s, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); signal.signal(signal.SIGTERM, signal.SIG_IGN); print('child', flush=True); time.sleep(600)"])
print("parent", child.pid, flush=True)
time.sleep(600)
"""


def test_a_child_logs_to_its_file_and_is_ready_when_it_says_so(tmp_path):
    marker = tmp_path / "ready"
    code = f"import pathlib, time; print('hello', flush=True); time.sleep(0.3); pathlib.Path({str(marker)!r}).touch(); time.sleep(600)"
    with ChildProcess([sys.executable, "-c", code], tmp_path / "child.log", name="sleeper") as child:
        child.wait_ready(marker.exists, timeout=10)
        assert child.running() and "hello" in child.log_text()
        pgid = child.pid
    assert not child.running() and not group_alive(pgid)
    assert child.returncode == -signal.SIGINT


def test_readiness_is_bounded_and_a_child_that_exits_first_says_why(tmp_path):
    never = ChildProcess([sys.executable, "-c", "import time; time.sleep(600)"], tmp_path / "never.log").start()
    began = time.monotonic()
    with pytest.raises(ProcessError, match="was not ready within 0.5 s"):
        never.wait_ready(lambda: False, timeout=0.5)
    assert time.monotonic() - began < 5 and not never.running() and not group_alive(never.pid)
    password = "s3cret-pw"
    failing = ChildProcess(
        [sys.executable, "-c", f"print('postgresql://u:{password}@db/x refused'); raise SystemExit(3)"],
        tmp_path / "failing.log",
        name="failing",
    ).start()
    with pytest.raises(ProcessError, match=r"failing exited with status 3: postgresql://u:\*\*\*@db/x") as raised:
        failing.wait_ready(lambda: False, timeout=10)
    assert password not in str(raised.value)


def test_a_group_that_ignores_sigint_and_sigterm_is_killed_whole(tmp_path):
    child = ChildProcess([sys.executable, "-c", STUBBORN], tmp_path / "stubborn.log").start()
    child.wait_ready(lambda: "child" in child.log_text() and "parent" in child.log_text(), timeout=10)
    grandchild = int(child.log_text().split("parent ", 1)[1].split()[0])
    began = time.monotonic()
    status = child.stop(grace=0.5)
    assert status == -signal.SIGKILL and 1.0 <= time.monotonic() - began < 5
    assert not group_alive(child.pid)
    assert _gone(grandchild), "the child's own child went with the group"
    assert child.stop() == -signal.SIGKILL, "stopping twice is harmless"


def _gone(pid: int) -> bool:
    """No such process, or a zombie left for its new parent to reap."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_a_command_that_cannot_start_is_one_error(tmp_path):
    with pytest.raises(ProcessError, match="could not be started: No such file or directory"):
        ChildProcess([str(tmp_path / "missing")], tmp_path / "m.log").start()
    with pytest.raises(ValueError, match="end with SIGKILL"):
        ChildProcess(["true"], tmp_path / "t.log", stop_signals=(signal.SIGTERM,))
