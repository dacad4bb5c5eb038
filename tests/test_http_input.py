"""Bad HTTP input against real gunicorn workers: the right 4xx from Flask or gunicorn's limits,
never a 5xx, never a stack trace in the response or the log, and the worker serves on."""

from __future__ import annotations

import socket

import pytest
from helpers import get_many

#: name -> (raw request, accepted statuses). gunicorn's defaults: request line 4094 bytes,
#: 100 header fields, 8190 bytes per header field.
CASES = {
    "unknown path": (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", {404}),
    "wrong method": (b"POST /api/v1/healthz/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", {405}),
    "wrong method, livez": (b"DELETE /api/v1/livez/ HTTP/1.1\r\nHost: x\r\n\r\n", {405}),
    "request line too long": (b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", {400, 414}),
    "huge query string": (b"GET /api/v1/healthz/?" + b"q=1&" * 30_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", {400, 414}),
    "too many headers": (
        b"GET /api/v1/livez/ HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(300)) + b"\r\n",
        {400, 431},
    ),
    "header too large": (
        b"GET /api/v1/livez/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 20_000 + b"\r\n\r\n",
        {400, 431},
    ),
    "garbage request line": (b"GARBAGE\r\n\r\n", {400}),
    "unknown HTTP version": (b"GET /api/v1/livez/ HTTP/9.9\r\nHost: x\r\n\r\n", {400}),
    "space in a header name": (b"GET /api/v1/livez/ HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n", {400}),
    "bad Content-Length": (b"POST /api/v1/livez/ HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", {400}),
    "two Content-Lengths": (
        b"POST /api/v1/livez/ HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        {400},
    ),
    "bad chunk": (b"POST /api/v1/livez/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", {405}),
    "broken absolute URI": (b"GET http://[::1 HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
}


def send_raw(port: int, raw: bytes, timeout: float = 5.0) -> tuple[int, bytes]:
    """Send ``raw`` on a new TCP connection: ``(status, response)`` once the response's head and
    ``Content-Length`` bytes of body are in; status 0 when the server closed without answering or
    did not answer in ``timeout``."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
                head, sep, body = data.partition(b"\r\n\r\n")
                lengths = [
                    line.split(b":", 1)[1]
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ]
                if sep and lengths and len(body) >= int(lengths[0]):
                    break
        except (TimeoutError, ConnectionResetError):
            pass
    status = data.split(b" ", 2)[1] if data.startswith(b"HTTP/1.") else b"0"
    return int(status), data


@pytest.mark.parametrize("worker_class", ["eventlet", "gevent", "gthread", "sync"])
def test_bad_requests_get_a_4xx_and_no_stack_trace(run_gunicorn, worker_class):
    server = run_gunicorn(worker_class, workers=1)
    for name, (raw, accepted) in CASES.items():
        status, response = send_raw(server.port, raw)
        assert status in accepted, (name, response[:200])
        assert b"Traceback" not in response and b'File "' not in response, name
    # A TLS handshake on the plain port: no answer is the right one, and the worker serves on.
    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
        sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 100)
    assert get_many(server.base_url, 4, 2) == [200] * 4
    log = server.log_text()
    assert "Traceback" not in log, log[-3000:]
    assert "[ERROR]" not in log, log[-3000:]
