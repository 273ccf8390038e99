"""What every packet fault shares: the flows it acts on, and applying/reverting nft rules.

A packet fault decides *which namespace* it acts in (the router or the client, never the
server: a drop in the server's own stack is seen by the server) and *which rules*; applying
and reverting is the same for all of them. Flows are kept in nftables sets so one rule serves
any number of sessions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from harness.core.prediction import Peer
from harness.faults import nft
from harness.lab import naming

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

    def apply(self, lab: LabNamespaces, flows: Sequence[Flow]) -> None:
        """Make the flows' packets vanish (or draw resets) from now on."""
        if not flows:
            return
        role = "rtr" if self.where == "router" else "cli"
        nft.load(lab, role, self.ruleset(flows))
        self._applied.append((lab, role))

    def revert(self) -> None:
        """Remove what ``apply`` loaded."""
        while self._applied:
            nft.delete_table(*self._applied.pop())


__all__ = ["Flow", "PacketFault", "naming"]
