"""Faults: what happens to some sessions. One module per fault, registered in ``FAULTS``.

Packet faults act on packets in the lab (nftables); proxy faults act in a Toxiproxy between
client and server, driven through toxiproxy-python.
"""

from __future__ import annotations

from harness.faults.base import Flow, PacketFault
from harness.faults.blackhole import Blackhole
from harness.faults.client_vanish import ClientVanish
from harness.faults.one_way_drop import OneWayDrop
from harness.faults.peer_reboot import PeerReboot
from harness.faults.proxy_base import ProxyControl, ProxyFault
from harness.faults.proxy_down import ProxyDown
from harness.faults.proxy_stall import ProxyStall
from harness.faults.reset import Reset
from harness.faults.toxic import Toxic
from harness.scenario.model import TOXICS, Fault

FAULTS: dict[str, type[PacketFault] | type[ProxyFault]] = {
    "blackhole": Blackhole,
    "client-vanish": ClientVanish,
    "one-way-drop": OneWayDrop,
    "peer-reboot": PeerReboot,
    "proxy-stall": ProxyStall,
    "proxy-down": ProxyDown,
    "reset": Reset,
    **{name: Toxic for name in TOXICS},
}


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
