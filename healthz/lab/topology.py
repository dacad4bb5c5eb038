"""Where the lab's processes run and how they reach each other.

* :class:`Loopback`: everything on 127.0.0.1 in the host's network namespace. Works anywhere, but
  Linux reuses TIME_WAIT ports on loopback (``net.ipv4.tcp_tw_reuse = 2``), so port exhaustion
  barely shows: it cannot reproduce the report faithfully.
* :class:`Netns` (root and iproute2): three network namespaces in a line, ``client`` (locust) --
  ``app`` (gunicorn) -- ``db`` (PostgreSQL), joined by veth pairs addressed from 198.18.0.0/15 (the
  range reserved for benchmark networks) that exist only inside the namespaces. The app host's
  ``ip_local_port_range`` is narrowed, so a service that opens a database connection per request runs
  out of ports within seconds, as the report's host did. The load generator sits in a namespace of
  its own so that its thousands of HTTP connections never take ports from the app host's range
  (in the report, ``ab`` ran elsewhere too). Optional ``tc netem`` delay on the app--db link.

Each is a context manager; :class:`Netns` removes its namespaces (and with them the veth pairs and
every socket in them) on every exit path (the runner turns SIGTERM into an unwinding Ctrl-C).
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Sequence

#: The prefix of every namespace the lab creates; the PID keeps parallel runs apart.
NAMESPACE_PREFIX = "healthz-"
NETWORK = ipaddress.ip_network("198.18.0.0/15")
#: Linux keeps a closed socket in TIME_WAIT for 60 s (TCP_TIMEWAIT_LEN); not tunable.
TIME_WAIT_SECONDS = 60


class TopologyError(RuntimeError):
    """A topology could not be set up; the message says what to do."""


def _run(command: Sequence[str]) -> str:
    result = subprocess.run(list(command), capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise TopologyError(f"{' '.join(command)} failed: {(result.stderr or result.stdout).strip()}")
    return result.stdout


def _add_netem(prefix: Sequence[str], interface: str, delay_ms: float) -> None:
    try:
        _run([*prefix, "tc", "qdisc", "add", "dev", interface, "root", "netem", "delay", f"{delay_ms:g}ms"])
    except TopologyError as exc:
        if "unknown" in str(exc):
            raise TopologyError(f"--delay-ms needs the kernel's netem qdisc, which this kernel lacks (modprobe sch_netem); "
                                f"run without --delay-ms. ({exc})") from None  # fmt: skip
        raise


def lab_namespaces() -> list[str]:
    """Namespaces whose name starts with :data:`NAMESPACE_PREFIX` (ours, from any run)."""
    if shutil.which("ip") is None:
        return []
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(NAMESPACE_PREFIX)]


class Loopback:
    """Every process in the host's namespace, talking over 127.0.0.1."""

    name = "loopback"
    service_host = db_host = "127.0.0.1"
    app_prefix: list[str] = []
    db_prefix: list[str] = []
    client_prefix: list[str] = []
    faithful = False
    port_range: tuple[int, int] | None = None

    def __init__(self) -> None:
        try:
            low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
            self.port_range = (int(low), int(high))
        except (OSError, ValueError):
            self.port_range = None

    def describe(self) -> str:
        return (
            "loopback: gunicorn, locust and PostgreSQL on 127.0.0.1. Linux reuses TIME_WAIT ports on "
            "loopback (net.ipv4.tcp_tw_reuse = 2), so ephemeral-port exhaustion barely shows here: "
            "use --topology netns (root) to reproduce it faithfully."
        )

    def setup(self) -> Loopback:
        return self

    def teardown(self) -> None:
        pass

    def renew_app(self) -> None:
        """Loopback has no app namespace to renew; TIME_WAIT carries over between runs."""

    def __enter__(self) -> Loopback:
        return self.setup()

    def __exit__(self, *exc_info: object) -> None:
        self.teardown()


