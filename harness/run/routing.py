"""Where sessions connect, how the server sees them, and where a fault acts.

Sessions reach the target directly (packet layer) or through the lab's proxy (proxy layer):
the faulted ones through one proxy and the others through another, so a proxy fault hits
exactly the chosen sessions. Without root on the docker backend, sessions go through a
forwarder in the client's container. ``Routing`` hides these differences from the runners:
each routing also says where the scenario's fault acts (``fault_site``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.errors import LabError
from harness.faults.base import Flow
from harness.faults.site import Site
from harness.lab.toxiproxy import FAULTED, SPARED, LabProxy
from harness.observe.conntrack import ConntrackTable, Tuple
from harness.observe.sockdiag import Key
from harness.targets.base import Session


@dataclass
class Routing:
    """Direct: sessions connect to the server, which sees the client's own address."""

    def via(self, index: int) -> tuple[str, int] | None:
        return None

    def server_keys(self, target: Any, sessions: Sequence[Session]) -> dict[int, Key]:
        return {s.id: (s.flow.server_addr, s.flow.server_port, s.flow.client_addr, s.flow.client_port)
                for s in sessions}

    def describe(self) -> dict[str, Any]:
        return {}

    def fault_flows(self, sessions: Sequence[Session], keys: dict[int, Key]) -> list[Flow]:
        """The connections a packet fault acts on: the sessions' own."""
        return [s.flow for s in sessions]

    def fault_site(self, lab: Any, faulted: Sequence[Session], keys: dict[int, Key]) -> Site:
        """Where the fault acts on the ``faulted`` sessions."""
        return Site(lab=lab, flows=self.fault_flows(faulted, keys))

    def shown(self) -> str:
        """How the sessions go, for progress lines (nothing when direct)."""
        return ""


def flow_tuple(flow: Flow) -> Tuple:
    """A session's flow as the middlebox tracks it: its original direction, from the client."""
    return Tuple(flow.client_addr, flow.client_port, flow.server_addr, flow.server_port)


@dataclass
class NatRouting(Routing):
    """Direct, through the middlebox's NAT: the server sees each client as the router's
    address and the port masquerade chose, which the router's conntrack entry of the flow
    says (its reply tuple); the port is not assumed kept."""

    conntrack: ConntrackTable = field(default=None)  # type: ignore[assignment]

    def server_keys(self, target: Any, sessions: Sequence[Session]) -> dict[int, Key]:
        table = self.conntrack.dump()
        keys = {}
        for s in sessions:
            entry = table.get(flow_tuple(s.flow))
            if entry is None:
                raise LabError("mapping sessions through the middlebox's NAT",
                               f"no conntrack entry in {self.conntrack.namespace} for session"
                               f" {s.id} ({s.flow})")
            r = entry.reply
            keys[s.id] = (r.src, r.sport, r.dst, r.dport)
        return keys

    def describe(self) -> dict[str, Any]:
        return {"nat": f"clients masqueraded in {self.conntrack.namespace}"}

    def shown(self) -> str:
        return f"; clients behind the middlebox's NAT in {self.conntrack.namespace}"


@dataclass
class ProxyRouting(Routing):
    """Through the lab's proxy: faulted sessions via one proxy, the others via another."""

    proxy: LabProxy = field(default=None)  # type: ignore[assignment]
    faulted: set[int] = field(default_factory=set)
    listen: dict[str, tuple[str, int]] = field(default_factory=dict)

    def open(self, upstream: tuple[str, int]) -> None:
        for name in (FAULTED, SPARED):
            self.listen[name] = self.proxy.create(name, upstream)

    def via(self, index: int) -> tuple[str, int] | None:
        return self.listen[FAULTED if index in self.faulted else SPARED]

    def server_keys(self, target: Any, sessions: Sequence[Session]) -> dict[int, Key]:
        """The server's peer for each session is the proxy's upstream-side socket: the
        built-in proxy lists it; with a real Toxiproxy the target's own view tells."""
        by_client: dict[str, str] = {}
        for name in (FAULTED, SPARED):
            for conn in self.proxy.connections(name) or []:
                by_client[conn["client"]] = conn["upstream_local"]
        keys = {}
        for s in sessions:
            server = (target.server_addr_of(s), target.port)
            peer = by_client.get(f"{s.flow.client_addr}:{s.flow.client_port}")
            if peer is not None:
                addr, _, port = peer.rpartition(":")
                keys[s.id] = (*server, addr, int(port))
            else:
                seen = target.server_peer(s)
                if seen is None:
                    raise LabError("mapping sessions through the proxy",
                                   f"cannot tell which server socket serves session {s.id}")
                keys[s.id] = (*server, *seen)
        return keys

    def describe(self) -> dict[str, Any]:
        return {"proxy_server": self.proxy.server,
                "proxies": {n: f"{h}:{p}" for n, (h, p) in self.listen.items()}}

    def fault_site(self, lab: Any, faulted: Sequence[Session], keys: dict[int, Key]) -> Site:
        """Proxy faults act on the faulted sessions' proxy (packet faults, on their flows)."""
        return Site(lab=lab, flows=self.fault_flows(faulted, keys), proxy=self.proxy, proxy_name=FAULTED)

    def shown(self) -> str:
        return f"; proxy ({self.proxy.server}) in {self.proxy.lab.router_ns}"


@dataclass
class ForwarderRouting(ProxyRouting):
    """The docker backend without root: the harness cannot open sockets in the client's
    namespace, so sessions go from here to a forwarder there (the built-in proxy, no toxics),
    whose upstream-side sockets are the clients the server sees; packet faults act on those
    upstream legs, in the client's or router's container."""

    def fault_flows(self, sessions: Sequence[Session], keys: dict[int, Key]) -> list[Flow]:
        return [Flow(keys[s.id][2], keys[s.id][3], keys[s.id][0], keys[s.id][1]) for s in sessions]

    def describe(self) -> dict[str, Any]:
        return {"forwarders": {n: f"{h}:{p}" for n, (h, p) in self.listen.items()}}

    def fault_site(self, lab: Any, faulted: Sequence[Session], keys: dict[int, Key]) -> Site:
        return Site(lab=lab, flows=self.fault_flows(faulted, keys))

    def shown(self) -> str:
        return "; sessions through a forwarder in the client's container (no root)"


def setup_routing(lab: Any, target: Any, layer: str, faulted: set[int],
                  proxy_command: Sequence[str] | None, nat: ConntrackTable | None = None) -> Routing:
    """The scenario's routing; ``nat``: the middlebox's table, when it masquerades the clients."""
    if layer != "proxy" and lab.reach.enters_networks:
        return Routing() if nat is None else NatRouting(conntrack=nat)
    if layer != "proxy":
        proxy = LabProxy(lab, beside="cli")
        proxy.start()
        routing: ProxyRouting = ForwarderRouting(proxy=proxy, faulted=faulted)
        routing.open((lab.server_addr, target.port))
        return routing
    proxy = LabProxy(lab, command=proxy_command)
    proxy.start()
    routing = ProxyRouting(proxy=proxy, faulted=faulted)
    routing.open((lab.server_addr, target.port))
    return routing
