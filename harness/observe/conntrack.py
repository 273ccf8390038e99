"""Reading a namespace's connection-tracking table (ctnetlink), and watching entries expire.

The router of a lab with a middlebox tracks every flow through it; its table says how the
server sees each client (the reply tuple, after NAT) and when an idle flow's entry is gone.
The kernel removes expired entries lazily (its GC worker runs at intervals, so the destroy
event can come late), but a table dump skips and reaps every expired entry it meets
(``ctnetlink_dump_table``: ``nf_ct_is_expired`` → ``nf_ct_kill``): an entry missing from a
dump has expired by the time of that dump, to the jiffy. So ``ExpiryWatch`` dumps the table
once per observer sample, and an expiry's time is within a sample of the kernel's own.

Wire layout from the uapi headers ``linux/netfilter/nfnetlink.h`` (nfgenmsg) and
``linux/netfilter/nfnetlink_conntrack.h`` (the CTA_* attributes).
"""

from __future__ import annotations

import errno
import socket
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import NamedTuple

from harness.errors import LabError
from harness.lab.netns import netlink_socket

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_GET = 1
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLA_TYPE_MASK = 0x3FFF          # without NLA_F_NESTED / NLA_F_NET_BYTEORDER
CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_TIMEOUT = 1, 2, 7
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST = 1, 2
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3

NLMSGHDR = struct.Struct("=IHHII")      # len, type, flags, seq, pid
NFGENMSG = struct.Struct("=BBH")        # family, version, res_id (network order)
NLATTR = struct.Struct("=HH")           # len, type
RECV_BUFFER = 1 << 20


class Tuple(NamedTuple):
    """One direction of a tracked TCP flow: source and destination, as the packets carry them."""

    src: str
    sport: int
    dst: str
    dport: int

    def __str__(self) -> str:
        return f"{self.src}:{self.sport} -> {self.dst}:{self.dport}"


class Entry(NamedTuple):
    """A tracked flow: its original direction (as the client sent it), its reply direction
    (as the server sends it: with NAT, to the router's address and the port it chose) and
    the seconds left on its timer."""

    orig: Tuple
    reply: Tuple
    timeout_s: int


def _attrs(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type, payload start, payload end) of each attribute in ``buf[start:end]``."""
    at = start
    while at + NLATTR.size <= end:
        length, kind = NLATTR.unpack_from(buf, at)
        if length < NLATTR.size:
            return
        yield kind & NLA_TYPE_MASK, at + NLATTR.size, at + length
        at += (length + 3) & ~3


def _tuple(buf: bytes, start: int, end: int) -> Tuple | None:
    src = dst = ""
    sport = dport = proto = 0
    for kind, a, b in _attrs(buf, start, end):
        if kind == CTA_TUPLE_IP:
            for k, x, _ in _attrs(buf, a, b):
                if k == CTA_IP_V4_SRC:
                    src = socket.inet_ntoa(buf[x:x + 4])
                elif k == CTA_IP_V4_DST:
                    dst = socket.inet_ntoa(buf[x:x + 4])
        elif kind == CTA_TUPLE_PROTO:
            for k, x, _ in _attrs(buf, a, b):
                if k == CTA_PROTO_NUM:
                    proto = buf[x]
                elif k == CTA_PROTO_SRC_PORT:
                    sport = int.from_bytes(buf[x:x + 2], "big")
                elif k == CTA_PROTO_DST_PORT:
                    dport = int.from_bytes(buf[x:x + 2], "big")
    if proto != socket.IPPROTO_TCP or not src or not dst:
        return None
    return Tuple(src, sport, dst, dport)


def parse_entry(buf: bytes, start: int, end: int) -> Entry | None:
    """One ctnetlink message's entry (``start`` just past its nlmsghdr); None if not IPv4 TCP."""
    orig = reply = None
    timeout = 0
    for kind, a, b in _attrs(buf, start + NFGENMSG.size, end):
        if kind == CTA_TUPLE_ORIG:
            orig = _tuple(buf, a, b)
        elif kind == CTA_TUPLE_REPLY:
            reply = _tuple(buf, a, b)
        elif kind == CTA_TIMEOUT:
            timeout = int.from_bytes(buf[a:a + 4], "big")
    if orig is None or reply is None:
        return None
    return Entry(orig, reply, timeout)