class Netns:
    """Three network namespaces joined by two veth pairs; see the module docstring.

    ``ports`` is the size of the app host's ``ip_local_port_range`` (default 1,000);
    ``delay_ms`` adds ``tc netem`` delay on each end of the app--db link (a round trip gains twice that).
    """

    name = "netns"
    faithful = True

    def __init__(self, *, ports: int = 1000, delay_ms: float = 0.0, tag: str | None = None) -> None:
        if ports < 16 or ports > 28000:
            raise TopologyError(f"--ports must be between 16 and 28000, got {ports}")
        if delay_ms < 0 or delay_ms > 10000:
            raise TopologyError(f"--delay-ms must be between 0 and 10000, got {delay_ms:g}")
        self.ports = ports
        self.delay_ms = delay_ms
        tag = tag or str(os.getpid())
        self.client_ns = f"{NAMESPACE_PREFIX}{tag}-client"
        self.app_ns = f"{NAMESPACE_PREFIX}{tag}-app"
        self.db_ns = f"{NAMESPACE_PREFIX}{tag}-db"
        short = tag[-9:]  # interface names are limited to 15 characters
        self.app_if, self.db_if = f"hz{short}ad", f"hz{short}da"
        self.service_if, self.client_if = f"hz{short}ac", f"hz{short}ca"
        db_link, client_link = list(itertools.islice(NETWORK.subnets(new_prefix=30), 2))
        self.db_host, self.app_host = (str(h) for h in db_link.hosts())
        self.service_host, self.client_host = (str(h) for h in client_link.hosts())
        low = min(40000, 65536 - ports)  # the range ends at 65535 at most
        self.port_range = (low, low + ports - 1)
        self._created: list[str] = []

    @property
    def app_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.app_ns]

    @property
    def db_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.db_ns]

    @property
    def client_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.client_ns]

    def describe(self) -> str:
        netem = f", tc netem delay {self.delay_ms:g} ms each way on the app-db link" if self.delay_ms else ""
        return (
            f"netns: locust in namespace {self.client_ns} ({self.client_host}) -> gunicorn in {self.app_ns} "
            f"({self.service_host}; {self.app_host} toward the database) -> PostgreSQL in {self.db_ns} ({self.db_host}), "
            f"joined by veth pairs; the app host's ip_local_port_range is {self.port_range[0]}-{self.port_range[1]} "
            f"({self.ports} ports), tcp_tw_reuse 2 (reuse on loopback only){netem}"
        )

    @staticmethod
    def check() -> None:
        """Raise :class:`TopologyError` saying what is missing when this machine cannot host netns."""
        if sys.platform != "linux":
            raise TopologyError("--topology netns needs Linux; use --topology loopback")
        if os.geteuid() != 0:
            raise TopologyError("--topology netns needs root (it creates network namespaces): run as root or use --topology loopback")
        if shutil.which("ip") is None:
            raise TopologyError("--topology netns needs iproute2's ip command (apt-get install iproute2), or use --topology loopback")

    def setup(self) -> Netns:
        """Create the namespaces and links; on any failure remove what was made and raise."""
        self.check()
        try:
            for namespace, prefix in ((self.db_ns, self.db_prefix), (self.client_ns, self.client_prefix)):
                _run(["ip", "netns", "add", namespace])
                self._created.append(namespace)
                _run([*prefix, "ip", "link", "set", "lo", "up"])
            self._create_app()
        except BaseException:
            self.teardown()
            raise
        return self

    def _create_app(self) -> None:
        _run(["ip", "netns", "add", self.app_ns])
        self._created.append(self.app_ns)
        app = self.app_prefix
        _run([*app, "ip", "link", "set", "lo", "up"])
        # Both ends of each pair are made from inside the namespaces: the addresses never exist in the host's.
        links = (
            (self.app_if, self.app_host, self.db_if, self.db_host, self.db_ns, self.db_prefix, self.delay_ms),
            (self.service_if, self.service_host, self.client_if, self.client_host, self.client_ns, self.client_prefix, 0.0),
        )
        for near_if, near_ip, far_if, far_ip, far_ns, far, delay in links:
            _run([*app, "ip", "link", "add", near_if, "type", "veth", "peer", "name", far_if, "netns", far_ns])
            _run([*app, "ip", "addr", "add", f"{near_ip}/30", "dev", near_if])
            _run([*far, "ip", "addr", "add", f"{far_ip}/30", "dev", far_if])
            for prefix, interface in ((app, near_if), (far, far_if)):
                _run([*prefix, "ip", "link", "set", interface, "up"])
                if delay:
                    _add_netem(prefix, interface, delay)
        low, high = self.port_range
        _run([*app, "sysctl", "-q", "-w", f"net.ipv4.ip_local_port_range={low} {high}"])
        _run([*app, "sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=2"])

    def netem_problem(self) -> str | None:
        """Why ``tc netem`` cannot run here (tried on the client namespace's loopback), or None."""
        try:
            _run([*self.client_prefix, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"])
        except TopologyError as exc:
            if "unknown" in str(exc).lower() or "No such file" in str(exc):
                return "this kernel has no netem qdisc (modprobe sch_netem)"
            return str(exc)
        _run([*self.client_prefix, "tc", "qdisc", "del", "dev", "lo", "root"])
        return None

    def renew_app(self) -> None:
        """Replace the app namespace (and its veth pairs) with a fresh one, so TIME_WAIT sockets
        left by one run do not eat the next run's ports. The db and client namespaces stay."""
        if self.app_ns in self._created:
            subprocess.run(["ip", "netns", "del", self.app_ns], capture_output=True)
            self._created.remove(self.app_ns)
        try:
            self._create_app()
        except BaseException:
            self.teardown()
            raise

    def teardown(self) -> None:
        """Delete the namespaces this object created; deleting one removes its veth ends, its
        addresses and its sockets."""
        for namespace in reversed(self._created):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        self._created.clear()

    def __enter__(self) -> Netns:
        return self.setup()

    def __exit__(self, *exc_info: object) -> None:
        self.teardown()


def make(name: str, *, ports: int = 1000, delay_ms: float = 0.0) -> Loopback | Netns:
    """The topology called ``name`` (``loopback`` or ``netns``)."""
    if name == "loopback":
        if delay_ms:
            raise TopologyError("--delay-ms needs --topology netns (tc netem on the veth pair)")
        return Loopback()
    if name == "netns":
        Netns.check()
        return Netns(ports=ports, delay_ms=delay_ms)
    raise TopologyError(f"unknown topology {name!r}: use loopback or netns")
