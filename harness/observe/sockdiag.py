"""The kernel's TCP socket table of one namespace, through sock_diag (pyroute2's DiagSocket).

The socket is opened from inside the namespace, so every dump shows that namespace's table:
the server's view of each session (state, timer, keepalive probes, retransmissions).
"""

from __future__ import annotations

from dataclasses import dataclass
from socket import AF_INET
from types import TracebackType

from pyroute2 import DiagSocket
from pyroute2.netlink.diag import SS_ALL
from pyroute2.netlink.exceptions import NetlinkError

from harness.errors import LabError
from harness.lab.netns import entered

INET_DIAG_INFO = 2
TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
              6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN",
              11: "CLOSING"}
TIMERS = {0: "off", 1: "on", 2: "keepalive", 3: "timewait", 4: "persist"}

# (local addr, local port, remote addr, remote port), from the server's side
Key = tuple[str, int, str, int]


@dataclass(frozen=True)
class SockInfo:
    """One TCP socket as the kernel reports it."""

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


class SocketTable:
    """Dumps of the TCP socket table of a namespace. Use as a context manager."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        try:
            with entered(namespace):
                self._ds = DiagSocket()
                self._ds.bind()
        except (OSError, NetlinkError) as exc:
            raise LabError(f"opening sock_diag in {namespace}", str(exc)) from exc

    def __enter__(self) -> SocketTable:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._ds.close()

    def dump(self, local_port: int) -> dict[Key, SockInfo]:
        """Every IPv4 TCP socket whose local port is ``local_port`` (listeners excluded)."""
        try:
            msgs = self._ds.get_sock_stats(family=AF_INET, states=SS_ALL,
                                           extensions=1 << (INET_DIAG_INFO - 1))
        except (OSError, NetlinkError) as exc:
            raise LabError(f"reading the socket table of {self.namespace}", str(exc)) from exc
        table: dict[Key, SockInfo] = {}
        for m in msgs:
            if m["idiag_sport"] != local_port or m["idiag_state"] == 10:
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
