"""A fixed-rate HTTP driver: requests sent at a constant arrival rate, whatever the answers do, each
timed from the moment it was meant to be sent (HdrHistogram), so a stall shows in the latency of
every request that should have gone out during it: no coordinated omission.

wrk and locust are closed-model: a connection sends its next request only once the last is
answered, so under saturation they slow down with the server and the queue's wait never shows in
their latency. Debian packages no wrk2; this driver is asyncio on raw keep-alive connections,
run in a process of its own (``python -m healthz.bench.rate``) so that it has a core to itself.

Request ``i`` is due at ``start + i / rate``. It takes an idle connection, or opens one up to
``connections``, else waits for one; that wait counts in its latency. A request sent more than
:data:`LATE_MS` after it was due is *late* (the driver could not keep the schedule: every
connection was busy); one not answered within ``timeout`` of being due, or still unanswered when the
run ends, is *dropped*. Each connection is closed after ``reconnect_every`` requests so that the
connections spread over gunicorn's workers, as the wrk runs do.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
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

    @property
    def throughput(self) -> float:
        """Answered requests per second, from the first due time to the last answer: the rate
        when the server keeps up, its capacity when it does not."""
        return self.answered / self.elapsed if self.elapsed > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "throughput": round(self.throughput, 1)}


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.used = reader, writer, 0

    def close(self) -> None:
        self.writer.close()


class Driver:
    """Sends ``GET url`` at ``rate`` per second for ``seconds`` over at most ``connections``."""

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
        self.answered = self.failed = self.late = self.dropped = self.opened = 0
        self.start = self.last_answer = 0.0
        self._idle: list[_Connection] = []
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self._open = 0

    def run(self) -> RateResult:
        return asyncio.run(self._run())

    async def _run(self) -> RateResult:
        loop = asyncio.get_running_loop()
        due = int(self.rate * self.seconds)
        start = self.start = self.last_answer = loop.time() + 0.05
        tasks = []
        for i in range(due):
            at = start + i / self.rate
            delay = at - loop.time()
            if delay > 0.0005:
                await asyncio.sleep(delay)
            tasks.append(loop.create_task(self._one(at)))
        # Every request gets ``timeout`` from its due time; the last are due at the schedule's end.
        done, pending = await asyncio.wait(tasks, timeout=max(0.0, start + self.seconds + self.timeout - loop.time()))
        for task in pending:
            task.cancel()
        self.dropped += len(pending)
        await asyncio.gather(*pending, return_exceptions=True)
        for conn in self._idle:
            conn.close()
        return self._result(due)

    async def _connection(self) -> _Connection:
        """An idle connection, a new one while fewer than ``connections`` are open, else the next
        one released (first come, first served)."""
        while True:
            if self._idle:
                return self._idle.pop()
            if self._open < self.connections:
                self._open += 1
                try:
                    reader, writer = await asyncio.open_connection(self.host, self.port)
                except BaseException:
                    self._release(None)
                    raise
                self.opened += 1
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return _Connection(reader, writer)
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                conn = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():  # handed over as it was cancelled: pass it on
                    self._release(waiter.result())
                raise
            if conn is not None:
                return conn  # else a slot was freed: open a connection in it

    def _release(self, conn: _Connection | None) -> None:
        """Hand ``conn`` to the first waiting request, or keep it idle. None: a connection was
        closed (or never opened) and its slot is free; the first waiter may open one in it."""
        if conn is None:
            self._open -= 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if conn is not None:
            self._idle.append(conn)

    async def _one(self, at: float) -> None:
        loop = asyncio.get_running_loop()
        conn = None
        try:
            conn = await asyncio.wait_for(self._connection(), max(0.001, at + self.timeout - loop.time()))
            sent = loop.time()
            if (sent - at) * 1000 > LATE_MS:
                self.late += 1
            conn.writer.write(self.request)
            status, close = await asyncio.wait_for(_response(conn.reader), max(0.001, at + self.timeout - sent))
        except asyncio.TimeoutError:
            self.dropped += 1
            self._release(_closed(conn))
            return
        except (OSError, asyncio.IncompleteReadError, ValueError):
            self.failed += 1
            self._release(_closed(conn))
            return
        except asyncio.CancelledError:
            self._release(_closed(conn))
            raise
        now = self.last_answer = loop.time()
        self.due_latency.record_value(max(1, int((now - at) * 1e6)))
        self.sent_latency.record_value(max(1, int((now - sent) * 1e6)))
        self.answered += 1
        if not 200 <= status < 300:
            self.failed += 1
        conn.used += 1
        self._release(_closed(conn) if close or conn.used >= self.reconnect_every else conn)

    def _result(self, due: int) -> RateResult:
        def ms(histogram, q: float) -> float | None:
            return round(histogram.get_value_at_percentile(q) / 1000, 3) if histogram.get_total_count() else None

        return RateResult(
            rate=self.rate,
            seconds=self.seconds,
            elapsed=round(self.last_answer - self.start, 3),
            due=due,
            answered=self.answered,
            failed=self.failed,
            late=self.late,
            dropped=self.dropped,
            p50_ms=ms(self.due_latency, 50),
            p99_ms=ms(self.due_latency, 99),
            p999_ms=ms(self.due_latency, 99.9),
            max_ms=ms(self.due_latency, 100),
            sent_p99_ms=ms(self.sent_latency, 99),
            connections_opened=self.opened,
        )


def _closed(conn: _Connection | None) -> None:
    if conn is not None:
        conn.close()
    return None


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
