"""The kernel's TCP socket table (``/proc/<pid>/net/tcp`` and ``tcp6``) as Python values.

Each network namespace has its own table; reading ``/proc/<pid>/net`` shows the namespace of
process ``pid`` (``/proc/self/net``: the reader's). Addresses are printed in hex, each 32-bit word
in the host's byte order; IPv4 addresses mapped into IPv6 (``::ffff:a.b.c.d``) come out as IPv4, so
one address matches whichever table holds the socket.
"""

from __future__ import annotations

import collections
import errno
import ipaddress
import os
import socket
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

#: How libpq words EADDRNOTAVAIL (strerror), in the service's log and in its errors.
EADDRNOTAVAIL_TEXT = "Cannot assign requested address"
#: TCP states as /proc/net/tcp numbers them (include/net/tcp_states.h).
TCP_STATES = {
    "01": "ESTABLISHED",
    "02": "SYN_SENT",
    "03": "SYN_RECV",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0A": "LISTEN",
    "0B": "CLOSING",
}


class Socket(NamedTuple):
    """One socket; ``inode`` is 0 for sockets no process holds any more (TIME_WAIT)."""

    local_address: str
    local_port: int
    remote_address: str
    remote_port: int
    state: str
    inode: int = 0


def decode_address(text: str) -> tuple[str, int]:
    """``"0100007F:1F90"`` as ``("127.0.0.1", 8080)``; 32 hex digits are IPv6."""
    address, port = text.rsplit(":", 1)
    raw = bytes.fromhex(address)
    # The kernel prints each 32-bit word as a native integer.
    words = b"".join(int.from_bytes(raw[i : i + 4], sys.byteorder).to_bytes(4, "big") for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(words)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return str(ip), int(port, 16)


def parse_table(text: str, remote_port: int | None = None) -> list[Socket]:
    """The sockets of one ``/proc/net/tcp``-format table (only those whose remote port is
    ``remote_port``, when given: decoding tens of thousands of lines costs); lines that do not
    parse are skipped."""
    found = []
    suffix = None if remote_port is None else f":{remote_port:04X}"
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or (suffix is not None and not fields[2].upper().endswith(suffix)):
            continue
        try:
            local, remote = decode_address(fields[1]), decode_address(fields[2])
            inode = int(fields[9]) if len(fields) > 9 else 0
        except ValueError:
            continue
        found.append(Socket(*local, *remote, TCP_STATES.get(fields[3].upper(), fields[3]), inode))
    return found


def read(net: str | Path = "/proc/self/net", remote_port: int | None = None) -> list[Socket]:
    """Every TCP socket (IPv4 and IPv6) in the namespace whose ``net`` folder is given, or those
    toward ``remote_port``; empty when it cannot be read (the process is gone)."""
    found: list[Socket] = []
    for table in ("tcp", "tcp6"):
        try:
            found += parse_table((Path(net) / table).read_text(), remote_port)
        except OSError:
            pass
    return found


def toward(sockets: Iterable[Socket], port: int, addresses: Iterable[str] | None = None) -> list[Socket]:
    """The sockets whose remote end is ``port`` (on one of ``addresses``, when given): a client's
    connections to that server, in every state."""
    wanted = None if addresses is None else set(addresses)
    return [s for s in sockets if s.remote_port == port and (wanted is None or s.remote_address in wanted)]


def states(sockets: Iterable[Socket]) -> collections.Counter:
    """The sockets counted by state name."""
    return collections.Counter(s.state for s in sockets)


def resolve(host: str, port: int) -> set[str]:
    """The addresses ``host`` resolves to (``localhost``: 127.0.0.1 and ::1), or ``{host}`` when it
    does not resolve."""
    try:
        return {
            str(ipaddress.ip_address(info[4][0].split("%")[0]))
            for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
        }
    except (OSError, ValueError):
        return {host}


#: Why this host cannot even start a connection to an address (no source address of its family, no
#: route), as errno values: not a shortage of ports.
_NO_PATH = (errno.EADDRNOTAVAIL, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EAFNOSUPPORT)


def unroutable(addresses: Iterable[str], port: int) -> dict[str, str]:
    """Of ``addresses``, those this host cannot send to at all, each with the kernel's reason
    (``{"::1": "Cannot assign requested address"}`` where IPv6 is disabled). A UDP ``connect()``
    asks the routing table for a source address without sending a packet or taking a TCP port."""
    found: dict[str, str] = {}
    for address in addresses:
        try:
            family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
        except ValueError:
            continue
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect((address, port))
        except OSError as exc:
            if exc.errno in _NO_PATH:
                found[address] = os.strerror(exc.errno)
    return found


class OpenedCounter:
    """Connections opened toward a server, from snapshots of the socket table: a live socket
    (an inode) that was not there at the first snapshot, or a TIME_WAIT port that was neither
    there (open or closed) nor seen live (opened and closed between two snapshots). One opened and closed between
    snapshots on a port that was already in TIME_WAIT (reused, ``tcp_tw_reuse``) is missed, so on
    loopback the count errs low."""

    def __init__(self, first: list[Socket]) -> None:
        self.baseline_live = {s.inode for s in first if s.inode}
        # Ports at the first snapshot, open or closed: one of these closing later was not opened in the window.
        self.baseline_closed = {s[:4] for s in first}
        self.live: dict[int, tuple] = {}
        self.closed: set[tuple] = set()

    def add(self, snapshot: list[Socket]) -> None:
        for s in snapshot:
            if s.inode and s.inode not in self.baseline_live:
                self.live.setdefault(s.inode, s[:4])
            elif s.state == "TIME_WAIT" and s[:4] not in self.baseline_closed:
                self.closed.add(s[:4])

    @property
    def opened(self) -> int:
        return len(self.live) + len(self.closed - set(self.live.values()))


def is_ip(text: str) -> bool:
    """Whether ``text`` is an IP address (not a host name)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
