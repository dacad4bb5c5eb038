"""A first-come, first-served gate in front of the pool: at most ``permits`` requests hold a pooled
connection, and the others are let through strictly in the order they arrived.

SQLAlchemy's QueuePool wakes one waiter when a connection comes back, but the connection is not
handed to it: any request that asks before the woken one runs takes it (under green workers, every
greenlet the hub runs first), and the woken one, finding the queue empty, waits again behind the
newer waiters. Under a crowd some requests are served at once and others starve. The gate hands a
released permit to the oldest waiter itself, so nobody overtakes, and a request that waited
``timeout`` seconds gives up as QueuePool's ``pool_timeout`` would.

Built on ``threading`` primitives, which eventlet and gevent monkey-patch into green ones: create
it after the worker has patched (the app is made in the worker).
"""

from __future__ import annotations

import collections
import threading

import sqlalchemy.exc


class GateTimeout(sqlalchemy.exc.TimeoutError):
    """No permit came within the timeout: classified as ``pool_timeout``, as QueuePool's own."""


class FairGate:
    """At most ``permits`` holders at once; waiters served in arrival order."""

    def __init__(self, permits: int, timeout: float) -> None:
        if permits < 1:
            raise ValueError(f"permits must be >= 1, got {permits}")
        self.permits = permits
        self.timeout = timeout
        self._lock = threading.Lock()
        self._free = permits
        self._waiters: collections.deque[threading.Event] = collections.deque()

    @property
    def waiting(self) -> int:
        """Requests waiting for a permit now."""
        return len(self._waiters)

    def acquire(self) -> None:
        """Take a permit, waiting behind everyone who came first; :class:`GateTimeout` after
        ``timeout`` seconds without one."""
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                return
            turn = threading.Event()
            self._waiters.append(turn)
        if turn.wait(self.timeout):
            return
        with self._lock:
            if turn.is_set():  # handed over while it timed out: it holds the permit
                return
            self._waiters.remove(turn)
        raise GateTimeout(f"no connection within pool_timeout={self.timeout:g} s: {self.permits} in use")

    def release(self) -> None:
        """Give the permit to the oldest waiter, or back to the gate when nobody waits."""
        with self._lock:
            if self._waiters:
                self._waiters.popleft().set()
            else:
                self._free += 1

    def __enter__(self) -> FairGate:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
