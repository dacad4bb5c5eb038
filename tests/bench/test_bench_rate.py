"""The fixed-rate driver against a real HTTP server of known latency: it keeps its schedule, times
each request from when it was due, and a stall shows in the latency of every request due during it
(where timing from the send, as a closed-model tool does, hides it)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from healthz.bench import rate


class _Server:
    """Answers every GET after ``delay`` seconds, and holds every answer during a stall."""

    def __init__(self, delay: float) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                time.sleep(server.delay)
                while time.monotonic() < server.stalled_until:
                    time.sleep(0.005)
                body = b'{"status":"ok"}\n'
                # One write, as gunicorn answers: headers and body apart would wait on delayed ACKs.
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

            def log_message(self, *args) -> None:
                pass

        self.delay, self.stalled_until = delay, 0.0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/api/v1/livez/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stall(self, after: float, seconds: float) -> None:
        def later() -> None:
            time.sleep(after)
            self.stalled_until = time.monotonic() + seconds

        threading.Thread(target=later, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    made: list[_Server] = []

    def make(delay: float) -> _Server:
        made.append(_Server(delay))
        return made[-1]

    yield make
    for s in made:
        s.close()


@pytest.mark.serial  # lateness is counted against the clock: a test beside it stalled it a second here
def test_keeps_its_rate_and_times_a_known_latency(server):
    s = server(0.02)
    result = rate.Driver(s.url, rate=100, seconds=2, connections=20).run()
    assert (result.due, result.answered, result.failed, result.dropped) == (200, 200, 0, 0)
    # A busy machine may hold the driver's loop back now and then: a few late, never many. The
    # histogram keeps 3 significant digits, so a 20 ms answer may read 19.99 ms.
    assert result.late <= result.due // 10 and 19.9 <= result.p50_ms < 40 and result.p99_ms < 200
    assert result.connections_opened <= 20 and result.throughput == pytest.approx(100, rel=0.05)


def test_a_stall_is_in_the_latency_of_every_request_due_during_it(server):
    s = server(0.005)
    s.stall(after=0.5, seconds=1.0)
    result = rate.Driver(s.url, rate=100, seconds=5, connections=4).run()
    assert result.answered == result.due == 500 and result.dropped == 0
    # About 100 of 500 requests were due during the stall, waiting up to 1 s: from their due time, the p99 is
    # the stall; from their send, only the 4 in flight (0.8%) saw it.
    assert result.p99_ms >= 850 and result.late >= 80
    assert result.sent_p99_ms < result.p99_ms / 2


def test_requests_not_answered_in_time_are_dropped_and_nothing_is_left_waiting(server):
    s = server(0.005)
    s.stall(after=0.0, seconds=5.0)
    began = time.monotonic()
    result = rate.Driver(s.url, rate=50, seconds=1, connections=2, timeout=0.5).run()
    assert result.answered == 0 and result.dropped == result.due == 50
    assert time.monotonic() - began < 3  # bounded by the schedule and the timeout, not by the server


def test_the_command_prints_its_result_as_json(server):
    s = server(0.0)
    out = subprocess.run(
        [sys.executable, "-m", "healthz.bench.rate", s.url, "--rate", "50", "--duration", "1", "--connections", "5"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["answered"] == data["due"] == 50 and data["p999_ms"] is not None and data["throughput"] > 0
    refused = subprocess.run(
        [sys.executable, "-m", "healthz.bench.rate", s.url, "--rate", "0", "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 2 and "--rate" in refused.stderr.splitlines()[-1]
