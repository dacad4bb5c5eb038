"""Clients that hold a service's connections without using them, stepped up, with health checks timed
at each step: the program the ``idle-clients`` fault runs where the load's clients are.

Two kinds of holder (:data:`KINDS`):

- ``idle``: sends one complete keep-alive ``GET`` of ``--idle-path`` (a path that needs no database:
  else a thousand of them at once are a crowd of health checks, not idle clients), reads the answer
  and then sends nothing more, as a browser or a connection-pooling client keeps a connection idle;
- ``slow-header``: sends a request line and one header and never finishes the request, as a slow
  client on a bad network (or slowloris) does.

At each step ``clients`` holders of one kind are opened and left open; then :data:`CHECKS` health
checks (each a new connection, ``Connection: close``, :data:`CHECK_TIMEOUT` seconds to answer) and,
when a liveness address is given, :data:`LIVEZ_CHECKS` liveness checks are timed, all at once; then
the holders close. Every step is bounded (connects, reads and checks each time out) and the whole program
stops after ``--seconds``, its steps so far written.

Run as ``python -m healthz.lab.idle_clients --route direct=http://host:port --route
nginx=http://host:8080 --path /api/v1/healthz/ --steps 8,16,32 --out steps.json``: every step for each
route in turn.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import selectors
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from healthz.harness.process import raise_open_files

KINDS = ("idle", "slow-header")
#: Health checks per step, sent at once, as a load balancer's probes from several nodes are.
CHECKS = 20
#: A check that has no answer in this many seconds failed (a load balancer's probe timeout).
CHECK_TIMEOUT = 3.0
LIVEZ_CHECKS = 5
#: Seconds given to open one holder, and to all ``idle`` holders to read their first answer.
CONNECT_TIMEOUT = 1.0
#: Seconds the holders stay open before the checks: a worker takes them up meanwhile.
SETTLE = 0.5


@dataclasses.dataclass(frozen=True)
class IdleStep:
    """One step: ``clients`` holders of ``kind`` asked for through ``route`` (``direct`` to gunicorn,
    or the proxy in front), ``held`` of them connected and ``open`` of those not yet closed by the
    service when the checks had run; ``failed`` of ``checks`` health checks had
    no 2xx in time, the slowest answered in ``worst_ms`` (None: none answered); the same for the
    liveness listener (``livez_checks`` 0: none asked)."""

    route: str
    kind: str
    clients: int
    held: int
    open: int
    checks: int
    failed: int
    worst_ms: float | None
    livez_checks: int = 0
    livez_failed: int = 0
    livez_worst_ms: float | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IdleStep:
        return cls(**data)


def limit(steps: Sequence[IdleStep], route: str, kind: str) -> int | None:
    """The fewest holders of ``kind`` through ``route`` at which a health check failed; None when
    every step of them passed (or none ran)."""
    failing = [s.clients for s in steps if s.route == route and s.kind == kind and s.failed]
    return min(failing) if failing else None


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if not parts.hostname or not parts.port:
        raise ValueError(f"{url!r} is not http://host:port")
    return parts.hostname, parts.port


def _request(host: str, path: str, connection: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: {connection}\r\n\r\n".encode()


def open_holders(address: tuple[str, int], kind: str, count: int, path: str) -> list[socket.socket]:
    """``count`` holders of ``kind`` connected to ``address`` (fewer when connects fail or time out);
    ``path`` is what they ask for."""
    host = address[0]
    first = (
        _request(host, path, "keep-alive") if kind == "idle" else f"GET {path} HTTP/1.1\r\nHost: {host}\r\n".encode()
    )
    held: list[socket.socket] = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(address)
            sock.sendall(first)
        except OSError:
            sock.close()
            continue
        held.append(sock)
    if kind == "idle":
        _read_first_answers(held)
    return held


def _read_first_answers(socks: list[socket.socket]) -> None:
    """Read what the ``idle`` holders' first requests got, all at once, for :data:`CONNECT_TIMEOUT`
    seconds at most: a holder that got no answer in that time stays open all the same."""
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        heads: dict[socket.socket, bytes] = {}
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while selector.get_map() and time.monotonic() < deadline:
            for key, _ in selector.select(max(0.0, deadline - time.monotonic())):
                sock = key.fileobj
                try:
                    chunk = sock.recv(65536)
                except OSError:
                    chunk = b""
                heads[sock] = heads.get(sock, b"") + chunk
                if not chunk or b"\r\n\r\n" in heads[sock]:
                    selector.unregister(sock)


def check(address: tuple[str, int], path: str, timeout: float | None = None) -> float | None:
    """One health check on a new connection: milliseconds to a 2xx status line, None when it failed
    (refused, reset, another status, or no answer in ``timeout`` seconds, default :data:`CHECK_TIMEOUT`)."""
    timeout = CHECK_TIMEOUT if timeout is None else timeout
    began = time.monotonic()
    try:
        with socket.create_connection(address, timeout=timeout) as sock:
            sock.settimeout(max(0.01, timeout - (time.monotonic() - began)))
            sock.sendall(_request(address[0], path, "close"))
            head = b""
            while b"\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk:
                    return None
                head += chunk
    except OSError:
        return None
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[1].startswith(b"2"):
        return None
    return round((time.monotonic() - began) * 1000, 1)


def checks(requests: Sequence[tuple[tuple[str, int], str]]) -> list[float | None]:
    """A :func:`check` of each ``(address, path)`` in ``requests``, all at once."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(requests)) as pool:
        return list(pool.map(lambda r: check(*r), requests))


