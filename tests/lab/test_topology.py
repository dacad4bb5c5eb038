"""The netns topology on the real kernel: what it creates, and that it leaves nothing behind."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from healthz.lab import topology
from healthz.lab.topology import Loopback, Netns, TopologyError, lab_namespaces

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="the netns topology needs root and iproute2"
)


def _sh(*command: str) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


@needs_root
def test_netns_builds_three_namespaces_in_a_line_and_removes_them():
    net = Netns(ports=500, tag="t1")
    with net:
        assert {net.client_ns, net.app_ns, net.db_ns} <= set(lab_namespaces())
        assert _sh(*net.app_prefix, "cat", "/proc/sys/net/ipv4/ip_local_port_range").split() == ["40000", "40499"]
        assert _sh(*net.app_prefix, "cat", "/proc/sys/net/ipv4/tcp_tw_reuse").strip() == "2"
        app_addresses = _sh("ip", "-n", net.app_ns, "-4", "addr")
        assert net.app_host in app_addresses and net.service_host in app_addresses
        assert net.db_host in _sh("ip", "-n", net.db_ns, "-4", "addr")
        assert "198.18." not in _sh("ip", "-4", "addr"), "the lab's addresses exist only inside its namespaces"
        # The app reaches the database over its veth pair.
        probe = f"import socket; socket.create_connection(('{net.db_host}', 9), timeout=2)"
        reached = subprocess.run([*net.app_prefix, "python3", "-c", probe], capture_output=True, text=True)
        assert "refused" in reached.stderr.lower(), reached.stderr  # a RST from the db namespace: the link works
        inode = _sh(*net.app_prefix, "stat", "-L", "-c", "%i", "/proc/self/ns/net")
        net.renew_app()
        assert net.app_ns in lab_namespaces()
        assert _sh(*net.app_prefix, "stat", "-L", "-c", "%i", "/proc/self/ns/net") != inode, "a fresh app namespace"
        assert _sh(*net.app_prefix, "cat", "/proc/sys/net/ipv4/ip_local_port_range").split() == ["40000", "40499"]
        # A scenario's own knobs hold for its run only: the next renewal is back to the topology's.
        net.renew_app(ports=200, tcp_tw_reuse=1)
        assert _sh(*net.app_prefix, "cat", "/proc/sys/net/ipv4/ip_local_port_range").split() == ["40000", "40199"]
        assert _sh(*net.app_prefix, "cat", "/proc/sys/net/ipv4/tcp_tw_reuse").strip() == "1" == str(net.tcp_tw_reuse)
        net.renew_app()
        assert _sh(*net.app_prefix, "cat", "/proc/sys/net/ipv4/tcp_tw_reuse").strip() == "2"
        assert net.port_range == (40000, 40499)
    assert not [ns for ns in lab_namespaces() if "-t1-" in ns]


@needs_root
def test_netns_with_three_application_hosts_on_a_bridge():
    net = Netns(ports=300, tag="t3", hosts=3)
    with net:
        assert len({h.namespace for h in net.hosts}) == 3 and {h.namespace for h in net.hosts} <= set(lab_namespaces())
        assert len({h.app_host for h in net.hosts} | {h.service_host for h in net.hosts} | {net.db_host}) == 7
        for host in net.hosts:
            assert _sh(*host.prefix, "cat", "/proc/sys/net/ipv4/ip_local_port_range").split() == ["40000", "40299"]
            probe = f"import socket; socket.create_connection(('{net.db_host}', 9), timeout=2)"
            reached = subprocess.run([*host.prefix, "python3", "-c", probe], capture_output=True, text=True)
            assert "refused" in reached.stderr.lower(), (host.name, reached.stderr)
            # The client namespace reaches each host's service address.
            probe = f"import socket; socket.create_connection(('{host.service_host}', 9), timeout=2)"
            reached = subprocess.run([*net.client_prefix, "python3", "-c", probe], capture_output=True, text=True)
            assert "refused" in reached.stderr.lower(), (host.name, reached.stderr)
        assert "198.18." not in _sh("ip", "-4", "addr")
        net.renew_app()
        assert {h.namespace for h in net.hosts} <= set(lab_namespaces())
    assert not [ns for ns in lab_namespaces() if "-t3-" in ns]


_SERVE = """
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(self.client_address[0].encode())
    def log_message(self, *args):
        pass
