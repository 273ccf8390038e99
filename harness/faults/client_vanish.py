"""``client-vanish``: the client host is gone (power loss): nothing from it, nothing to it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from harness.faults.base import Flow, PacketFault, chain, end_set


@dataclass
class ClientVanish(PacketFault):
    """Drop the faulted sessions' packets at the client host, in and out."""

    where = "client"
    peer = "silent"

    def rules(self, flows: Sequence[Flow]) -> str:
        return (end_set(flows)
                + chain("input", "input", "ip daddr . tcp dport @ends drop")
                + chain("output", "output", "ip saddr . tcp sport @ends drop"))

    def describe(self) -> str:
        return "client host silent: drops everything in and out"
