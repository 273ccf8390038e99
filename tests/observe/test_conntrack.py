"""The ctnetlink reader: its parser on a message built by hand, and in a real lab the
router's conntrack table with the middlebox's timeout, NAT and expiry."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import pytest

from harness.lab.local import LocalLab
from harness.lab.middlebox import TABLE, MiddleboxConfig, install, router_timeout
from harness.lab.netns import entered, read_sysctl
from harness.observe.conntrack import ConntrackTable, ExpiryWatch, Tuple, parse_entry


def attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * ((4 - length % 4) % 4)


def nested(kind: int, *parts: bytes) -> bytes:
    return attr(kind | 0x8000, b"".join(parts))


def tuple_attr(kind: int, src: str, sport: int, dst: str, dport: int) -> bytes:
    return nested(kind,
                  nested(1, attr(1, socket.inet_aton(src)), attr(2, socket.inet_aton(dst))),
                  nested(2, attr(1, bytes([6])), attr(2, sport.to_bytes(2, "big")),
                         attr(3, dport.to_bytes(2, "big"))))


def test_parse_entry_reads_both_tuples_and_the_timeout() -> None:
    body = (struct.pack("=BBH", socket.AF_INET, 0, 0)
            + tuple_attr(1, "10.77.0.2", 40112, "10.77.1.2", 5432)
            + tuple_attr(2, "10.77.1.2", 5432, "10.77.1.1", 61000)
            + attr(7, (4).to_bytes(4, "big")))
    entry = parse_entry(body, 0, len(body))
    assert entry is not None
    assert entry.orig == Tuple("10.77.0.2", 40112, "10.77.1.2", 5432)
    assert entry.reply == Tuple("10.77.1.2", 5432, "10.77.1.1", 61000)
    assert entry.timeout_s == 4
    assert str(entry.orig) == "10.77.0.2:40112 -> 10.77.1.2:5432"


def test_parse_entry_skips_what_is_not_tcp() -> None:
    udp = nested(1, nested(1, attr(1, socket.inet_aton("1.2.3.4")), attr(2, socket.inet_aton("5.6.7.8"))),
                 nested(2, attr(1, bytes([17]))))
    body = struct.pack("=BBH", socket.AF_INET, 0, 0) + udp + udp
    assert parse_entry(body, 0, len(body)) is None


@pytest.fixture
def lab(no_leftovers: None) -> Iterator[LocalLab]:
    with LocalLab(run_id="test-conntrack") as built:
        yield built


def connect(lab: LocalLab) -> tuple[socket.socket, socket.socket]:
    with entered(lab.server_ns):
        listener = socket.create_server((lab.server_addr, 7000))
    with entered(lab.client_ns):
        client = socket.socket()
    client.connect((lab.server_addr, 7000))
    server, _ = listener.accept()
    listener.close()
    return client, server


def test_the_router_forgets_an_idle_flow_after_its_timeout_and_drops_the_rest(lab: LocalLab) -> None:
    install(lab, MiddleboxConfig(idle_timeout_s=1, on_expiry="drop"))
    assert router_timeout(lab.router_ns) == 1
    assert read_sysctl(lab.router_ns, "net.netfilter.nf_conntrack_tcp_loose") == "0"
    assert read_sysctl(lab.client_ns, "net.netfilter.nf_conntrack_tcp_timeout_established") != "1"
    client, server = connect(lab)
    with client, server, ConntrackTable(lab.router_ns) as table:
        flow = Tuple(*client.getsockname(), *client.getpeername())
        entry = table.dump()[flow]
        # masquerade: the server sees the router's address, and the port the entry says
        assert entry.reply.dst == "10.77.1.1" and server.getpeername() == (entry.reply.dst, entry.reply.dport)
        client.send(b"x")
        assert server.recv(1) == b"x"
        quiet_from = time.time()
        seen: list[float] = []
        watch = ExpiryWatch(table, {0: flow}, lambda sid, at, e: seen.append(at - quiet_from))
        watch.start()
        while not seen and time.time() - quiet_from < 3:
            watch.poll()
            time.sleep(0.005)
        assert seen and 0.99 <= seen[0] <= 1.06, seen
        # a mid-stream packet of the forgotten flow is not taken up again (loose 0): dropped
        server.send(b"late")
        client.settimeout(0.5)
        with pytest.raises(TimeoutError):
            client.recv(4)
        assert flow not in table.dump()
        rules = lab.run_in("rtr", ["nft", "list", "table", *TABLE.split()]).stdout
        assert "masquerade" in rules and "ct state invalid" in rules


def test_a_resetting_middlebox_answers_both_ends_with_a_reset(lab: LocalLab) -> None:
    install(lab, MiddleboxConfig(idle_timeout_s=1, on_expiry="reset", nat=False))
    client, server = connect(lab)
    with client, server, ConntrackTable(lab.router_ns) as table:
        flow = Tuple(*client.getsockname(), *client.getpeername())
        assert table.dump()[flow].reply.dst == lab.client_addr      # no NAT
        time.sleep(1.2)
        server.send(b"late")
        server.settimeout(1)
        with pytest.raises(ConnectionResetError):
            server.recv(4)
        client.send(b"late too")
        client.settimeout(1)
        with pytest.raises(ConnectionResetError):
            client.recv(4)
