"""Where the lab's processes run and how they reach each other.

* :class:`Loopback`: everything on 127.0.0.1 in the host's network namespace. Works anywhere, but
  Linux reuses TIME_WAIT ports on loopback (``net.ipv4.tcp_tw_reuse = 2``), so port exhaustion
  barely shows: it cannot reproduce the report faithfully.
* :class:`Netns` (root and iproute2): network namespaces ``client`` (locust) -- ``app`` (gunicorn;
  ``app``, ``app2``... with ``hosts``) -- ``db`` (PostgreSQL), joined by veth pairs and, on the
  database side, a bridge, addressed from 198.18.0.0/15 (the range reserved for benchmark networks)
  that exist only inside the namespaces. Each app host's ``ip_local_port_range`` is narrowed, so a
  service that opens a database connection per request runs out of ports within seconds, as the
  report's host did. The load generator sits in a namespace of its own so that its thousands of
  HTTP connections never take ports from the app hosts' ranges (in the report, ``ab`` ran elsewhere
  too). Optional ``tc netem`` delay on the app--db links.

Each is a context manager; :class:`Netns` removes its namespaces (and with them the veth pairs and
every socket in them) on every exit path (the runner turns SIGTERM into an unwinding Ctrl-C).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

#: The prefix of every namespace the lab creates; the PID keeps parallel runs apart.
NAMESPACE_PREFIX = "healthz-"
NETWORK = ipaddress.ip_network("198.18.0.0/15")
#: The sizes of an application host's ``ip_local_port_range`` the lab accepts: from a range small
#: enough to run out within seconds to about Linux's default (28,232).
PORTS = (16, 28000)
#: Linux's default ``net.ipv4.tcp_tw_reuse``: reuse a TIME_WAIT port for a new outgoing connection on loopback only.
DEFAULT_TW_REUSE = 2
#: What each value of ``net.ipv4.tcp_tw_reuse`` lets a new outgoing connection do with a port in TIME_WAIT.
TW_REUSE = {0: "never reuse it", 1: "reuse it 1 s after its last packet", 2: "reuse it on loopback only"}


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
            raise TopologyError(
                f"--delay-ms needs the kernel's netem qdisc, which this kernel lacks (modprobe sch_netem); "
                f"run without --delay-ms. ({exc})"
            ) from None
        raise


def lab_namespaces() -> list[str]:
    """Namespaces whose name starts with :data:`NAMESPACE_PREFIX` (ours, from any run)."""
    if shutil.which("ip") is None:
        return []
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(NAMESPACE_PREFIX)]


@dataclasses.dataclass
class AppHost:
    """One application host of :class:`Netns`: its namespace, its address toward the database
    (``app_host`` on ``app_if``) and toward its clients (``service_host`` on ``service_if``, the
    client namespace's end ``client_host`` on ``client_if``)."""

    index: int
    namespace: str
    app_if: str
    db_if: str
    app_host: str
    service_if: str
    client_if: str
    service_host: str
    client_host: str

    @property
    def prefix(self) -> list[str]:
        """The command prefix that runs a program on this host (none for the host's own namespace)."""
        return ["ip", "netns", "exec", self.namespace] if self.namespace else []

    @property
    def name(self) -> str:
        return f"app{self.index + 1}"


@dataclasses.dataclass
class LoadHost:
    """A further load generator host of :class:`Netns` (a namespace of its own, holding locust
    workers): a /24 of 198.18.0.0/15 for its links, a /30 each, to every application host (index
    0, 1, ...) and to the first client namespace, where the master runs (the last /30)."""

    namespace: str
    subnet: ipaddress.IPv4Network
    interface_stem: str

    @property
    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.namespace]

    def _pair(self, index: int) -> tuple[str, str]:
        near, far = (str(h) for h in list(self.subnet.subnets(new_prefix=30))[index].hosts())
        return near, far

    def app_link(self, host_index: int) -> tuple[str, str, str, str]:
        """``(interface on the app host, interface here, the app host's address, this one's)``."""
        near, far = self._pair(host_index)
        return f"{self.interface_stem}{host_index:x}t", f"{self.interface_stem}{host_index:x}u", near, far

    @property
    def master_link(self) -> tuple[str, str, str, str]:
        """``(interface in the client namespace, interface here, the master's address, this one's)``."""
        near, far = self._pair(63)
        return f"{self.interface_stem}m", f"{self.interface_stem}w", near, far


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
        self.hosts = [AppHost(0, "", "", "", "127.0.0.1", "", "", "127.0.0.1", "127.0.0.1")]
        try:
            low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
            self.port_range = (int(low), int(high))
        except (OSError, ValueError):
            self.port_range = None

    def load_hosts(self) -> list[tuple[list[str], str]]:
        """Where a distributed run's workers run, each as ``(command prefix, the master's address
        from there)``: here, beside the master."""
        return [([], "127.0.0.1")]

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

    @property
    def tcp_tw_reuse(self) -> int | None:
        """This host's ``net.ipv4.tcp_tw_reuse`` (loopback shares it)."""
        try:
            return int(Path("/proc/sys/net/ipv4/tcp_tw_reuse").read_text())
        except (OSError, ValueError):
            return None

    def renew_app(self, ports: int | None = None, tcp_tw_reuse: int | None = None) -> None:
        """Loopback has no app namespace to renew; TIME_WAIT carries over between runs. Its sysctls
        are this host's, so a run's own ``ports`` or ``tcp_tw_reuse`` is refused."""
        if ports is not None or tcp_tw_reuse is not None:
            knob = "ports" if ports is not None else "tcp_tw_reuse"
            raise TopologyError(
                f"{knob} is set per application namespace: it needs --topology netns (loopback shares this host's sysctls)"
            )

    def __enter__(self) -> Loopback:
        return self.setup()

    def __exit__(self, *exc_info: object) -> None:
        self.teardown()


