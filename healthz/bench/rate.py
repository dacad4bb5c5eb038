"""A fixed-rate HTTP driver: requests sent at a constant arrival rate, whatever the answers do, each
timed from the moment it was meant to be sent (HdrHistogram), so a stall shows in the latency of
every request that should have gone out during it: no coordinated omission.

wrk and locust are closed-model: a connection sends its next request only once the last is
answered, so under saturation they slow down with the server and the queue's wait never shows in
their latency. Debian packages no wrk2; this driver is asyncio on raw keep-alive connections,
run in a process of its own (``python -m healthz.bench.rate``) so that it has a core to itself.

Request ``i`` is due at ``start + i / rate``. A free connection takes it, or a new one up to
``connections``; when every connection is busy it waits, and that wait counts in its latency. A
request sent more than :data:`LATE_MS` after it was due is *late* (the driver could not keep the
schedule: every connection was busy); one still unanswered ``timeout`` seconds after the schedule's
end is *dropped*. Each connection is closed after ``reconnect_every`` requests so that the
connections spread over gunicorn's workers, as the wrk runs do. uvloop, when installed, runs the
loop: the driver then costs a shared machine less of the CPU the service needs.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import socket
import subprocess
import sys
import time
from typing import Any
from urllib.parse import urlsplit

#: A request sent this long after it was due is late.
LATE_MS = 10.0
#: Latencies recorded from 1 µs to 100 s, to 3 significant digits.
HISTOGRAM_RANGE = (1, 100_000_000, 3)


@dataclasses.dataclass(frozen=True)
class RateResult:
    """One fixed-rate run. Latencies in ms from each request's due time (``p50_ms``...) and, for
    comparison, from when it was actually sent (``sent_p99_ms``: what a closed-model tool reports)."""

    rate: float
    seconds: float
    #: From the first request's due time to the last answer: what the throughput is over.
    elapsed: float
    due: int
    answered: int
    failed: int  # answered with a status other than 2xx, or the connection failed
    late: int
    dropped: int
    p50_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    max_ms: float | None
    sent_p99_ms: float | None
    connections_opened: int
    #: The driver's own CPU per answered request, from the schedule's start (its imports aside).
    cpu_us_per_request: float | None = None

    @property
    def throughput(self) -> float:
        """Answered requests per second, from the first due time to the last answer: the rate
        when the server keeps up, its capacity when it does not."""
        return self.answered / self.elapsed if self.elapsed > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "throughput": round(self.throughput, 1)}


class Driver:
    """Sends ``GET url`` at ``rate`` per second for ``seconds`` over at most ``connections``.

    Like wrk2, each connection is a loop: take the next due request, wait until it is due (no wait
    when it is already late), send it, read the answer. A request taken late, because every
    connection was busy, still counts from its due time. Connections open as the schedule needs
    them; a connection closes after ``reconnect_every`` answers and its loop opens a new one. When
    the schedule has ended and ``timeout`` more seconds passed, every request not answered yet is
    dropped (no timer per request: timers would cost the driver more than the requests)."""

    def __init__(
        self,
        url: str,
        rate: float,
        seconds: float,
        connections: int = 1000,
        timeout: float = 10.0,
        reconnect_every: int = 100,
    ) -> None:
        from hdrh.histogram import HdrHistogram

        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.request = f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode()
        self.rate, self.seconds, self.connections = rate, seconds, connections
        self.timeout, self.reconnect_every = timeout, reconnect_every
        self.due_latency = HdrHistogram(*HISTOGRAM_RANGE)
        self.sent_latency = HdrHistogram(*HISTOGRAM_RANGE)
        self.answered = self.failed = self.errors = self.late = self.opened = 0
        self.start = self.last_answer = self.cpu_started = 0.0
        self.due = int(rate * seconds)
        self._next = 0  # the next request to take
        self._idle = 0  # loops waiting for a request to fall due

    def run(self) -> RateResult:
        try:
            import uvloop  # the faster loop leaves the service more of a shared machine's CPU
        except ImportError:
            return asyncio.run(self._run())
        if hasattr(uvloop, "run"):
            return uvloop.run(self._run())
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        return asyncio.run(self._run())

    async def _run(self) -> RateResult:
        loop = asyncio.get_running_loop()
        self.start = self.last_answer = loop.time() + 0.05
        self.cpu_started = time.process_time()
        loops: list[asyncio.Task] = [loop.create_task(self._loop())]
        end = self.start + self.seconds + self.timeout
        # A new connection loop whenever a request falls due and none is free to take it.
        while self._next < self.due and loop.time() < end:
            if self._idle == 0 and len(loops) < self.connections:
                loops.append(loop.create_task(self._loop()))
            await asyncio.sleep(min(0.002, max(0.0, self.start + self._next / self.rate - loop.time())))
        await asyncio.wait(loops, timeout=max(0.0, end - loop.time()))
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        return self._result()

    async def _loop(self) -> None:
        """One connection's loop: its requests one after another, on the schedule."""
        loop = asyncio.get_running_loop()
        reader = writer = None
        used = 0
        try:
            while self._next < self.due:
                i, self._next = self._next, self._next + 1
                at = self.start + i / self.rate
                wait = at - loop.time()
                if wait > 0:
                    self._idle += 1
                    try:
                        await asyncio.sleep(wait)
                    finally:
                        self._idle -= 1
                if (loop.time() - at) * 1000 > LATE_MS:
                    self.late += 1
                try:
                    if writer is None:
                        reader, writer = await self._open()
                    sent = loop.time()
                    writer.write(self.request)
                    status, close = await _response(reader)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    self.errors += 1
                    self.failed += 1
                    if writer is not None:
                        writer.close()
                    reader = writer = None
                    continue
                now = self.last_answer = loop.time()
                self.due_latency.record_value(max(1, int((now - at) * 1e6)))
                self.sent_latency.record_value(max(1, int((now - sent) * 1e6)))
                self.answered += 1
                if not 200 <= status < 300:
                    self.failed += 1
                used += 1
                if close or used >= self.reconnect_every:
                    writer.close()
                    reader = writer = None
                    used = 0
        finally:
            if writer is not None:
                writer.close()

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self.opened += 1
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return reader, writer

    def _result(self) -> RateResult:
        def ms(histogram, q: float) -> float | None:
            return round(histogram.get_value_at_percentile(q) / 1000, 3) if histogram.get_total_count() else None

        return RateResult(
            rate=self.rate,
            seconds=self.seconds,
            elapsed=round(self.last_answer - self.start, 3),
            due=self.due,
            answered=self.answered,
            failed=self.failed,
            late=self.late,
            # Due and neither answered nor failed by the end: still waiting to be sent, or in flight.
            dropped=self.due - self.answered - self.errors,
            p50_ms=ms(self.due_latency, 50),
            p99_ms=ms(self.due_latency, 99),
            p999_ms=ms(self.due_latency, 99.9),
            max_ms=ms(self.due_latency, 100),
            sent_p99_ms=ms(self.sent_latency, 99),
            connections_opened=self.opened,
            cpu_us_per_request=round(1e6 * (time.process_time() - self.cpu_started) / self.answered, 1)
            if self.answered
            else None,
        )


