"""The lean socket-table reader against pyroute2's, live, on the same namespace: sockets in
several TCP states and enough of them for multi-part dumps and the bulk path."""

from __future__ import annotations

import time

import pytest

from harness.errors import LabError
from harness.lab.local import LocalLab
from harness.observe.sockdiag import Key, SocketTable, SockInfo, open_pyroute2, pyroute2_dump
from tests.observe.sockstates import OTHER_PORT, PORT, socket_states

pytestmark = pytest.mark.usefixtures("no_leftovers")

# Fields that describe the socket; the last_* ones are "milliseconds ago" and grow between
# two reads, so they are compared as lying between the lean reads before and after.
STABLE = ("state", "timer", "probes", "retransmits", "backoff", "unacked", "rto_s", "inode")
AGES = ("last_data_recv_s", "last_ack_recv_s", "last_data_sent_s")


def stable(table: dict[Key, SockInfo]) -> dict[Key, tuple[object, ...]]:
    return {k: tuple(getattr(v, f) for f in STABLE) for k, v in table.items()}


def same_as_pyroute2(table: SocketTable, ds: object, port: int) -> dict[Key, SockInfo]:
    """Lean, pyroute2, lean again until nothing but the ages moved in between (a
    retransmission timer may fire); then pyroute2's table must equal the lean one."""
    for _ in range(20):
        before = table.dump(port)
        reference = pyroute2_dump(ds, port)
        after = table.dump(port)
        if stable(before) == stable(after):
            break
        time.sleep(0.05)
    else:
        pytest.fail("the socket table never held still for three reads")
    assert set(reference) == set(before) == set(after)
    assert stable(reference) == stable(before)
    for key, ref in reference.items():
        for field in AGES:
            low, high = getattr(before[key], field), getattr(after[key], field)
            assert low <= getattr(ref, field) <= high, (key, field, low, high, ref)
    return before


def test_the_lean_reader_sees_what_pyroute2_sees_in_every_state() -> None:
    with LocalLab() as lab, socket_states(lab) as ports:
        ds = open_pyroute2(lab.server_ns)
        try:
            with SocketTable(lab.server_ns) as table:
                seen = same_as_pyroute2(table, ds, PORT)
                assert table.dump(OTHER_PORT) and not set(table.dump(OTHER_PORT)) & set(seen)
        finally:
            ds.close()
    by_client = {key[3]: info for key, info in seen.items()}
    assert set(by_client) == set(ports.values())            # the listener is not in it
    assert by_client[ports["idle0"]].timer == "keepalive"
    assert by_client[ports["in-flight"]].unacked >= 1
    assert by_client[ports["in-flight"]].retransmits >= 1
    assert by_client[ports["time-wait"]].state == "TIME_WAIT"
    assert by_client[ports["fin-wait2"]].state == "FIN_WAIT2"
    assert by_client[ports["close-wait"]].state == "CLOSE_WAIT"
    assert {k[:3] for k in seen} == {(lab.server_addr, PORT, lab.client_addr)}


def test_hundreds_of_sockets_come_in_several_parts_and_read_the_same() -> None:
    with LocalLab() as lab, socket_states(lab, idle=400) as ports:
        ds = open_pyroute2(lab.server_ns)
        try:
            with SocketTable(lab.server_ns) as table:
                seen = same_as_pyroute2(table, ds, PORT)
                assert table._parser.layout is not None     # the bulk path was open to it
        finally:
            ds.close()
    assert len(seen) == len(ports) >= 400


def test_a_dump_cut_short_does_not_spoil_the_next() -> None:
    """Ctrl-C between two parts of a dump leaves the rest unread: the next dump reads it
    away first (the kernel would answer EBUSY)."""
    with LocalLab() as lab, socket_states(lab, idle=400) as ports, SocketTable(lab.server_ns) as table:
        sock = table._sock

        class Interrupted:
            """The table's socket, with Ctrl-C arriving as the second part comes in."""

            def __init__(self) -> None:
                self.parts = 0

            def __getattr__(self, name: str) -> object:
                return getattr(sock, name)

            def recv_into(self, *args: object) -> int:
                self.parts += 1
                if self.parts == 2:
                    raise KeyboardInterrupt
                return sock.recv_into(*args)  # type: ignore[arg-type]

        table._sock = Interrupted()  # type: ignore[assignment]
        with pytest.raises(KeyboardInterrupt):
            table.dump(PORT)
        table._sock = sock
        assert len(table.dump(PORT)) == len(ports)
        assert len(table.dump(PORT)) == len(ports)


def test_a_missing_namespace_is_a_lab_error() -> None:
    with pytest.raises(LabError, match="cc-000000-srv"):
        SocketTable("cc-000000-srv")


def test_a_closed_table_is_a_lab_error() -> None:
    with LocalLab() as lab:
        table = SocketTable(lab.server_ns)
        table.close()
        with pytest.raises(LabError, match="reading the socket table"):
            table.dump(PORT)