class Netns:
    """Network namespaces for ``hosts`` application hosts, one database host and one client host;
    see the module docstring.

    The database namespace holds a bridge with the database's address; each application host joins
    it with a veth pair (all on 198.18.0.0/24) and has a veth pair of its own to the client
    namespace (a /30 from 198.18.1.0/24). ``ports`` is the size of each application host's
    ``ip_local_port_range`` (default 1,000); ``delay_ms`` adds ``tc netem`` delay on each end of
    every app--db link (a round trip gains twice that). The ``app_*``, ``service_*`` and
    ``client_host`` attributes are the first application host's.
    """

    name = "netns"
    faithful = True
    MAX_HOSTS = 8

    MAX_LOAD_HOSTS = 4

    def __init__(
        self,
        *,
        ports: int = 1000,
        delay_ms: float = 0.0,
        tag: str | None = None,
        hosts: int = 1,
        load_hosts: int = 1,
    ) -> None:
        if not PORTS[0] <= ports <= PORTS[1]:
            raise TopologyError(f"--ports must be between {PORTS[0]} and {PORTS[1]}, got {ports}")
        if delay_ms < 0 or delay_ms > 10000:
            raise TopologyError(f"--delay-ms must be between 0 and 10000, got {delay_ms:g}")
        if not 1 <= hosts <= self.MAX_HOSTS:
            raise TopologyError(f"--hosts must be between 1 and {self.MAX_HOSTS}, got {hosts}")
        if not 1 <= load_hosts <= self.MAX_LOAD_HOSTS:
            raise TopologyError(f"load hosts must be between 1 and {self.MAX_LOAD_HOSTS}, got {load_hosts}")
        self.ports = ports
        self.delay_ms = delay_ms
        tag = tag or str(os.getpid())
        self.client_ns = f"{NAMESPACE_PREFIX}{tag}-client"
        self.db_ns = f"{NAMESPACE_PREFIX}{tag}-db"
        short = tag[-8:]  # interface names are limited to 15 characters
        self.bridge = f"hz{short}br"
        lan = next(NETWORK.subnets(new_prefix=24))
        client_links = list(itertools.islice(list(NETWORK.subnets(new_prefix=24))[1].subnets(new_prefix=30), hosts))
        self.db_host = str(lan.network_address + 1)
        self.hosts = []
        for i in range(hosts):
            service_host, client_host = (str(h) for h in client_links[i].hosts())
            self.hosts.append(
                AppHost(
                    index=i,
                    namespace=f"{NAMESPACE_PREFIX}{tag}-app" + (str(i + 1) if i else ""),
                    app_if=f"hz{short}{i:x}a",
                    db_if=f"hz{short}{i:x}d",
                    app_host=str(lan.network_address + 2 + i),
                    service_if=f"hz{short}{i:x}s",
                    client_if=f"hz{short}{i:x}c",
                    service_host=service_host,
                    client_host=client_host,
                )
            )
        # Load hosts beyond the first (the client namespace, where locust's master runs): each a
        # namespace with a link to every application host and one to the master, a /24 of its own.
        self.extra_load = [
            LoadHost(
                namespace=f"{NAMESPACE_PREFIX}{tag}-client{k + 1}",
                subnet=list(NETWORK.subnets(new_prefix=24))[1 + k],
                interface_stem=f"hz{short}{k}",
            )
            for k in range(1, load_hosts)
        ]
        self.port_range = self._range(ports)
        self.tcp_tw_reuse = DEFAULT_TW_REUSE
        self._created: list[str] = []

    @staticmethod
    def _range(ports: int) -> tuple[int, int]:
        if not PORTS[0] <= ports <= PORTS[1]:
            raise TopologyError(f"ports must be between {PORTS[0]} and {PORTS[1]}, got {ports}")
        low = min(40000, 65536 - ports)  # the range ends at 65535 at most
        return (low, low + ports - 1)

    # The first application host, for the single-host code paths.
    @property
    def app_ns(self) -> str:
        return self.hosts[0].namespace

    @property
    def app_prefix(self) -> list[str]:
        return self.hosts[0].prefix

    @property
    def app_if(self) -> str:
        return self.hosts[0].app_if

    @property
    def app_host(self) -> str:
        return self.hosts[0].app_host

    @property
    def service_host(self) -> str:
        return self.hosts[0].service_host

    @property
    def client_host(self) -> str:
        return self.hosts[0].client_host

    @property
    def db_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.db_ns]

    @property
    def client_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.client_ns]

    def describe(self) -> str:
        netem = f", tc netem delay {self.delay_ms:g} ms each way on each app-db link" if self.delay_ms else ""
        if len(self.hosts) == 1:
            apps = f"gunicorn in {self.app_ns} ({self.service_host}; {self.app_host} toward the database)"
        else:
            apps = f"{len(self.hosts)} application hosts, each with its own gunicorn: " + ", ".join(
                f"{h.namespace} ({h.service_host}; {h.app_host})" for h in self.hosts
            )
        load = (
            f"locust in namespaces {', '.join([self.client_ns, *(h.namespace for h in self.extra_load)])} "
            f"({len(self.extra_load) + 1} load hosts, each on its own addresses)"
            if self.extra_load
            else f"locust in namespace {self.client_ns}"
        )
        return (
            f"netns: {load} -> {apps} -> PostgreSQL in {self.db_ns} ({self.db_host}), "
            f"joined by veth pairs{' and a bridge' if len(self.hosts) > 1 else ''}; each application host's ip_local_port_range "
            f"is {self.port_range[0]}-{self.port_range[1]} ({self.ports} ports) and tcp_tw_reuse 2 (reuse on loopback only), "
            f"unless a scenario sets its own{netem}"
        )

    @staticmethod
    def check() -> None:
        """Raise :class:`TopologyError` saying what is missing when this machine cannot host netns."""
        if sys.platform != "linux":
            raise TopologyError("--topology netns needs Linux; use --topology loopback")
        if os.geteuid() != 0:
            raise TopologyError(
                "--topology netns needs root (it creates network namespaces): run as root or use --topology loopback"
            )
        if shutil.which("ip") is None:
            raise TopologyError(
                "--topology netns needs iproute2's ip command (apt-get install iproute2), or use --topology loopback"
            )

    def setup(self) -> Netns:
        """Create the namespaces, the bridge and the links; on any failure remove what was made and raise."""
        self.check()
        try:
            for namespace, prefix in ((self.db_ns, self.db_prefix), (self.client_ns, self.client_prefix)):
                _run(["ip", "netns", "add", namespace])
                self._created.append(namespace)
                _run([*prefix, "ip", "link", "set", "lo", "up"])
            db = self.db_prefix
            _run([*db, "ip", "link", "add", self.bridge, "type", "bridge"])
            _run([*db, "ip", "addr", "add", f"{self.db_host}/24", "dev", self.bridge])
            _run([*db, "ip", "link", "set", self.bridge, "up"])
            for load in self.extra_load:
                _run(["ip", "netns", "add", load.namespace])
                self._created.append(load.namespace)
                _run([*load.prefix, "ip", "link", "set", "lo", "up"])
                _link(self.client_prefix, load, *load.master_link)
            for host in self.hosts:
                _create_app(self, host)
        except BaseException:
            self.teardown()
            raise
        return self

    def load_hosts(self) -> list[tuple[list[str], str]]:
        """Where a distributed run's workers run, each as ``(command prefix, the master's address
        from there)``: the client namespace (the master's own) and each further load host."""
        return [(self.client_prefix, "127.0.0.1")] + [(load.prefix, load.master_link[2]) for load in self.extra_load]

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

    def renew_app(self, ports: int | None = None, tcp_tw_reuse: int | None = None) -> None:
        """Replace every application namespace (and its veth pairs) with a fresh one, so TIME_WAIT
        sockets left by one run do not eat the next run's ports. The db and client namespaces stay.
        ``ports`` and ``tcp_tw_reuse`` set the new namespaces' range size and reuse for this run
        (default: the topology's ports and 2, Linux's default)."""
        self.port_range = self._range(ports or self.ports)
        self.tcp_tw_reuse = DEFAULT_TW_REUSE if tcp_tw_reuse is None else tcp_tw_reuse
        for host in self.hosts:
            if host.namespace in self._created:
                subprocess.run(["ip", "netns", "del", host.namespace], capture_output=True)
                self._created.remove(host.namespace)
            # The kernel tears a deleted namespace down later (while a process of it is still exiting),
            # and its veth pairs with it: their far ends, deleted now, cannot clash with the new ones.
            far_ends = [(self.db_ns, host.db_if), (self.client_ns, host.client_if)] + [
                (load.namespace, load.app_link(host.index)[1]) for load in self.extra_load
            ]
            for namespace, interface in far_ends:
                subprocess.run(["ip", "-n", namespace, "link", "del", interface], capture_output=True)
        try:
            for host in self.hosts:
                _create_app(self, host)
        except BaseException:
            self.teardown()
            raise

    def teardown(self) -> None:
        """Delete the namespaces this object created; deleting one removes its veth ends, its
        addresses and its sockets (and the bridge, with the database namespace)."""
        for namespace in reversed(self._created):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        self._created.clear()

    def __enter__(self) -> Netns:
        return self.setup()

    def __exit__(self, *exc_info: object) -> None:
        self.teardown()