async def _response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one HTTP/1.1 response with a Content-Length body: ``(status, whether the server closes)``."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, close = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            close = value.strip().lower() == b"close"
    if length:
        await reader.readexactly(length)
    return status, close


def run_process(
    url: str, rate: float, seconds: float, connections: int, timeout: float = 10.0, reconnect_every: int = 100
) -> RateResult:
    """:class:`Driver` in a process of its own (a core to itself, not this one's GIL); raises
    ``RuntimeError`` with its stderr when it fails."""
    command = [
        sys.executable,
        "-m",
        "healthz.bench.rate",
        url,
        *("--rate", f"{rate:.3f}", "--duration", f"{seconds:g}", "--connections", str(connections)),
        *("--timeout", f"{timeout:g}", "--reconnect-every", str(reconnect_every)),
    ]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + timeout + 60)
    if out.returncode != 0:
        raise RuntimeError(f"the fixed-rate driver failed: {out.stderr.strip()[-500:]}")
    data = json.loads(out.stdout)
    return RateResult(**{f.name: data[f.name] for f in dataclasses.fields(RateResult)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m healthz.bench.rate", description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, required=True, help="seconds of schedule")
    parser.add_argument("--connections", type=int, default=1000, help="most connections open at once")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds from its due time to answer")
    parser.add_argument("--reconnect-every", type=int, default=100)
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.connections < 1:
        parser.error("--rate, --duration and --connections must be positive")
    began = time.monotonic()
    result = Driver(args.url, args.rate, args.duration, args.connections, args.timeout, args.reconnect_every).run()
    json.dump({**result.to_dict(), "wall_seconds": round(time.monotonic() - began, 2)}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