class ConntrackTable:
    """Dumps of the IPv4 TCP entries of a namespace's conntrack table. Use as a context manager."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._seq = 0
        self._buf = bytearray(RECV_BUFFER)
        self._sock = netlink_socket(NETLINK_NETFILTER, namespace, 4 << 20, "ctnetlink")

    def __enter__(self) -> ConntrackTable:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def dump(self) -> dict[Tuple, Entry]:
        """Every live IPv4 TCP entry, by its original tuple. Expired entries are not in it
        (the dump itself reaps them)."""
        self._seq = seq = (self._seq + 1) & 0xFFFFFFFF
        msg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET
        body = NFGENMSG.pack(socket.AF_INET, 0, 0)
        try:
            self._sock.send(NLMSGHDR.pack(NLMSGHDR.size + len(body), msg_type,
                                          NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body)
            return self._receive(seq)
        except OSError as exc:
            raise LabError(f"reading the conntrack table of {self.namespace}", str(exc)) from exc

    def _receive(self, seq: int) -> dict[Tuple, Entry]:
        entries: dict[Tuple, Entry] = {}
        while True:
            size = self._sock.recv_into(self._buf)
            if size == 0:
                raise OSError(errno.ECONNRESET, "ctnetlink closed the dump")
            buf = bytes(self._buf[:size])
            at = 0
            while at + NLMSGHDR.size <= size:
                length, kind, _, mseq, _ = NLMSGHDR.unpack_from(buf, at)
                if length < NLMSGHDR.size:
                    break
                if mseq == seq:
                    if kind == NLMSG_DONE:
                        return entries
                    if kind == NLMSG_ERROR:
                        code = -struct.unpack_from("=i", buf, at + NLMSGHDR.size)[0]
                        if code == 0:
                            return entries
                        raise OSError(code, f"ctnetlink: {errno.errorcode.get(code, code)}")
                    entry = parse_entry(buf, at + NLMSGHDR.size, at + length)
                    if entry is not None:
                        entries[entry.orig] = entry
                at += (length + 3) & ~3


@dataclass
class ExpiryWatch:
    """Follows the conntrack entries of some flows (by their original tuple) and reports
    each one's disappearance once: ``on_expired(key, at, last entry seen)``."""

    table: ConntrackTable
    flows: dict[int, Tuple]                 # session id → its flow as the client sent it
    on_expired: Callable[[int, float, Entry], None]
    every_s: float = 0.0                    # at most one dump per this (0: every call)
    share: float = 0.2                      # and at most this share of the time in dumps
    expired: dict[int, float] = field(default_factory=dict)
    _last: dict[int, Entry] = field(default_factory=dict)
    _next: float = 0.0

    def start(self) -> dict[int, Entry]:
        """The entries now (every flow must have one); returns them."""
        now = self.table.dump()
        missing = [sid for sid, t in self.flows.items() if t not in now]
        if missing:
            raise LabError("watching the middlebox's conntrack entries",
                           f"no conntrack entry in {self.table.namespace} for sessions {missing}")
        self._last = {sid: now[t] for sid, t in self.flows.items()}
        return dict(self._last)

    def poll(self, *, now: bool = True) -> None:
        """One dump (``now`` False: only if ``every_s`` has passed); an entry gone since the
        last one has expired."""
        clock = time.monotonic()
        if not now and clock < self._next:
            return
        if len(self.expired) == len(self.flows):
            return
        table = self.table.dump()
        at = time.time()
        # a dump costs about 23 µs an entry (46 ms at 2,000): a big table is read less often
        cost = time.monotonic() - clock
        self._next = clock + max(self.every_s, cost / self.share)
        for sid, t in self.flows.items():
            if sid in self.expired:
                continue
            entry = table.get(t)
            if entry is None:
                self.expired[sid] = at
                self.on_expired(sid, at, self._last[sid])
            else:
                self._last[sid] = entry


def nat_map(table: ConntrackTable, flows: Sequence[Tuple]) -> dict[Tuple, Tuple]:
    """Each flow's reply tuple (how the server sends to the client), from the table."""
    now = table.dump()
    return {t: now[t].reply for t in flows if t in now}


def reverse_map(table: ConntrackTable) -> dict[tuple[str, int, str, int], Tuple]:
    """Server-side views (server addr, port, client addr as seen, port) → the original tuple."""
    out = {}
    for entry in table.dump().values():
        r = entry.reply
        out[(r.src, r.sport, r.dst, r.dport)] = entry.orig
    return out

