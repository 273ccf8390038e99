"""The sock_diag wire format: the kernel's constants and message layouts, the dump request,
and the error a dump can end with.

Wire layout, from the kernel's uapi headers: ``linux/netlink.h`` (nlmsghdr),
``linux/inet_diag.h`` (inet_diag_req_v2, inet_diag_msg, the filter bytecode) and
``linux/tcp.h`` (tcp_info).
"""

from __future__ import annotations

import os
import socket
import struct
import sys
from socket import AF_INET

import numpy as np

INET_DIAG_INFO = 2
TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
              6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN",
              11: "CLOSING"}
TIMERS = {0: "off", 1: "on", 2: "keepalive", 3: "timewait", 4: "persist"}
LISTEN = 10

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
# as native and swapped by the parser), the first four bytes of id.src and id.dst (IPv4,
# kept as a native int, as the bulk path reads them too) and the inode; the rest skipped.
DIAG_MSG = struct.Struct("=xBBxHHI12xI12x12x16xI")
SWAP_PORTS = sys.byteorder == "little"
# tcp_info (linux/tcp.h), the fields SockInfo needs, by offset: retransmits 2, probes 3,
# backoff 4, rto 8, unacked 24, last_data_sent 44, last_data_recv 52, last_ack_recv 56.
TCP_INFO = struct.Struct("=2xBBB3xI12xI16xI4xII")
NLMSG_LEN = NLMSGHDR.size
DIAG_END = NLMSG_LEN + DIAG_MSG.size                # where a socket's attributes start

# One socket of a table as the kernel gives it (ports in host order, addresses as native ints
# of their four bytes, times in µs and ms): the columns of ``Columns``. In the order of
# DIAG_MSG's fields, then TCP_INFO's.
ROW = np.dtype([("state", "u1"), ("timer", "u1"), ("sport", "u2"), ("dport", "u2"),
                ("src", "u4"), ("dst", "u4"), ("inode", "u4"),
                ("retransmits", "u1"), ("probes", "u1"), ("backoff", "u1"), ("rto", "u4"),
                ("unacked", "u4"), ("last_data_sent", "u4"), ("last_data_recv", "u4"),
                ("last_ack_recv", "u4")])
# where ROW's fields are in an inet_diag_msg (after the netlink header) and in a tcp_info
DIAG_FIELDS = {"state": (1, "u1"), "timer": (2, "u1"), "sport": (4, ">u2"), "dport": (6, ">u2"),
               "src": (8, "u4"), "dst": (24, "u4"), "inode": (68, "u4")}
INFO_FIELDS = {"retransmits": (2, "u1"), "probes": (3, "u1"), "backoff": (4, "u1"),
               "rto": (8, "u4"), "unacked": (24, "u4"), "last_data_sent": (44, "u4"),
               "last_data_recv": (52, "u4"), "last_ack_recv": (56, "u4")}

STATE_CODES = {name: code for code, name in TCP_STATES.items()}
TIME_WAIT = STATE_CODES["TIME_WAIT"]

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
