"""The first-come, first-served gate: nobody overtakes a waiter, a timeout is a pool timeout."""

from __future__ import annotations

import threading
import time

import pytest

from healthz import errors
from healthz.gate import FairGate, GateTimeout


def test_waiters_are_let_through_in_the_order_they_came():
    gate = FairGate(1, timeout=5)
    gate.acquire()
    order: list[int] = []

    def wait(i: int) -> None:
        with gate:
            order.append(i)

    threads = []
    for i in range(5):
        threads.append(threading.Thread(target=wait, args=(i,)))
        threads[-1].start()
        deadline = time.monotonic() + 5
        while gate.waiting < i + 1 and time.monotonic() < deadline:  # queued before the next one starts
            time.sleep(0.001)
    gate.release()
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2, 3, 4]


def test_a_released_permit_goes_to_the_waiter_not_to_a_newcomer():
    gate = FairGate(1, timeout=5)
    gate.acquire()
    got: list[str] = []
    waiter = threading.Thread(target=lambda: (gate.acquire(), got.append("waiter")))
    waiter.start()
    while gate.waiting < 1:
        time.sleep(0.001)
    gate.release()  # handed to the waiter, even before it runs
    newcomer = threading.Thread(target=lambda: (gate.acquire(), got.append("newcomer")))
    newcomer.start()
    waiter.join(5)
    assert got == ["waiter"] and gate.waiting == 1, "the newcomer queues behind the permit's holder"
    gate.release()
    newcomer.join(5)
    assert got == ["waiter", "newcomer"]


def test_a_wait_longer_than_the_timeout_is_a_pool_timeout():
    gate = FairGate(1, timeout=0.05)
    gate.acquire()
    with pytest.raises(GateTimeout) as info:
        gate.acquire()
    assert errors.classify(info.value) == errors.POOL_TIMEOUT
    assert gate.waiting == 0, "a waiter that gave up leaves the queue"
    gate.release()
    gate.acquire()  # the permit is still there


def test_permits_must_be_positive():
    with pytest.raises(ValueError, match="permits must be >= 1"):
        FairGate(0, timeout=1)
