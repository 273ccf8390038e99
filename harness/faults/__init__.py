"""Faults: what happens to some sessions. One module per fault, registered in ``FAULTS``."""

from __future__ import annotations

from harness.faults.base import Flow, PacketFault
from harness.faults.blackhole import Blackhole
from harness.faults.client_vanish import ClientVanish
from harness.faults.one_way_drop import OneWayDrop
from harness.faults.peer_reboot import PeerReboot

FAULTS: dict[str, type[PacketFault]] = {
    "blackhole": Blackhole,
    "client-vanish": ClientVanish,
    "one-way-drop": OneWayDrop,
    "peer-reboot": PeerReboot,
}


def build(fault_type: str, direction: str | None = None) -> PacketFault:
    """The fault object for a scenario's ``fault`` section (already validated)."""
    cls = FAULTS[fault_type]
    if cls is OneWayDrop:
        return OneWayDrop(direction=direction or "to-client")  # type: ignore[arg-type]
    return cls()


__all__ = ["FAULTS", "Flow", "PacketFault", "build"]
