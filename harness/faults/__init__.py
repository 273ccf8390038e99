"""Faults: what happens to some sessions. One module per fault, named in
``harness.registry.FAULT_TYPES``; ``FAULTS`` is that table's classes.

Packet faults act on packets in the lab (nftables); proxy faults act in a Toxiproxy between
client and server, driven through toxiproxy-python.
"""

from __future__ import annotations

from harness.faults.base import Flow, PacketFault
from harness.faults.one_way_drop import OneWayDrop
from harness.faults.proxy_base import ProxyControl, ProxyFault
from harness.faults.toxic import Toxic
from harness.registry import FAULT_TYPES
from harness.scenario.model import Fault

FAULTS: dict[str, type[PacketFault] | type[ProxyFault]] = {
    name: kind.load() for name, kind in FAULT_TYPES.items()}


def build(spec: Fault) -> PacketFault | ProxyFault:
    """The fault object for a scenario's (validated) ``fault`` section."""
    cls = FAULTS[spec.type]
    if cls is OneWayDrop:
        return OneWayDrop(direction=spec.direction or "to-client")
    if issubclass(cls, ProxyFault):
        extra = {"kind": spec.type} if cls is Toxic else {}
        return cls(stream=spec.stream, toxicity=spec.toxicity, attributes=dict(spec.attributes), **extra)
    return cls()


__all__ = ["FAULTS", "Flow", "PacketFault", "ProxyControl", "ProxyFault", "build"]
