"""The kernel's TCP socket table of one namespace, through sock_diag.

The netlink socket is opened from inside the namespace, so every dump shows that namespace's
table: the server's view of each session (state, timer, keepalive probes, retransmissions).

The observer dumps the table every sample for every session at once, so this is the hot path
of a run with thousands of sessions. It has its own small reader instead of pyroute2's
``DiagSocket``: pyroute2 decodes every field of every message into Python objects, 0.15 to
0.27 ms per socket in ``connchaos bench sockdiag`` (1.5 to 2.7 s per sample at 10,000
sockets), while this reader sends one dump request with an in-kernel filter on the port,
receives into one preallocated buffer and reads only the fields ``SockInfo`` needs at fixed
offsets: 2.0 µs per socket, kernel included (19.8 ms per sample at 10,000, 78 times faster,
on the two shared cores of the development machine at load 1.8). pyroute2 stays the
project's netlink library for everything else; ``pyroute2_dump`` is the old reader, kept as
the reference the tests and the benchmark compare with.

Wire layout, from the kernel's uapi headers: ``linux/netlink.h`` (nlmsghdr),
``linux/inet_diag.h`` (inet_diag_req_v2, inet_diag_msg, the filter bytecode) and
``linux/tcp.h`` (tcp_info).
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import socket
import struct
import sys
from socket import AF_INET
from dataclasses import dataclass
from types import TracebackType
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from harness.errors import LabError
from harness.lab.netns import entered

if TYPE_CHECKING:
    from pyroute2 import DiagSocket

INET_DIAG_INFO = 2
TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
              6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN",
              11: "CLOSING"}
TIMERS = {0: "off", 1: "on", 2: "keepalive", 3: "timewait", 4: "persist"}
LISTEN = 10

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


# -- the wire ---------------------------------------------------------------------------------

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_BC_S_EQ = 11          # kernel 4.16 and later
ALL_BUT_LISTEN = ((1 << 12) - 1) & ~(1 << LISTEN)   # pyroute2's SS_ALL without LISTEN

NLMSGHDR = struct.Struct("=IHHII")                  # len, type, flags, seq, pid
NLMSG_ERRNO = struct.Struct("=i")                   # NLMSG_ERROR / NLMSG_DONE payload
# inet_diag_req_v2: family, protocol, ext, pad, states, then an all-zero inet_diag_sockid
REQ_V2 = struct.Struct("=BBBxI48x")
RTATTR = struct.Struct("=HH")                       # len, type
BC_OP = struct.Struct("=BBH")                       # code, yes, no
# inet_diag_msg (72 bytes): state, timer, then id.sport and id.dport (network order, read
# as native and swapped below: one Struct cannot mix byte orders, and a bytes field per port
# would cost an object each), the first four bytes of id.src and id.dst (IPv4, kept as an
# int: the key of the address cache) and the inode; the rest skipped.
DIAG_MSG = struct.Struct("=xBBxHHI12xI12x12x16xI")
SWAP_PORTS = sys.byteorder == "little"
# tcp_info (linux/tcp.h), the fields SockInfo needs, by offset: retransmits 2, probes 3,
# backoff 4, rto 8, unacked 24, last_data_sent 44, last_data_recv 52, last_ack_recv 56.
TCP_INFO = struct.Struct("=2xBBB3xI12xI16xI4xII")
NLMSG_LEN = NLMSGHDR.size
DIAG_END = NLMSG_LEN + DIAG_MSG.size                # where a socket's attributes start

RECV_BUFFER = 1 << 20       # a dump part is at most 32 KiB today; room for larger ones
SOCKET_BUFFER = 4 << 20
NO_INFO = (0, 0, 0, 0, 0, 0, 0, 0)
ADDRESS_CACHE = 4096        # distinct addresses remembered (a lab has a handful)

STATE_NAMES = [TCP_STATES.get(i, str(i)) for i in range(256)]
TIMER_NAMES = [TIMERS.get(i, str(i)) for i in range(256)]


def request(port: int, seq: int) -> bytes:
    """One SOCK_DIAG_BY_FAMILY dump request: IPv4 TCP sockets in every state but LISTEN,
    with tcp_info, whose local port is ``port``.

    The port filter runs in the kernel (INET_DIAG_BC_S_EQ; the port is in host order in the
    bytecode), so only the target's sockets cross into Python. The program is one
    comparison: on a match jump to its end (accept), otherwise jump 4 bytes past it
    (reject), the form the kernel's bytecode audit requires.
    """
    bytecode = BC_OP.pack(INET_DIAG_BC_S_EQ, 8, 12) + BC_OP.pack(0, 0, port)
    attr = RTATTR.pack(RTATTR.size + len(bytecode), INET_DIAG_REQ_BYTECODE) + bytecode
    body = REQ_V2.pack(AF_INET, socket.IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1),
                       ALL_BUT_LISTEN) + attr
    return NLMSGHDR.pack(NLMSG_LEN + len(body), SOCK_DIAG_BY_FAMILY,
                         NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


class DumpError(Exception):
    """The kernel answered the dump with an error (a negative errno)."""

    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(os.strerror(code))


@dataclass(frozen=True)
class Layout:
    """Where things are in one kind of socket message: the kernel writes the same
    attributes before INET_DIAG_INFO for every socket of a dump, so the layout of the first
    one serves the rest."""

    length: int             # nlmsg_len
    info_at: int            # offset of the INET_DIAG_INFO attribute in the message
    attr_len: int           # its rta_len
    one: struct.Struct      # length, type, seq, inet_diag_msg, rta_len, rta_type, tcp_info
    run: struct.Struct      # inet_diag_msg and tcp_info fields, one aligned message long

    @classmethod
    def at(cls, length: int, info_at: int, attr_len: int) -> Layout:
        gap = f"{info_at - DIAG_END}x"
        one = struct.Struct("=IH2xI4x" + DIAG_MSG.format[1:] + gap + "HH" + TCP_INFO.format[1:])
        tail = _align(length) - info_at - RTATTR.size - TCP_INFO.size
        run = struct.Struct(f"={NLMSG_LEN}x" + DIAG_MSG.format[1:] + gap + f"{RTATTR.size}x"
                            + TCP_INFO.format[1:] + f"{tail}x")
        return cls(length, info_at, attr_len, one, run)

    def probes(self, seq: int) -> list[tuple[int, bytes]]:
        """(offset, byte) pairs that every message of this layout in dump ``seq`` has: its
        length, type, sequence number and the INET_DIAG_INFO attribute header."""
        hdr = NLMSGHDR.pack(self.length, SOCK_DIAG_BY_FAMILY, 0, seq, 0)
        attr = RTATTR.pack(self.attr_len, INET_DIAG_INFO)
        return ([(k, hdr[k:k + 1]) for k in (0, 1, 2, 3, 4, 5, 8, 9, 10, 11)]
                + [(self.info_at + k, attr[k:k + 1]) for k in range(RTATTR.size)])


class Parser:
    """Turns the kernel's dump parts into a table, as cheaply per socket as Python allows.

    A dump part is mostly a run of messages of one layout (every ESTABLISHED socket looks
    alike). Such a run is recognised without a Python loop, by comparing a strided slice of
    the buffer per header byte that must not vary (length, type, sequence number, the
    INET_DIAG_INFO header), and decoded with ``iter_unpack`` of one Struct: about 1.1 µs per
    socket here, against 1.5 µs for the message-by-message loop below and 2.7 µs for a walk
    of each message's attributes. What follows the run in the part (another state's
    messages, NLMSG_DONE, an error) goes message by message; a message of the learned
    layout is still read with one ``unpack_from`` when its header matches, any other is
    walked attribute by attribute (which also learns the layout).
    ``addresses`` maps each distinct address to its dotted form once, so every key shares
    the same string (whose hash is then computed once, too); ``ports`` the byte-swapped
    ports, for the same reason.
    """

    def __init__(self) -> None:
        self.addresses: dict[int, str] = {}
        self.ports: dict[int, int] = {}
        self.layout: Layout | None = None

    def parse(self, buf: bytes | bytearray, size: int, seq: int,
              table: dict[Key, SockInfo]) -> bool:
        """Add the sockets of one received dump part (``buf[:size]``) to ``table``; True
        when the part ends the dump (NLMSG_DONE).

        Messages of another sequence number (a dump an earlier, interrupted call left
        unread) are skipped. Raises DumpError for NLMSG_ERROR or an error in NLMSG_DONE.
        """
        off = self._run(buf, size, seq, table) if self.layout is not None else 0
        return self._messages(buf, off, size, seq, table)

    def _run(self, buf: bytes | bytearray, size: int, seq: int,
             table: dict[Key, SockInfo]) -> int:
        """Decode the leading run of messages of the learned layout; where it ends."""
        layout = self.layout
        assert layout is not None
        stride = _align(layout.length)
        n = size // stride
        if n == 0:
            return 0
        end = n * stride
        for k, byte in layout.probes(seq):
            column = buf[k:end:stride]
            if column != byte * n:
                n = min(n, n - len(column.lstrip(byte)))   # the run stops at the first odd one
                end = n * stride
                if n == 0:
                    return 0
        addresses, ports, states, timers = self.addresses, self.ports, STATE_NAMES, TIMER_NAMES
        new = tuple.__new__
        for (state, timer, sport, dport, src, dst, inode, retransmits, probes, backoff, rto,
             unacked, sent, data_recv, ack_recv) in layout.run.iter_unpack(memoryview(buf)[:end]):
            local = addresses.get(src) or _remember(addresses, src)
            remote = addresses.get(dst) or _remember(addresses, dst)
            lport = ports.get(sport) or _port(ports, sport)
            rport = ports.get(dport) or _port(ports, dport)
            table[(local, lport, remote, rport)] = new(SockInfo, (
                states[state], timers[timer], probes, retransmits, backoff, unacked,
                rto / 1e6, data_recv / 1e3, ack_recv / 1e3, sent / 1e3, inode))
        return end

    def _messages(self, buf: bytes | bytearray, off: int, size: int, seq: int,
                  table: dict[Key, SockInfo]) -> bool:
        """Message by message from ``off``; True at NLMSG_DONE."""
        while off + NLMSG_LEN <= size:
            layout = self.layout
            fields: tuple[int, ...] | None = None
            if layout is not None and off + layout.one.size <= size:
                one = layout.one.unpack_from(buf, off)
                if (one[0] == layout.length and one[1] == SOCK_DIAG_BY_FAMILY and one[2] == seq
                        and one[10] == layout.attr_len and one[11] == INET_DIAG_INFO):
                    length, fields = one[0], one[3:10] + one[12:]
            if fields is None:
                length, kind, _, mseq, _ = NLMSGHDR.unpack_from(buf, off)
                fields = self._walk(buf, off, size, length, kind, mseq, seq)
                if fields is None:
                    if kind == NLMSG_DONE and mseq == seq:
                        return True
                    off += _align(length)
                    continue
            self._add(table, fields)
            off += _align(length)
        return False

    def _add(self, table: dict[Key, SockInfo], fields: tuple[int, ...]) -> None:
        (state, timer, sport, dport, src, dst, inode, retransmits, probes, backoff, rto,
         unacked, sent, data_recv, ack_recv) = fields
        addresses, ports = self.addresses, self.ports
        local = addresses.get(src) or _remember(addresses, src)
        remote = addresses.get(dst) or _remember(addresses, dst)
        lport = ports.get(sport) or _port(ports, sport)
        rport = ports.get(dport) or _port(ports, dport)
        table[(local, lport, remote, rport)] = SockInfo(
            STATE_NAMES[state], TIMER_NAMES[timer], probes, retransmits, backoff, unacked,
            rto / 1e6, data_recv / 1e3, ack_recv / 1e3, sent / 1e3, inode)

    def _walk(self, buf: bytes | bytearray, off: int, size: int, length: int,
              kind: int, mseq: int, seq: int) -> tuple[int, ...] | None:
        """One message read field by field: a socket's fields (learning its layout), or
        None for anything that is not a socket of this dump."""
        if length < NLMSG_LEN or off + length > size:
            raise DumpError(errno.EBADMSG)
        if mseq != seq:
            return None
        if kind == NLMSG_DONE or kind == NLMSG_ERROR:
            code = (NLMSG_ERRNO.unpack_from(buf, off + NLMSG_LEN)[0]
                    if length >= NLMSG_LEN + NLMSG_ERRNO.size else 0)
            if code < 0:
                raise DumpError(-code)
            return None
        if kind != SOCK_DIAG_BY_FAMILY or length < DIAG_END:
            return None
        msg = DIAG_MSG.unpack_from(buf, off + NLMSG_LEN)
        info: tuple[int, ...] = NO_INFO
        at, end = off + DIAG_END, off + length
        while at + RTATTR.size <= end:
            alen, atype = RTATTR.unpack_from(buf, at)
            if alen < RTATTR.size or at + alen > end:
                break
            if atype == INET_DIAG_INFO:
                if alen - RTATTR.size >= TCP_INFO.size:
                    info = TCP_INFO.unpack_from(buf, at + RTATTR.size)
                    if self.layout is None or self.layout.length != length:
                        self.layout = Layout.at(length, at - off, alen)
                else:   # an older kernel's shorter tcp_info: the missing fields read 0
                    raw = bytes(buf[at + RTATTR.size:at + alen])
                    info = TCP_INFO.unpack(raw.ljust(TCP_INFO.size, b"\0"))
                break
            at += _align(alen)
        return msg + info


def _align(n: int) -> int:
    return (n + 3) & ~3


def _port(ports: dict[int, int], raw: int) -> int:
    """A port read in native order, in host order (remembered: at most 65,536 of them)."""
    port = ports[raw] = ((raw & 0xFF) << 8) | (raw >> 8) if SWAP_PORTS else raw
    return port


def _remember(addresses: dict[int, str], raw: int) -> str:
    if len(addresses) >= ADDRESS_CACHE:
        addresses.clear()
    text = addresses[raw] = socket.inet_ntoa(raw.to_bytes(4, sys.byteorder))
    return text


# -- the table --------------------------------------------------------------------------------

class TableReader(Protocol):
    """What the observer needs of a socket table: this module's ``SocketTable``, or
    ``harness.observe.agent.RemoteSocketTable`` (the docker backend without root)."""

    def dump(self, local_port: int) -> dict[Key, SockInfo]: ...

    def close(self) -> None: ...


class SocketTable:
    """Dumps of the TCP socket table of a namespace. Use as a context manager."""

    def __init__(self, namespace: str | None) -> None:
        """``namespace`` by name; None: the caller's own (the observer's agent)."""
        self.namespace = namespace or "this namespace"
        self._seq = 0
        self._unfinished: int | None = None     # the sequence number of a dump left unread
        self._buf = bytearray(RECV_BUFFER)
        self._parser = Parser()
        try:
            with entered(namespace) if namespace else contextlib.nullcontext():
                self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
        except OSError as exc:
            raise LabError(f"opening sock_diag in {namespace}", str(exc)) from exc
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
            self._sock.bind((0, 0))
        except OSError as exc:
            self._sock.close()
            raise LabError(f"opening sock_diag in {namespace}", str(exc)) from exc

    def __enter__(self) -> SocketTable:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def dump(self, local_port: int) -> dict[Key, SockInfo]:
        """Every IPv4 TCP socket whose local port is ``local_port`` (listeners excluded)."""
        try:
            if self._unfinished is not None:
                self._finish(self._unfinished)
            self._seq = seq = (self._seq + 1) & 0xFFFFFFFF
            buf, sock, parse = self._buf, self._sock, self._parser.parse
            table: dict[Key, SockInfo] = {}
            sock.send(request(local_port, seq))
            self._unfinished = seq
            # A dump allocates two tuples per socket, none of them in a reference cycle.
            # Left on, the collector would run a young-generation pass every 700 of them and
            # every tenth of those an older one over all the watched sessions' objects
            # (parsing a captured 10,000-socket dump: p90 59 ms, against 27 ms paused, on
            # a loaded machine). One young pass still runs after it, on the next allocation.
            collecting = gc.isenabled()
            gc.disable()
            try:
                while not parse(buf, sock.recv_into(buf), seq, table):
                    pass
            finally:
                if collecting:
                    gc.enable()
            self._unfinished = None
            return table
        except DumpError as exc:
            self._unfinished = None     # the kernel ended that dump with the error
            hint = (" (the port filter needs Linux 4.16 or later)" if exc.code == errno.EINVAL
                    else "")
            raise LabError(f"reading the socket table of {self.namespace}", f"{exc}{hint}") from exc
        except OSError as exc:
            raise LabError(f"reading the socket table of {self.namespace}", str(exc)) from exc

    def _finish(self, seq: int) -> None:
        """Read the rest of a dump an exception (Ctrl-C) left unread: the kernel answers a
        new request with EBUSY while one is still running."""
        rest: dict[Key, SockInfo] = {}
        try:
            while not self._parser.parse(self._buf, self._sock.recv_into(self._buf), seq, rest):
                pass
        except DumpError:
            pass
        self._unfinished = None


# -- the reference reader ---------------------------------------------------------------------

def open_pyroute2(namespace: str) -> DiagSocket:
    """pyroute2's sock_diag socket inside ``namespace``, for ``pyroute2_dump``."""
    from pyroute2 import DiagSocket

    with entered(namespace):
        ds = DiagSocket()
        ds.bind()
    return ds