server = http.server.HTTPServer((sys.argv[1], 8000), Handler)
for _ in range(int(sys.argv[2])):
    server.handle_request()
"""
_GET = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"


@needs_root
def test_a_second_load_host_reaches_every_application_host_and_the_first_client_namespace():
    """Two load hosts (locust's master in the first): the service sees each from its own address,
    and a worker on the second reaches the master's; both survive a renewal of the app hosts."""
    net = Netns(ports=300, tag="t5", hosts=2, load_hosts=2)
    with net:
        (first, first_master), (second, second_master) = net.load_hosts()
        assert first == net.client_prefix and first_master == "127.0.0.1"
        assert net.extra_load[0].namespace in lab_namespaces()
        net.renew_app()
        for host in net.hosts:
            server = subprocess.Popen([*host.prefix, "python3", "-c", _SERVE, host.service_host, "2"])
            try:
                url = f"http://{host.service_host}:8000/"
                seen = {
                    _sh(*prefix, "python3", "-c", f"import time; time.sleep(0.3); {_GET}", url).strip()
                    for prefix in (first, second)
                }
            finally:
                server.wait(10)
            assert len(seen) == 2 and host.client_host in seen, seen
        master = subprocess.Popen([*first, "python3", "-c", _SERVE, "0.0.0.0", "1"])
        try:
            seen = _sh(
                *second, "python3", "-c", f"import time; time.sleep(0.3); {_GET}", f"http://{second_master}:8000/"
            )
        finally:
            master.wait(10)
        assert seen.strip() == net.extra_load[0].master_link[3]
    assert not [ns for ns in lab_namespaces() if "-t5-" in ns]


@needs_root
def test_a_failure_to_create_is_an_error_and_leaves_nothing():
    with pytest.raises(TopologyError, match="ip netns add .* failed"):
        Netns(tag="bad/name").setup()
    assert not [ns for ns in lab_namespaces() if "bad" in ns]


def test_netns_refuses_without_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(TopologyError, match="needs root .* or use --topology loopback"):
        Netns.check()
    with pytest.raises(TopologyError, match="needs root"):
        topology.make("netns")


def test_bad_topology_arguments():
    with pytest.raises(TopologyError, match="--ports must be between 16 and 28000"):
        Netns(ports=5)
    with pytest.raises(TopologyError, match="--delay-ms needs --topology netns"):
        topology.make("loopback", delay_ms=5)
    with pytest.raises(TopologyError, match="unknown topology 'wifi'"):
        topology.make("wifi")
    with pytest.raises(TopologyError, match="--hosts needs --topology netns"):
        topology.make("loopback", hosts=2)
    with pytest.raises(TopologyError, match="--hosts must be between 1 and 8, got 9"):
        Netns(hosts=9)


def test_loopback_says_it_is_not_faithful():
    loop = Loopback()
    assert loop.faithful is False and "tcp_tw_reuse = 2" in loop.describe()
    assert loop.port_range is not None and loop.port_range[0] < loop.port_range[1]
    assert loop.tcp_tw_reuse in (0, 1, 2)
    loop.renew_app()
    with pytest.raises(TopologyError, match="tcp_tw_reuse is set per application namespace: it needs --topology netns"):
        loop.renew_app(tcp_tw_reuse=1)


@needs_root
def test_netem_delay_is_applied_or_refused_clearly():
    net = Netns(delay_ms=5, tag="t3")
    try:
        net.setup()
    except TopologyError as exc:  # kernels without sch_netem, such as this project's build machine
        assert "--delay-ms needs the kernel's netem qdisc" in str(exc)
    else:
        try:
            assert "netem" in _sh("ip", "netns", "exec", net.app_ns, "tc", "qdisc", "show", "dev", net.app_if)
        finally:
            net.teardown()
    assert not [ns for ns in lab_namespaces() if "-t3-" in ns]
