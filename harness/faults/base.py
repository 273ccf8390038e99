"""What every packet fault shares: the flows it acts on, and applying/reverting nft rules.

A packet fault decides *which namespace* it acts in (the router or the client, never the
server: a drop in the server's own stack is seen by the server) and *which rules*; applying
and reverting is the same for all of them. Flows are kept in nftables sets so one rule serves
any number of sessions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

from harness.core.assess import Heartbeat, SessionFacts, predict_with_heartbeat
from harness.core.prediction import Effective, Peer, Prediction, predict
from harness.faults import nft
from harness.lab import naming

if TYPE_CHECKING:
    from harness.faults.site import Site

Where = Literal["router", "client"]


@dataclass(frozen=True)
class Flow:
    """One session's TCP connection, seen from the client."""

    client_addr: str
    client_port: int
    server_addr: str
    server_port: int

    def __str__(self) -> str:
        return f"{self.client_addr}:{self.client_port} -> {self.server_addr}:{self.server_port}"


LabNamespaces = nft.RunsIn
"""The part of a lab a packet fault needs: running nft on its client or router host."""


def flow_set(flows: Sequence[Flow]) -> str:
    """An nft set of whole 4-tuples, written client first."""
    elems = ", ".join(f"{f.client_addr} . {f.client_port} . {f.server_addr} . {f.server_port}"
                      for f in flows)
    return ("  set flows { type ipv4_addr . inet_service . ipv4_addr . inet_service;"
            f" elements = {{ {elems} }} }}\n")


def end_set(flows: Sequence[Flow]) -> str:
    """An nft set of the client ends (address . port) of the flows."""
    elems = ", ".join(f"{f.client_addr} . {f.client_port}" for f in flows)
    return f"  set ends {{ type ipv4_addr . inet_service; elements = {{ {elems} }} }}\n"


def chain(name: str, hook: str, *rules: str) -> str:
    """A base chain that runs before the default filter priority."""
    body = "".join(f"    {r}\n" for r in rules)
    return f"  chain {name} {{\n    type filter hook {hook} priority -10; policy accept;\n{body}  }}\n"


# Rules on the router's forward path, for packets of a flow in each direction.
TO_SERVER = "ip saddr . tcp sport . ip daddr . tcp dport @flows"
TO_CLIENT = "ip daddr . tcp dport . ip saddr . tcp sport @flows"


@dataclass
class PacketFault:
    """Base of the packet faults: subclasses say where they act and which rules they load."""

    where: ClassVar[Where]
    peer: ClassVar[Peer]            # what the server's next packet meets, for the prediction
    layer: ClassVar[str] = "packet"
    _applied: list[tuple[LabNamespaces, str]] = field(default_factory=list, init=False, repr=False)

    def rules(self, flows: Sequence[Flow]) -> str:
        """The body of our nft table for these flows."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line for reports."""
        raise NotImplementedError

    def ruleset(self, flows: Sequence[Flow]) -> str:
        return f"table {nft.TABLE} {{\n{self.rules(flows)}}}\n"

    def apply(self, site: Site) -> None:
        """Make the site's flows' packets vanish (or draw resets) from now on."""
        if not site.flows:
            return
        role = "rtr" if self.where == "router" else "cli"
        nft.load(site.lab, role, self.ruleset(site.flows))
        self._applied.append((site.lab, role))

    def predict(self, settings: Effective, facts: SessionFacts, heartbeat: Heartbeat) -> Prediction:
        """The kernel's timers on the silent (or resetting) peer, against the service's
        heartbeat; a heartbeat in flight turns keepalive into retransmission."""
        tcp = predict(settings, activity=facts.activity, peer=self.peer,
                      last_activity_s=facts.last_activity_s, data_sent_s=facts.data_sent_s,
                      rto_s=facts.rto_s)

        def blinded(first_send: float) -> Prediction:
            return predict(settings, activity="in-flight", peer=self.peer, data_sent_s=first_send,
                           rto_s=facts.rto_s)
        return predict_with_heartbeat(tcp, facts, heartbeat, blinded)

    def revert(self) -> None:
        """Remove what ``apply`` loaded."""
        while self._applied:
            nft.delete_table(*self._applied.pop())


__all__ = ["Flow", "PacketFault", "naming"]
