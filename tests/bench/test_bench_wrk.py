"""wrk: its summary parsed, and real runs against a real HTTP server, counting connections."""

from __future__ import annotations

import http.server
import threading

import pytest

from healthz.bench import wrk

SAMPLE = """Running 1s test @ http://127.0.0.1:8000/
  1 threads and 10 connections
WRK_JSON {"requests": 1234, "duration_us": 2000000, "connect": 0, "read": 2, "write": 0, "status": 5, "timeout": 1, "p50_us": 1500, "p90_us": 2500, "p99_us": 12000, "max_us": 30000, "mean_us": 1700.5}
"""


def test_parse_output_reads_the_done_hook_line():
    result = wrk.parse_output(SAMPLE)
    assert result.requests == 1234 and result.seconds == 2.0 and result.rps == 617.0
    assert (result.p50_ms, result.p90_ms, result.p99_ms, result.max_ms) == (1.5, 2.5, 12.0, 30.0)
    assert result.failed == 8 and result.errors["status"] == 5
    assert result.to_dict()["failed"] == 8


def test_parse_output_without_summary_says_so():
    with pytest.raises(wrk.WrkError, match="no summary"):
        wrk.parse_output("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_wrk_variable_must_name_an_executable(monkeypatch, tmp_path):
    monkeypatch.setenv("WRK", str(tmp_path / "missing"))
    with pytest.raises(wrk.WrkError, match="WRK=.* is not an executable file"):
        wrk.find()


class _Counting(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless the client asks to close
    disable_nagle_algorithm = True  # headers and body go out in two writes
    connections = 0
    statuses = {"/fail": 500}

    def setup(self):
        super().setup()
        type(self).connections += 1

    def do_GET(self):
        body = b"ok"
        self.send_response(self.statuses.get(self.path, 200))
        self.send_header("Content-Length", str(len(body)))
        if self.headers.get("Connection", "").lower() == "close":
            self.send_header("Connection", "close")  # as gunicorn answers; wrk then reconnects cleanly
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # wrk drops its connections mid-request when its time is up


@pytest.fixture
def http_server():
    _Counting.connections = 0
    server = _QuietServer(("127.0.0.1", 0), _Counting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_run_keeps_connections_alive_unless_told_to_reconnect(http_server):
    load = wrk.find()
    kept = load.run(http_server + "/", connections=2, seconds=1)
    assert kept.requests > 50 and kept.failed == 0
    assert _Counting.connections <= 4  # the two, and at most a reconnect each

    _Counting.connections = 0
    renewed = load.run(http_server + "/", connections=2, seconds=1, reconnect_every=10)
    assert renewed.failed == 0
    # Every 10th request closes its connection and wrk opens another.
    assert renewed.requests / 10 * 0.5 <= _Counting.connections <= renewed.requests / 10 + 10


def test_a_non_2xx_answer_counts_as_failed(http_server):
    result = wrk.find().run(http_server + "/fail", connections=1, seconds=1)
    assert result.requests > 0 and result.errors["status"] == result.requests == result.failed
