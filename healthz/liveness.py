"""A liveness listener beside the request workers: ``GET /api/v1/livez/`` answered by a thread of
its own in each gunicorn worker, on an address of its own (``HEALTHZ_LIVENESS_BIND``).

Why: when the database stalls, every request thread (gthread) or the one request a sync worker
serves waits on it, and a livez request queues behind them: a liveness probe with Kubernetes' 1 s
timeout then fails and restarts a pod that was only waiting. This listener answers while the
worker process runs; a worker whose main loop is stuck is gunicorn's to restart (its ``timeout``).

Every worker binds the same address with ``SO_REUSEPORT``, so the kernel spreads the probes over
them. Under a green worker the thread is a greenlet (the worker has monkey-patched ``threading``
and ``socket`` before ``post_worker_init``). Any gunicorn app can use it from its own config::

    def post_worker_init(worker):
        from healthz import liveness
        liveness.start("0.0.0.0:8001")
"""

from __future__ import annotations

import socket
import threading

from .config import SettingsError, parse_bind

PATH = b"/api/v1/livez/"
BODY = b'{"status":"ok"}\n'
#: A client gets this long to send its request line; probes are answered one at a time.
READ_TIMEOUT = 1.0
REQUEST_LIMIT = 8192


class Listener(threading.Thread):
    """Serves ``PATH`` on ``address`` (``host:port``) until the process ends: 200 for GET and
    HEAD, 405 for another method, 404 for another path, each answer closing its connection."""

    def __init__(self, address: str) -> None:
        super().__init__(name="healthz-liveness", daemon=True)
        self.sock = bound(address)
        self.sock.listen(64)
        self.address = address

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            with conn:
                try:
                    conn.settimeout(READ_TIMEOUT)
                    conn.sendall(answer(_read_head(conn)))
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


def bound(address: str) -> socket.socket:
    """A TCP socket bound to ``address`` (``host:port``) with ``SO_REUSEPORT``, as every worker's
    listener binds it; :class:`SettingsError` for a bad address, ``OSError`` when it cannot be bound."""
    host, port = parse_bind("HEALTHZ_LIVENESS_BIND", address)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _read_head(conn: socket.socket) -> bytes:
    """The request's head (up to the blank line), at most :data:`REQUEST_LIMIT` bytes."""
    data = b""
    while b"\r\n\r\n" not in data and len(data) < REQUEST_LIMIT:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def answer(head: bytes) -> bytes:
    """The whole HTTP/1.1 response to a request whose head is ``head``."""
    method, _, rest = head.partition(b" ")
    path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
    if path != PATH:
        status, body = b"404 Not Found", b'{"status":"not found"}\n'
    elif method not in (b"GET", b"HEAD"):
        status, body = b"405 Method Not Allowed", b'{"status":"method not allowed"}\n'
    else:
        status, body = b"200 OK", BODY
    headers = (
        b"HTTP/1.1 "
        + status
        + b"\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n"
    )
    return headers + (b"" if method == b"HEAD" else body)


def start(address: str) -> Listener:
    """Bind ``address`` and serve it from a daemon thread; raises :class:`SettingsError` for a bad
    address and ``OSError`` when it cannot be bound."""
    listener = Listener(address)
    listener.start()
    return listener


__all__ = ["Listener", "SettingsError", "answer", "bound", "start"]
