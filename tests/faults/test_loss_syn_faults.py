"""packet-loss and syn-blackhole in a real lab: the share nftables drops, and new connections
hanging while established ones work."""

from __future__ import annotations

import math
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.core.reconnect import predict_reconnect
from harness.faults.base import Flow
from harness.faults.packet_loss import PacketLoss
from harness.faults.site import Site
from harness.faults.syn_blackhole import SynBlackhole
from harness.lab.local import LocalLab
from harness.lab.netns import entered

pytestmark = pytest.mark.usefixtures("no_leftovers")
PORT = 7000


def flow_of(client: socket.socket) -> Flow:
    addr, port = client.getsockname()
    saddr, sport = client.getpeername()
    return Flow(addr, port, saddr, sport)


@pytest.fixture
def lab() -> Iterator[tuple[LocalLab, list[tuple[socket.socket, socket.socket]], socket.socket]]:
    """A lab with two established flows and the server still listening."""
    with LocalLab() as lab:
        with entered(lab.server_ns):
            srv = socket.socket()
            srv.bind((lab.server_addr, PORT))
            srv.listen()
        with entered(lab.client_ns):
            clients = [socket.create_connection((lab.server_addr, PORT), timeout=2) for _ in range(2)]
        pairs = [(c, srv.accept()[0]) for c in clients]
        try:
            yield lab, pairs, srv
        finally:
            for c, s in pairs:
                c.close()
                s.close()
            srv.close()


def counters(lab: LocalLab) -> list[int]:
    argv = ["ip", "netns", "exec", lab.router_ns, "nft", "list", "table", "inet", "connchaos"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return [int(n) for n in re.findall(r"counter packets (\d+)", out)]


def test_packet_loss_drops_its_share_of_the_faulted_flow_only(lab) -> None:  # type: ignore[no-untyped-def]
    lab_, ((hit_c, hit_s), (spared_c, spared_s)), _ = lab
    fault = PacketLoss(loss=0.3)
    fault.apply(Site(lab_, [flow_of(hit_c)]))
    try:
        for sock in (hit_c, hit_s, spared_c, spared_s):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # both ends talk (each packet, first send or retransmission, is drawn on its own);
        # losses stall TCP on its RTO, so this runs until enough packets were seen
        hit_s.setblocking(False)
        hit_c.setblocking(False)
        sent, end = 0, time.monotonic() + 8
        while time.monotonic() < end and sum(counters(lab_)[:2]) < 200:
            for sock in (hit_c, hit_s):
                try:
                    sock.send(b"x")
                    sock.recv(100)
                except BlockingIOError:
                    pass
            spared_c.send(b"y")
            sent += 1
            time.sleep(0.002)
        spared_s.settimeout(2)
        got = b""
        while len(got) < sent:
            got += spared_s.recv(sent)
        assert got == b"y" * sent      # the spared flow lost nothing
        up, down, dropped_up, dropped_down = counters(lab_)
        total, dropped = up + down, dropped_up + dropped_down
        assert total >= 60     # TCP backs off under loss: fewer packets on a slow run
        share = dropped / total
        assert abs(share - 0.3) <= 4 * math.sqrt(0.3 * 0.7 / total), (dropped, total)
    finally:
        fault.revert()


def test_syn_blackhole_hangs_new_connections_and_spares_established_ones(lab) -> None:  # type: ignore[no-untyped-def]  # noqa: E501
    lab_, ((c, s), _), _ = lab
    fault = SynBlackhole(syn_retries=1)
    fault.apply(Site(lab_, [flow_of(c)]))
    try:
        c.sendall(b"ping")
        s.settimeout(2)
        assert s.recv(4) == b"ping"           # established: untouched
        path = Path("/proc/sys/net/ipv4/tcp_syn_linear_timeouts")
        with entered(lab_.client_ns):
            linear = int(path.read_text()) if path.exists() else 0
        with entered(lab_.client_ns):
            new = socket.socket()
            new.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, 1)
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            new.connect((lab_.server_addr, PORT))
        took = time.monotonic() - start
        new.close()
        predicted = predict_reconnect(1, linear, None)
        assert predicted.at_s is not None
        assert predicted.at_s <= took <= predicted.at_s + 0.3, (took, predicted)
    finally:
        fault.revert()
