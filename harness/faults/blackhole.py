"""``blackhole``: the path between client and server drops everything, both directions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from harness.faults.base import TO_CLIENT, TO_SERVER, Flow, PacketFault, chain, flow_set


@dataclass
class Blackhole(PacketFault):
    """Drop both directions of the faulted flows in the router."""

    where = "router"
    peer = "silent"

    def rules(self, flows: Sequence[Flow]) -> str:
        return flow_set(flows) + chain("forward", "forward", f"{TO_SERVER} drop", f"{TO_CLIENT} drop")

    def describe(self) -> str:
        return "router drops both directions"