def still_open(socks: Sequence[socket.socket]) -> int:
    """How many of ``socks`` the other side has not closed (nor reset)."""
    count = 0
    for sock in socks:
        sock.setblocking(False)
        try:
            count += bool(sock.recv(1, socket.MSG_PEEK))
        except BlockingIOError:
            count += 1
        except OSError:
            pass
    return count


def step(
    route: str,
    kind: str,
    clients: int,
    target: tuple[str, int],
    path: str,
    livez: tuple[str, int] | None,
    livez_path: str,
    idle_path: str | None = None,
) -> IdleStep:
    """Open the holders (``idle`` ones asking for ``idle_path``, default ``path``), let them settle,
    time the checks of ``path`` (and liveness at once), count the holders still open, close them."""
    held = open_holders(target, kind, clients, (idle_path or path) if kind == "idle" else path)
    try:
        time.sleep(SETTLE)
        livez_count = LIVEZ_CHECKS if livez else 0
        answers = checks([(target, path)] * CHECKS + [(livez, livez_path)] * livez_count)
        health, liveness = answers[:CHECKS], answers[CHECKS:]
        open_now = still_open(held)
    finally:
        for sock in held:
            sock.close()
    return IdleStep(
        route=route,
        kind=kind,
        clients=clients,
        held=len(held),
        open=open_now,
        checks=len(health),
        failed=sum(a is None for a in health),
        worst_ms=max((a for a in health if a is not None), default=None),
        livez_checks=len(liveness),
        livez_failed=sum(a is None for a in liveness),
        livez_worst_ms=max((a for a in liveness if a is not None), default=None),
    )


def run(args: argparse.Namespace) -> list[IdleStep]:
    """Every (route, kind, clients) step in turn, until ``args.seconds`` have passed."""
    livez = _address(args.livez) if args.livez else None
    deadline = time.monotonic() + args.seconds
    steps: list[IdleStep] = []
    for route, url in args.route:
        target = _address(url)
        for kind in args.kinds:
            for clients in args.steps:
                if time.monotonic() > deadline:
                    return steps
                steps.append(step(route, kind, clients, target, args.path, livez, args.livez_path, args.idle_path))
                time.sleep(SETTLE)  # the closed holders leave the workers before the next step
    return steps


def _ints(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: want positive whole numbers separated by commas, e.g. 8,16,32")
    return values


def _route(text: str) -> tuple[str, str]:
    name, _, url = text.partition("=")
    if not name or not url:
        raise argparse.ArgumentTypeError(f"{text!r}: want NAME=http://host:port, e.g. direct=http://127.0.0.1:8000")
    return name, url


def _kinds(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(KINDS))
    if not kinds or unknown:
        raise argparse.ArgumentTypeError(f"{text!r}: want one or more of {', '.join(KINDS)}")
    return kinds


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m healthz.lab.idle_clients", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--route",
        type=_route,
        action="append",
        required=True,
        help="NAME=http://host:port: the service, or a proxy in front",
    )
    p.add_argument("--path", default="/api/v1/healthz/", help="the health check's path")
    p.add_argument("--idle-path", help="what idle clients ask for once: a path that needs no database (default --path)")
    p.add_argument("--livez", help="http://host:port of the liveness listener, when it has one")
    p.add_argument("--livez-path", default="/api/v1/livez/")
    p.add_argument("--steps", type=_ints, required=True, help="holders at each step, e.g. 8,16,32")
    p.add_argument("--kinds", type=_kinds, default=list(KINDS), help="idle, slow-header or both")
    p.add_argument("--seconds", type=float, default=120.0, help="no step begins after this many seconds")
    p.add_argument("--out", type=Path, required=True, help="where the steps are written (JSON)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    raise_open_files(max(args.steps) + 256)  # every holder is a descriptor
    try:
        steps = run(args)
    except ValueError as exc:
        print(f"idle_clients: {exc}", file=sys.stderr)
        return 2
    args.out.write_text(json.dumps([dataclasses.asdict(s) for s in steps], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
