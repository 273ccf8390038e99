"""Every fault type and every service connchaos knows, named once.

The scenario schema (``harness.scenario.model``), the runners, the CLI, the pytest plugin and
the load runner read these tables; each entry names its implementation by module path, so
reading the table imports nothing else (a scenario for one service does not load the other
services' client libraries). Adding a service or a fault is one entry here and its module.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal

from harness.proxy.toxics import TOXICS

Layer = Literal["packet", "proxy"]


def _load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class FaultType:
    """One fault type: where it acts, its implementation, and the Toxiproxy toxic whose
    attributes it takes (proxy faults made of one toxic)."""

    name: str
    layer: Layer
    implementation: str
    toxic: str | None = None
    takes_stream: bool = False    # a toxic's stream (upstream/downstream) and toxicity

    def load(self) -> Any:
        """The fault's class."""
        return _load(self.implementation)


FAULT_TYPES: dict[str, FaultType] = {f.name: f for f in (
    FaultType("blackhole", "packet", "harness.faults.blackhole:Blackhole"),
    FaultType("client-vanish", "packet", "harness.faults.client_vanish:ClientVanish"),
    FaultType("one-way-drop", "packet", "harness.faults.one_way_drop:OneWayDrop"),
    FaultType("peer-reboot", "packet", "harness.faults.peer_reboot:PeerReboot"),
    FaultType("nat-idle-expiry", "packet", "harness.faults.nat_idle_expiry:NatIdleExpiry"),
    FaultType("process-pause", "packet", "harness.faults.process_pause:ProcessPause"),
    FaultType("slow-reader", "packet", "harness.faults.slow_reader:SlowReader"),
    FaultType("packet-loss", "packet", "harness.faults.packet_loss:PacketLoss"),
    FaultType("syn-blackhole", "packet", "harness.faults.syn_blackhole:SynBlackhole"),
    FaultType("proxy-stall", "proxy", "harness.faults.proxy_stall:ProxyStall", takes_stream=True),
    FaultType("proxy-down", "proxy", "harness.faults.proxy_down:ProxyDown"),
    FaultType("reset", "proxy", "harness.faults.reset:Reset", toxic="reset_peer", takes_stream=True),
    *(FaultType(name, "proxy", "harness.faults.toxic:Toxic", toxic=name, takes_stream=True)
      for name in TOXICS),
)}
"""Packet faults act on packets in the lab (nftables: TCP itself sees nothing); proxy faults
act in a Toxiproxy between client and server: the named ones, and each of Toxiproxy's toxics
(the ones the built-in proxy implements) by its own name, with its own attributes."""

PACKET_FAULTS = tuple(n for n, f in FAULT_TYPES.items() if f.layer == "packet")
PROXY_FAULTS = tuple(n for n, f in FAULT_TYPES.items() if f.layer == "proxy")


@dataclass(frozen=True)
class ServiceType:
    """One service: its target, its Locust user, and whether connchaos starts it (then a
    command, port or readiness check of the user's own is not for it)."""

    name: str
    implementation: str
    locust_user: str | None
    started_by_connchaos: bool
    tier: bool = False            # a middle tier (pgbouncer, haproxy): each session has an upstream leg
    fronts: bool = False          # in front of the scenario's ``upstream:`` (another service)
    # a tier (pgbouncer) runs its own backend in the server's network: the backend's service,
    # whose settings the scenario gives as ``target.backend_settings``
    backend_service: str | None = None

    def load(self) -> Any:
        """The target's class; ImportError if its module (or a library it needs) is not there."""
        return _load(self.implementation)


SERVICE_TYPES: dict[str, ServiceType] = {s.name: s for s in (
    ServiceType("postgres", "harness.targets.postgres:PostgresTarget", "PostgresUser", True),
    ServiceType("ssh", "harness.targets.ssh:SshTarget", "SshUser", True),
    ServiceType("websocket", "harness.targets.websocket:WebSocketTarget", "WebSocketUser", False),
    ServiceType("tcp", "harness.targets.tcp:TcpTarget", "TcpUser", False),
    # in front of another service: its sessions (and Locust users) are its upstream's, through its port
    ServiceType("haproxy", "harness.targets.haproxy:HaproxyTarget", None, True, tier=True, fronts=True),
    # in front of its own backend (PostgreSQL), whose settings are target.backend_settings
    ServiceType("pgbouncer", "harness.targets.pgbouncer:PgbouncerTarget", "PgbouncerUser", True,
                tier=True, backend_service="postgres"),
    ServiceType("mqtt", "harness.targets.mqtt:MqttTarget", "MqttUser", True),
    ServiceType("redis", "harness.targets.redis:RedisTarget", "RedisUser", True),
    # connchaos's reference grpcio server; no Locust user yet
    ServiceType("grpc", "harness.targets.grpc:GrpcTarget", None, True),
)}
"""The services under test. ``locust_user`` is the User class in harness/load/users.py
(Locust takes class names on its command line; users.py is never imported here)."""

SERVICES = tuple(SERVICE_TYPES)
