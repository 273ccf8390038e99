"""``one-way-drop``: one direction of the path loses every packet, the other still works."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from harness.faults.base import TO_CLIENT, TO_SERVER, Flow, PacketFault, chain, flow_set

Direction = Literal["to-server", "to-client"]


@dataclass
class OneWayDrop(PacketFault):
    """Drop the faulted flows' packets in one direction, in the router."""

    direction: Direction = "to-client"
    where = "router"
    peer = "silent"

    def rules(self, flows: Sequence[Flow]) -> str:
        match = TO_SERVER if self.direction == "to-server" else TO_CLIENT
        return flow_set(flows) + chain("forward", "forward", f"{match} drop")

    def describe(self) -> str:
        return f"router drops packets {self.direction}"
