"""Reading the TCP socket table of a namespace: ``SocketTable`` (this package's reader, the
observer's hot path), the ``TableReader`` Protocol the observer needs, and pyroute2's reader
(``pyroute2_dump``), kept as the reference the tests and the benchmark compare with."""

from __future__ import annotations

import errno
from collections.abc import Iterable
from socket import AF_INET
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from harness.errors import LabError
from harness.lab.netns import entered, netlink_socket
from harness.observe.sockdiag.parser import Parser
from harness.observe.sockdiag.table import Columns, Key, SockInfo
from harness.observe.sockdiag.wire import (
    INET_DIAG_INFO,
    LISTEN,
    NETLINK_SOCK_DIAG,
    NLMSG_DONE,
    NLMSG_ERRNO,
    NLMSG_ERROR,
    NLMSG_LEN,
    NLMSGHDR,
    SOCK_DIAG_BY_FAMILY,
    TCP_STATES,
    TIMERS,
    DumpError,
    request,
)

if TYPE_CHECKING:
    from pyroute2 import DiagSocket

RECV_BUFFER = 1 << 20       # the first size of the buffer a whole dump is received into
PART_ROOM = 1 << 16         # room left for the next part (at most 32 KiB today)
SOCKET_BUFFER = 4 << 20


def _ends(buf: bytearray, start: int, end: int, seq: int) -> bool:
    """Whether the part ``buf[start:end]`` ends dump ``seq``: NLMSG_DONE last, or an error."""
    if end - start >= NLMSG_LEN:
        _, kind, _, mseq, _ = NLMSGHDR.unpack_from(buf, start)
        if kind == NLMSG_ERROR and mseq == seq:
            return True
    if end - start >= NLMSG_LEN + NLMSG_ERRNO.size:
        length, kind, _, mseq, _ = NLMSGHDR.unpack_from(buf, end - NLMSG_LEN - NLMSG_ERRNO.size)
        return bool(length == NLMSG_LEN + NLMSG_ERRNO.size and kind == NLMSG_DONE
                    and mseq == seq)
    return False


class TableReader(Protocol):
    """What the observer needs of a socket table: this module's ``SocketTable``, or
    ``harness.observe.agent.RemoteSocketTable`` (the docker backend without root)."""

    def columns(self, local_port: int) -> Columns: ...

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
        self._sock = netlink_socket(NETLINK_SOCK_DIAG, namespace, SOCKET_BUFFER, "sock_diag")

    def __enter__(self) -> SocketTable:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def dump(self, local_port: int) -> dict[Key, SockInfo]:
        """Every IPv4 TCP socket whose local port is ``local_port`` (listeners excluded)."""
        return self.columns(local_port).table()

    def columns(self, local_port: int) -> Columns:
        """``dump``'s table as ``Columns``: the observer's sample."""
        try:
            if self._unfinished is not None:
                self._finish(self._unfinished)
            self._seq = seq = (self._seq + 1) & 0xFFFFFFFF
            self._sock.send(request(local_port, seq))
            self._unfinished = seq
            self._receive(seq)
            self._unfinished = None
            return self._parser.columns()
        except DumpError as exc:
            self._unfinished = None     # the kernel ended that dump with the error
            self._parser.columns()      # and what it sent before is no table
            hint = (" (the port filter needs Linux 4.16 or later)" if exc.code == errno.EINVAL
                    else "")
            raise LabError(f"reading the socket table of {self.namespace}", f"{exc}{hint}") from exc
        except OSError as exc:
            raise LabError(f"reading the socket table of {self.namespace}", str(exc)) from exc

    def _receive(self, seq: int) -> None:
        """Receive dump ``seq`` whole, then parse it: its parts, back to back in one buffer,
        are one stream of messages, and parsing it in one go costs a fifth of parsing 32 KiB
        at a time (1.0 against 5.6 ms at 10,000 sockets). A part ends the dump when it ends
        with its NLMSG_DONE or is an NLMSG_ERROR; the parser has the last word (should a
        socket's bytes look like an NLMSG_DONE, it goes on a part at a time)."""
        sock, parse, at = self._sock, self._parser.parse, 0
        while True:
            if len(self._buf) - at < PART_ROOM:
                self._buf.extend(bytes(len(self._buf)))
            with memoryview(self._buf) as view:
                size = sock.recv_into(view[at:])
            if size == 0:
                raise DumpError(errno.ECONNRESET)
            part, at = at, at + size
            if _ends(self._buf, part, at, seq):
                break
        if parse(self._buf, at, seq):
            return
        while not parse(self._buf, sock.recv_into(self._buf), seq):
            pass

    def _finish(self, seq: int) -> None:
        """Read the rest of a dump an exception (Ctrl-C) left unread: the kernel answers a
        new request with EBUSY while one is still running."""
        try:
            while not self._parser.parse(self._buf, self._sock.recv_into(self._buf), seq):
                pass
        except DumpError:
            pass
        self._parser.columns()          # dropped
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
