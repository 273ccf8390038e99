"""``peer-reboot``: the client host restarted; its new kernel answers old connections with RST.

The client application is gone too, so nothing but those resets leaves the host for the
faulted flows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from harness.faults.base import Flow, PacketFault, chain, end_set


@dataclass
class PeerReboot(PacketFault):
    """Reject the server's packets of the faulted flows with a TCP reset, at the client."""

    where = "client"
    peer = "reset"

    def rules(self, flows: Sequence[Flow]) -> str:
        return (end_set(flows)
                + chain("input", "input", "ip daddr . tcp dport @ends reject with tcp reset")
                # The resets nft generates leave through output: let only those pass.
                + chain("output", "output", "ip saddr . tcp sport @ends tcp flags & rst == 0 drop"))

    def describe(self) -> str:
        return "client host rebooted: answers the server's next packet with a reset"
