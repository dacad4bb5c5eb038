"""wrk, the independent C load generator: found, or fetched from Debian without root; run with a
fixed duration and connection count; its summary read as JSON from a Lua ``done`` hook."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from healthz.lab import debian

#: Where a fetched wrk is unpacked.
TOOLS_DIR = debian.TOOLS_ROOT / "wrk"
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
            raw = json.loads(line[len(MARKER) :])
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
        out = subprocess.run(
            [*self.command, "--version"], capture_output=True, text=True, env={**os.environ, **self.env}
        )
        return (out.stdout or out.stderr).splitlines()[0].strip() if (out.stdout or out.stderr) else "wrk"

    def run(
        self,
        url: str,
        *,
        connections: int,
        seconds: float,
        threads: int = 1,
        timeout: float = 5.0,
        reconnect_every: int = 0,
        headers: Sequence[str] = (),
    ) -> WrkResult:
        """wrk on ``url`` for ``seconds`` (whole seconds: wrk takes no fractions; at least 1)
        with ``connections`` kept-alive connections; with ``reconnect_every`` N, every Nth
        request closes its connection and wrk opens a new one."""
        seconds = max(1, round(seconds))
        with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="healthz-wrk-") as script:
            script.write(REPORT_LUA)
            if reconnect_every:
                script.write(RECONNECT_LUA.replace("RECONNECT_EVERY", str(int(reconnect_every))))
            script.flush()
            command = [
                *self.command,
                f"-t{threads}",
                f"-c{connections}",
                f"-d{seconds}s",
                f"--timeout={max(1, round(timeout))}s",
                "-s",
                script.name,
                *(arg for header in headers for arg in ("-H", header)),
                url,
            ]
            result = subprocess.run(
                command, capture_output=True, text=True, env={**os.environ, **self.env}, timeout=seconds + timeout + 60
            )
        if result.returncode != 0:
            raise WrkError(
                f"wrk exited with status {result.returncode}: {(result.stderr or result.stdout).strip()[-500:]}"
            )
        return parse_output(result.stdout)


def find(root: Path = TOOLS_DIR) -> Wrk:
    """wrk from ``$WRK``, else ``PATH``, else one fetched earlier into ``root``, else fetched from
    Debian (:func:`healthz.lab.debian.find`)."""
    try:
        program = debian.find("wrk", variable="WRK", packages=PACKAGES, binary="usr/bin/wrk", root=root)
    except debian.FetchError as exc:
        raise WrkError(str(exc)) from None
    return Wrk(program.command, program.env, program.source)