def _link(near_prefix: list[str], load: LoadHost, near_if: str, far_if: str, near: str, far: str) -> None:
    """A veth pair from a namespace (``near_prefix``) to ``load``'s, on a /30: ``near`` here, ``far`` there."""
    _run(
        [
            *near_prefix,
            "ip",
            "link",
            "add",
            near_if,
            "type",
            "veth",
            "peer",
            "name",
            far_if,
            "netns",
            load.namespace,
        ]
    )
    _run([*near_prefix, "ip", "addr", "add", f"{near}/30", "dev", near_if])
    _run([*load.prefix, "ip", "addr", "add", f"{far}/30", "dev", far_if])
    _run([*near_prefix, "ip", "link", "set", near_if, "up"])
    _run([*load.prefix, "ip", "link", "set", far_if, "up"])


def _create_app(net: Netns, host: AppHost) -> None:
    """Make ``host``'s namespace of ``net``: its links to the database's bridge, to the client
    namespace and to each further load host, their addresses, netem, and the port range and reuse."""
    _run(["ip", "netns", "add", host.namespace])
    net._created.append(host.namespace)
    app, db, client = host.prefix, net.db_prefix, net.client_prefix
    _run([*app, "ip", "link", "set", "lo", "up"])
    # Both ends of each pair are made from inside the namespaces: the addresses never exist in the host's.
    _run([*app, "ip", "link", "add", host.app_if, "type", "veth", "peer", "name", host.db_if, "netns", net.db_ns])
    _run([*app, "ip", "addr", "add", f"{host.app_host}/24", "dev", host.app_if])
    _run([*db, "ip", "link", "set", host.db_if, "master", net.bridge])
    _run(
        [
            *app,
            "ip",
            "link",
            "add",
            host.service_if,
            "type",
            "veth",
            "peer",
            "name",
            host.client_if,
            "netns",
            net.client_ns,
        ]
    )
    _run([*app, "ip", "addr", "add", f"{host.service_host}/30", "dev", host.service_if])
    _run([*client, "ip", "addr", "add", f"{host.client_host}/30", "dev", host.client_if])
    for prefix, interface, delay in (
        (app, host.app_if, net.delay_ms),
        (db, host.db_if, net.delay_ms),
        (app, host.service_if, 0.0),
        (client, host.client_if, 0.0),
    ):
        _run([*prefix, "ip", "link", "set", interface, "up"])
        if delay:
            _add_netem(prefix, interface, delay)
    for load in net.extra_load:
        near_if, far_if, near, far = load.app_link(host.index)
        _link(app, load, near_if, far_if, near, far)
        # The service listens on its address toward the first client namespace; from here it is one hop away.
        _run([*load.prefix, "ip", "route", "add", f"{host.service_host}/32", "via", near])
    low, high = net.port_range
    _run([*app, "sysctl", "-q", "-w", f"net.ipv4.ip_local_port_range={low} {high}"])
    _run([*app, "sysctl", "-q", "-w", f"net.ipv4.tcp_tw_reuse={net.tcp_tw_reuse}"])


def make(
    name: str, *, ports: int = 1000, delay_ms: float = 0.0, hosts: int = 1, load_hosts: int = 1
) -> Loopback | Netns:
    """The topology called ``name`` (``loopback`` or ``netns``), with ``hosts`` application hosts
    and ``load_hosts`` load generator hosts (netns only; loopback runs every worker here)."""
    if name == "loopback":
        if delay_ms:
            raise TopologyError("--delay-ms needs --topology netns (tc netem on the veth pair)")
        if hosts != 1:
            raise TopologyError("--hosts needs --topology netns (one network namespace per application host)")
        return Loopback()
    if name == "netns":
        Netns.check()
        return Netns(ports=ports, delay_ms=delay_ms, hosts=hosts, load_hosts=load_hosts)
    raise TopologyError(f"unknown topology {name!r}: use loopback or netns")
