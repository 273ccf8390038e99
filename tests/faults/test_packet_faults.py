"""Packet faults in a real lab, on plain TCP flows: what gets through, in which direction."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from harness.faults import FAULTS, PacketFault
from harness.faults import build as build_spec
from harness.faults.base import Flow
from harness.faults.site import Site
from harness.lab.local import LocalLab
from harness.lab.netns import entered
from harness.scenario.model import Fault

pytestmark = pytest.mark.usefixtures("no_leftovers")


@dataclass
class Pair:
    client: socket.socket
    server: socket.socket

    @property
    def flow(self) -> Flow:
        addr, port = self.client.getsockname()
        saddr, sport = self.client.getpeername()
        return Flow(addr, port, saddr, sport)


def build(kind: str, direction: str | None = None) -> PacketFault:
    fault = build_spec(Fault.model_validate({"type": kind, "direction": direction}))
    assert isinstance(fault, PacketFault)
    return fault


def _arrives(sender: socket.socket, receiver: socket.socket, wait: float = 0.6) -> bool:
    """Does a few bytes' message get across within ``wait``?"""
    sender.sendall(b"hello")
    receiver.settimeout(wait)
    try:
        return receiver.recv(5) == b"hello"
    except TimeoutError:
        return False


@pytest.fixture
def lab() -> Iterator[tuple[LocalLab, Pair, Pair]]:
    """A lab with two established flows: one to fault, one that must stay untouched."""
    with LocalLab() as lab:
        with entered(lab.server_ns):
            srv = socket.socket()
            srv.bind((lab.server_addr, 7000))
            srv.listen()
        pairs = []
        with entered(lab.client_ns):
            clients = [socket.create_connection((lab.server_addr, 7000), timeout=2) for _ in range(2)]
        for c in clients:
            pairs.append(Pair(c, srv.accept()[0]))
        srv.close()
        try:
            yield lab, pairs[0], pairs[1]
        finally:
            for p in pairs:
                p.client.close()
                p.server.close()


DIRECTIONS = {  # fault -> (client->server gets through, server->client gets through)
    "blackhole": (False, False),
    "client-vanish": (False, False),
    "one-way-drop:to-server": (False, True),
    "one-way-drop:to-client": (True, False),
}


@pytest.mark.parametrize("name", sorted(DIRECTIONS))
def test_fault_drops_the_right_directions_of_the_faulted_flow_only(name: str, lab) -> None:
    lab_, hit, spared = lab
    kind, _, direction = name.partition(":")
    fault = build(kind, direction or None)
    fault.apply(Site(lab_, [hit.flow]))
    try:
        up, down = DIRECTIONS[name]
        assert _arrives(hit.client, hit.server) is up
        assert _arrives(hit.server, hit.client) is down
        assert _arrives(spared.client, spared.server)
        assert _arrives(spared.server, spared.client)
        server_tables = subprocess.run(["ip", "netns", "exec", lab_.server_ns, "nft", "list", "tables"],
                                       capture_output=True, text=True).stdout
        assert server_tables == ""      # never in the measured server's own stack
    finally:
        fault.revert()


def test_peer_reboot_answers_the_servers_next_packet_with_a_reset(lab) -> None:
    lab_, hit, spared = lab
    fault = build("peer-reboot")
    fault.apply(Site(lab_, [hit.flow]))
    try:
        hit.server.sendall(b"are you there?")
        hit.server.settimeout(2)
        with pytest.raises(ConnectionResetError):
            for _ in range(20):
                hit.server.sendall(b"x")
                time.sleep(0.05)
        assert _arrives(spared.server, spared.client)
    finally:
        fault.revert()


def test_revert_lets_the_flow_recover(lab) -> None:
    lab_, hit, _ = lab
    fault = build("blackhole")
    fault.apply(Site(lab_, [hit.flow]))
    hit.client.sendall(b"hello")   # lost while the fault holds, retransmitted after
    time.sleep(0.3)
    fault.revert()
    hit.server.settimeout(5)
    assert hit.server.recv(5) == b"hello"
    tables = subprocess.run(["ip", "netns", "exec", lab_.router_ns, "nft", "list", "tables"],
                            capture_output=True, text=True).stdout
    assert "connchaos" not in tables


def test_every_registered_packet_fault_acts_outside_the_server() -> None:
    packet = {name: cls for name, cls in FAULTS.items() if issubclass(cls, PacketFault)}
    assert set(packet) == {"blackhole", "client-vanish", "one-way-drop", "peer-reboot", "packet-loss",
                           "syn-blackhole"}
    for name, cls in packet.items():
        assert cls.where in ("router", "client"), name
        assert cls.peer in ("silent", "reset"), name
