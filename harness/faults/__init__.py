"""Faults: what happens to some sessions. One module per fault, named in
``harness.registry.FAULT_TYPES``; ``FAULTS`` is that table's classes.

Packet faults act on packets in the lab (nftables); proxy faults act in a Toxiproxy between
client and server, driven through toxiproxy-python.
"""

from __future__ import annotations

from harness.faults.base import Flow, PacketFault
from harness.faults.nat_idle_expiry import NatIdleExpiry
from harness.faults.one_way_drop import OneWayDrop
from harness.faults.packet_loss import PacketLoss
from harness.faults.process_pause import ProcessPause
from harness.faults.proxy_base import ProxyControl, ProxyFault
from harness.faults.slow_reader import SlowReader
from harness.faults.syn_blackhole import SynBlackhole
from harness.faults.toxic import Toxic
from harness.registry import FAULT_TYPES
from harness.scenario.model import Fault, Middlebox

AnyFault = PacketFault | ProxyFault | NatIdleExpiry | ProcessPause | SlowReader
FAULTS: dict[str, type[AnyFault]] = {name: kind.load() for name, kind in FAULT_TYPES.items()}


def build(spec: Fault, middlebox: Middlebox | None = None) -> AnyFault:
    """The fault object for a scenario's (validated) ``fault`` section (and its
    ``middlebox``, which ``nat-idle-expiry`` needs: the schema made sure it is there)."""
    cls = FAULTS[spec.type]
    if cls is NatIdleExpiry:
        assert middlebox is not None
        return NatIdleExpiry(idle_timeout_s=middlebox.idle_timeout, on_expiry=middlebox.on_expiry,
                             nat=middlebox.nat)
    if cls is OneWayDrop:
        return OneWayDrop(direction=spec.direction or "to-client")
    if cls is ProcessPause or cls is SlowReader:
        return cls()
    if cls is PacketLoss:
        assert spec.loss is not None
        return PacketLoss(loss=spec.loss)
    if cls is SynBlackhole:
        return SynBlackhole(syn_retries=spec.syn_retries, connect_timeout_s=spec.connect_timeout)
    if issubclass(cls, ProxyFault):
        extra = {"kind": spec.type} if cls is Toxic else {}
        return cls(stream=spec.stream, toxicity=spec.toxicity, attributes=dict(spec.attributes), **extra)
    assert issubclass(cls, PacketFault)
    return cls()


__all__ = ["FAULTS", "AnyFault", "Flow", "NatIdleExpiry", "PacketFault", "ProcessPause", "ProxyControl",
           "ProxyFault", "SlowReader", "build"]
