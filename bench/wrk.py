"""wrk, the independent C load generator: found, or fetched from Debian without root; run with a
fixed duration and connection count; its summary read as JSON from a Lua ``done`` hook."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

#: Where a fetched wrk is unpacked: inside the project's venv, so ``make clean`` removes it.
TOOLS_DIR = Path(__file__).resolve().parents[1] / ".venv" / "wrk"
#: wrk and the LuaJIT it links, as Debian packages them.
PACKAGES = ("wrk", "libluajit-5.1-2", "libluajit-5.1-common")
MARKER = "WRK_JSON "

# wrk calls done() once, after every thread has stopped; latency is in microseconds.
REPORT_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, "status": %d, ' ..
    '"timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\\n',
    "MARKER", summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
""".replace("MARKER", MARKER)


# Every Nth request of a thread asks the server to close its connection; wrk reconnects at
# once, and whichever worker is least busy accepts the new one. Without it, the connections
# opened in the first millisecond stay with whichever worker won the accept race, often all of
# them with one worker, and a run measures that race rather than the service.
RECONNECT_LUA = """
local every, sent, normal, closing = RECONNECT_EVERY, 0, nil, nil
init = function(args)
  normal = wrk.format()
  closing = wrk.format(nil, nil, {["Connection"] = "close"})
end
request = function()
  sent = sent + 1
  if sent % every == 0 then return closing end
  return normal
end
"""


class WrkError(RuntimeError):
    """wrk is missing and could not be fetched, or a run gave no summary; the message says why."""


@dataclasses.dataclass(frozen=True)
class WrkResult:
    """One wrk run. ``requests`` counts completed responses, of any status; ``failed`` counts
    socket errors (connect, read, write), timeouts and responses other than 2xx or 3xx."""

    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def to_dict(self) -> dict[str, object]:
        return {**dataclasses.asdict(self), "rps": round(self.rps, 1), "failed": self.failed}


def parse_output(stdout: str) -> WrkResult:
    """The :class:`WrkResult` in wrk's output (the line :data:`REPORT_LUA` writes)."""
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            raw = json.loads(line[len(MARKER):])
            return WrkResult(
                requests=raw["requests"],
                seconds=raw["duration_us"] / 1e6,
                p50_ms=raw["p50_us"] / 1000,
                p90_ms=raw["p90_us"] / 1000,
                p99_ms=raw["p99_us"] / 1000,
                max_ms=raw["max_us"] / 1000,
                errors={kind: raw[kind] for kind in ("connect", "read", "write", "timeout", "status")},
            )
    raise WrkError(f"wrk printed no summary: {stdout.strip()[-500:]}")


@dataclasses.dataclass(frozen=True)
class Wrk:
    """A runnable wrk: ``command`` plus the environment it needs (a fetched one needs its LuaJIT)."""

    command: tuple[str, ...]
    env: dict[str, str]
    source: str

    def version(self) -> str:
        out = subprocess.run([*self.command, "--version"], capture_output=True, text=True, env={**os.environ, **self.env})
        return (out.stdout or out.stderr).splitlines()[0].strip() if (out.stdout or out.stderr) else "wrk"

    def run(self, url: str, *, connections: int, seconds: float, threads: int = 1, timeout: float = 5.0,
            reconnect_every: int = 0, headers: Sequence[str] = ()) -> WrkResult:  # fmt: skip
        """wrk on ``url`` for ``seconds`` (whole seconds: wrk takes no fractions; at least 1)
        with ``connections`` kept-alive connections; with ``reconnect_every`` N, every Nth
        request closes its connection and wrk opens a new one."""
        seconds = max(1, round(seconds))
        with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="healthz-wrk-") as script:
            script.write(REPORT_LUA)
            if reconnect_every:
                script.write(RECONNECT_LUA.replace("RECONNECT_EVERY", str(int(reconnect_every))))
            script.flush()
            command = [*self.command, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", f"--timeout={max(1, round(timeout))}s",
                       "-s", script.name, *(arg for header in headers for arg in ("-H", header)), url]  # fmt: skip
            result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **self.env},
                                    timeout=seconds + timeout + 60)  # fmt: skip
        if result.returncode != 0:
            raise WrkError(f"wrk exited with status {result.returncode}: {(result.stderr or result.stdout).strip()[-500:]}")
        return parse_output(result.stdout)


def _unpacked(root: Path) -> Wrk | None:
    binary = root / "usr" / "bin" / "wrk"
    if not binary.exists():
        return None
    libdirs = sorted(str(p) for p in (root / "usr" / "lib").glob("*-linux-gnu"))
    return Wrk((str(binary),), {"LD_LIBRARY_PATH": os.pathsep.join(libdirs)}, f"Debian package, unpacked in {root}")


def fetch(root: Path = TOOLS_DIR) -> Wrk:
    """Download wrk's Debian packages with ``apt-get download`` (no root needed) and unpack them
    into ``root`` with ``dpkg-deb -x``; nothing is installed on the system."""
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        raise WrkError("wrk is not installed and this machine has no apt-get to fetch it: install wrk, or set WRK to its path")
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="healthz-wrk-debs-") as debs:
        result = subprocess.run(["apt-get", "download", *PACKAGES], cwd=debs, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise WrkError(f"apt-get download {' '.join(PACKAGES)} failed: {result.stderr.strip()[-500:]}; install wrk, or set WRK")
        for deb in sorted(Path(debs).glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, capture_output=True, timeout=120)
    found = _unpacked(root)
    if found is None:
        raise WrkError(f"the wrk package unpacked into {root} holds no usr/bin/wrk")
    return found


def find(root: Path = TOOLS_DIR) -> Wrk:
    """wrk from ``$WRK``, else ``PATH``, else one fetched earlier into ``root``, else :func:`fetch`."""
    explicit = os.environ.get("WRK")
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise WrkError(f"WRK={explicit} is not an executable file")
        return Wrk((explicit,), {}, "WRK")
    on_path = shutil.which("wrk")
    if on_path:
        return Wrk((on_path,), {}, "PATH")
    return _unpacked(root) or fetch(root)