def pyroute2_dump(ds: DiagSocket, local_port: int) -> dict[Key, SockInfo]:
    """The same table as ``SocketTable.dump`` through pyroute2 (the reader this project used
    before): the reference the tests compare with, and the benchmark's baseline."""
    from pyroute2.netlink.diag import SS_ALL

    return from_pyroute2(ds.get_sock_stats(family=AF_INET, states=SS_ALL,
                                           extensions=1 << (INET_DIAG_INFO - 1)), local_port)


def from_pyroute2(msgs: Iterable[Any], local_port: int) -> dict[Key, SockInfo]:
    """The table of pyroute2's decoded inet_diag messages."""
    table: dict[Key, SockInfo] = {}
    for m in msgs:
        if m["header"]["type"] != SOCK_DIAG_BY_FAMILY:
            continue
        if m["idiag_sport"] != local_port or m["idiag_state"] == LISTEN:
            continue
        info = m.get_attr("INET_DIAG_INFO")
        key = (m["idiag_src"], m["idiag_sport"], m["idiag_dst"], m["idiag_dport"])
        table[key] = SockInfo(
            state=TCP_STATES.get(m["idiag_state"], str(m["idiag_state"])),
            timer=TIMERS.get(m["idiag_timer"], str(m["idiag_timer"])),
            probes=info["tcpi_probes"] if info else 0,
            retransmits=info["tcpi_retransmits"] if info else 0,
            backoff=info["tcpi_backoff"] if info else 0,
            unacked=info["tcpi_unacked"] if info else 0,
            rto_s=info["tcpi_rto"] / 1e6 if info else 0.0,
            last_data_recv_s=info["tcpi_last_data_recv"] / 1e3 if info else 0.0,
            last_ack_recv_s=info["tcpi_last_ack_recv"] / 1e3 if info else 0.0,
            last_data_sent_s=info["tcpi_last_data_sent"] / 1e3 if info else 0.0,
            inode=m["idiag_inode"],
        )
    return table
