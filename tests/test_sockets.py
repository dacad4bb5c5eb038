"""The socket table parser on a table written by hand and on real sockets."""

from __future__ import annotations

import socket

from helpers import wait_until

from healthz import sockets

TABLE = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:9C40 010012C6:1538 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
   1: 0100007F:9C41 010012C6:1538 01 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000
   2: 0100007F:9C42 010012C6:1F90 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
   3: garbage
"""
# ::ffff:127.0.0.1 port 40000 -> ::1 port 5432, as the kernel prints them on little-endian machines.
TABLE6 = """  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0000000000000000FFFF00000100007F:9C40 00000000000000000000000001000000:1538 01 00000000:00000000 00:00000000 00000000     0        0 1 1
"""


def test_parse_table_decodes_addresses_ports_and_states():
    rows = sockets.parse_table(TABLE)
    assert rows[0] == sockets.Socket("127.0.0.1", 0x9C40, "198.18.0.1", 0x1538, "TIME_WAIT")
    assert len(rows) == 3  # the garbage line is skipped
    assert sockets.states(sockets.toward(rows, 0x1538)) == {"TIME_WAIT": 1, "ESTABLISHED": 1}
    assert sockets.states(sockets.toward(rows, 0x1F90)) == {"TIME_WAIT": 1}
    assert sockets.toward(rows, 0x1538, {"198.18.0.5"}) == []
    assert [s.local_port for s in sockets.parse_table(TABLE, remote_port=0x1F90)] == [0x9C42]
    assert rows[1].inode == 1 and rows[0].inode == 0


def test_ipv4_mapped_addresses_come_out_as_ipv4():
    (row,) = sockets.parse_table(TABLE6)
    assert (row.local_address, row.local_port, row.remote_address, row.remote_port) == ("127.0.0.1", 40000, "::1", 5432)


def test_read_sees_a_real_connection_and_its_time_wait():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        local_port = client.getsockname()[1]
        accepted, _ = server.accept()
        mine = sockets.toward(sockets.read(), port, sockets.resolve("localhost", port))
        assert [(s.local_port, s.state) for s in mine] == [(local_port, "ESTABLISHED")]
        client.close()  # the side that closes first keeps TIME_WAIT
        accepted.close()
        assert wait_until(
            lambda: (
                [(s.local_port, s.state) for s in sockets.toward(sockets.read(), port)] == [(local_port, "TIME_WAIT")]
            ),
            timeout=5,
        )


def test_resolve_falls_back_to_the_name():
    assert "127.0.0.1" in sockets.resolve("localhost", 5432)
    assert sockets.resolve("no-such-host.invalid", 5432) == {"no-such-host.invalid"}
