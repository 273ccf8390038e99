"""``syn-blackhole``: new connections to the target hang (the reconnect after a failover).

At the fault the router starts dropping every SYN to the target's port, and the faulted
sessions' clients close their connections and connect again, as a pool does when it gives up
on its connections. Their FINs pass (only SYNs are dropped), so the server ends the old
sessions at once; the new attempts see nothing back, and how long each takes to fail is its own
figure (``reconnect_s``), predicted from the client's settings (``harness.core.reconnect``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from harness.core.assess import Heartbeat, SessionFacts
from harness.core.prediction import Effective, Prediction
from harness.core.reconnect import ReconnectPrediction, predict_reconnect
from harness.faults.base import Flow, PacketFault, chain


@dataclass
class ClientSyn:
    """The client host's SYN settings, as read from its network (``net.ipv4``)."""

    syn_retries: int = 6
    linear_timeouts: int = 0      # tcp_syn_linear_timeouts; 0 where the kernel has none


@dataclass
class SynBlackhole(PacketFault):
    """Drop SYNs to the faulted flows' server ports in the router; the clients reconnect."""

    syn_retries: int | None = None          # the reconnecting socket's TCP_SYNCNT; None: the client's sysctl
    connect_timeout_s: float | None = None  # the client's own connect timer; None: the kernel decides
    client: ClientSyn | None = None         # read from the client's network by the runner
    where = "router"
    peer = "silent"
    reconnects = True

    def rules(self, flows: Sequence[Flow]) -> str:
        ends = sorted({(f.server_addr, f.server_port) for f in flows})
        elems = ", ".join(f"{addr} . {port}" for addr, port in ends)
        return (f"  set servers {{ type ipv4_addr . inet_service; elements = {{ {elems} }} }}\n"
                + chain("forward", "forward",
                        "ip daddr . tcp dport @servers tcp flags & (syn | ack) == syn drop"))

    def describe(self) -> str:
        return "router drops SYNs to the target; the faulted clients reconnect"

    def effective_syn_retries(self) -> int:
        return self.syn_retries if self.syn_retries is not None else (self.client or ClientSyn()).syn_retries

    def reconnect_prediction(self) -> ReconnectPrediction:
        """How each faulted client's reconnect attempt ends, from its settings."""
        client = self.client or ClientSyn()
        return predict_reconnect(self.effective_syn_retries(), client.linear_timeouts, self.connect_timeout_s)

    def predict(self, settings: Effective, facts: SessionFacts, heartbeat: Heartbeat) -> Prediction:
        """The old session: its client closes it at the fault and the FIN gets through."""
        return Prediction(reclaim_s=0.0, mechanism="closed",
                          formula="the client closes its session at the fault and its FIN passes"
                                  " (only SYNs are dropped): the server ends the session at once")
