"""The socket table as values: ``Key`` and ``SockInfo`` for one socket, ``Columns`` for a
whole dump (one numpy row per socket, what the observer compares sample after sample)."""

from __future__ import annotations

import gc
import socket
import sys
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from harness.observe.sockdiag.wire import ROW, STATE_CODES, STATE_NAMES, TIMER_NAMES

# (local addr, local port, remote addr, remote port), from the server's side
Key = tuple[str, int, str, int]


class SockInfo(NamedTuple):
    """One TCP socket as the kernel reports it.

    A NamedTuple rather than a frozen dataclass: a frozen dataclass costs 1.8 µs to build
    (one ``object.__setattr__`` per field), which alone would be 18 ms per sample at 10,000
    sockets; a tuple costs 0.2 µs. Same fields, same attribute access, still immutable.
    """

    state: str
    timer: str
    probes: int           # keepalive / zero-window probes sent without answer
    retransmits: int      # consecutive retransmissions of the head segment
    backoff: int
    unacked: int          # segments sent and not acknowledged
    rto_s: float
    last_data_recv_s: float
    last_ack_recv_s: float
    last_data_sent_s: float
    inode: int = 0        # the socket's inode: which process holds it (see owners.py)


def address_int(address: str) -> int:
    """A dotted IPv4 address as ``Columns`` holds it (the native int of its four bytes)."""
    return int.from_bytes(socket.inet_aton(address), sys.byteorder)


def address_text(raw: int) -> str:
    return socket.inet_ntoa(raw.to_bytes(4, sys.byteorder))


class Columns:
    """A socket table as one numpy array of ``ROW`` (one row per socket, in dump order):
    what the observer compares, sample after sample, without a Python object per socket.
    ``table()`` is the same table as a dict of ``SockInfo``."""

    __slots__ = ("rows",)

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def of(cls, rows: Iterable[tuple[int, ...]]) -> Columns:
        """From ``ROW`` tuples."""
        return cls(np.array(list(rows), dtype=ROW))

    def table(self) -> dict[Key, SockInfo]:
        """Key to SockInfo, every socket (for a duplicate key, the later one)."""
        names: dict[int, str] = {}
        table: dict[Key, SockInfo] = {}
        # Three objects per socket, none in a reference cycle: with the collector on, a
        # young pass would run every 700 of them and an older one over everything the
        # process holds every tenth of those.
        collecting = gc.isenabled()
        gc.disable()
        try:
            for (state, timer, sport, dport, src, dst, inode, retransmits, probes, backoff, rto,
                 unacked, sent, data_recv, ack_recv) in self.rows.tolist():
                local = names.get(src) or names.setdefault(src, address_text(src))
                remote = names.get(dst) or names.setdefault(dst, address_text(dst))
                table[(local, sport, remote, dport)] = SockInfo(
                    STATE_NAMES[state], TIMER_NAMES[timer], probes, retransmits, backoff,
                    unacked, rto / 1e6, data_recv / 1e3, ack_recv / 1e3, sent / 1e3, inode)
        finally:
            if collecting:
                gc.enable()
        return table

    def established_to(self, remote: str) -> int:
        """How many sockets are ESTABLISHED with ``remote``."""
        rows = self.rows
        return int(np.count_nonzero((rows["state"] == STATE_CODES["ESTABLISHED"])
                                    & (rows["dst"] == address_int(remote))))
