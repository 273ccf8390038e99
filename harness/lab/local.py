"""The local backend's lab: client, router and server network namespaces joined by veth pairs.

::

    cc-<lab>-cli            cc-<lab>-rtr                cc-<lab>-srv
    10.77.0.2 [cc-<lab>-c]──[cc-<lab>-rc] 10.77.0.1
                            10.77.1.1 [cc-<lab>-rs]──[cc-<lab>-s] 10.77.1.2

The router forwards between the two links; packet faults act there or in the client
namespace, never in the server's (a drop in the server's own stack is not silent).
Every object is created in ``__enter__`` and released in reverse order in ``close``, which
also runs for exceptions, Ctrl-C and SIGTERM (see ``harness.lab.base``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

from harness import interrupts
from harness.errors import LabError
from harness.lab import naming
from harness.lab.base import LabBase
from harness.lab.netns import entered, list_namespaces, pids_in, write_sysctl
from harness.lab.processes import end_processes, running
from harness.lab.reach import NamespaceReach


@dataclass
class LocalLab(LabBase):
    """One lab on this machine. Use as a context manager."""

    client_ns: str = ""
    router_ns: str = ""
    server_ns: str = ""
    client_addr: str = naming.CLIENT_ADDR
    server_addr: str = naming.SERVER_ADDR
    router_client_addr: str = naming.ROUTER_CLIENT_ADDR
    router_server_addr: str = naming.ROUTER_SERVER_ADDR
    client_net: str = naming.CLIENT_NET

    def __post_init__(self) -> None:
        self.client_ns = naming.namespace(self.lab_id, "cli")
        self.router_ns = naming.namespace(self.lab_id, "rtr")
        self.server_ns = naming.namespace(self.lab_id, "srv")

    @property
    def backend(self) -> str:
        return "local"

    # -- building ---------------------------------------------------------------------------

    def _build(self) -> None:
        c, rc = naming.link(self.lab_id, "c"), naming.link(self.lab_id, "rc")
        s, rs = naming.link(self.lab_id, "s"), naming.link(self.lab_id, "rs")
        self._make_folder(namespaces=[self.client_ns, self.router_ns, self.server_ns],
                          links=[c, rc, s, rs])
        self.reach = NamespaceReach(self.client_ns, self.router_ns, self.server_ns)

        for ns in (self.client_ns, self.router_ns, self.server_ns):
            self._add_namespace(ns)

        self._veth(c, self.client_ns, rc)
        self._veth(s, self.server_ns, rs)

        self._configure(self.client_ns, c, self.client_addr, naming.ROUTER_CLIENT_ADDR)
        self._configure(self.server_ns, s, self.server_addr, naming.ROUTER_SERVER_ADDR)
        with entered(self.router_ns), IPRoute() as ipr:
            self._link_up(ipr, "lo")
            for name, addr in ((rc, naming.ROUTER_CLIENT_ADDR), (rs, naming.ROUTER_SERVER_ADDR)):
                idx = ipr.link_lookup(ifname=name)[0]
                ipr.addr("add", index=idx, address=addr, prefixlen=naming.PREFIXLEN)
                ipr.link("set", index=idx, state="up")
        write_sysctl(self.router_ns, "net.ipv4.ip_forward", "1")

    def _add_namespace(self, name: str) -> None:
        if name in list_namespaces():
            raise LabError("creating the lab", f"namespace {name} already exists")
        self.on_close(f"namespace {name}", lambda: _remove_namespace(name))
        # pyroute2 creates it in a child process: interrupted while waiting for that child,
        # the namespace would appear after the teardown had looked for it
        with interrupts.deferred():
            try:
                netns.create(name)
            except OSError as exc:
                raise LabError(f"creating namespace {name}", str(exc)) from exc

    def _veth(self, end: str, end_ns: str, router_end: str) -> None:
        """A veth pair: ``end`` moves to ``end_ns``, ``router_end`` to the router. Until
        both ends have moved, the pair is the host's: the namespaces' removal would not take it."""
        self.on_close(f"veth {end}", lambda: _remove_host_link(end, router_end))
        try:
            with IPRoute() as ipr:
                ipr.link("add", ifname=end, kind="veth", peer={"ifname": router_end})
                for name, ns in ((end, end_ns), (router_end, self.router_ns)):
                    idx = ipr.link_lookup(ifname=name)[0]
                    ipr.link("set", index=idx, net_ns_fd=ns)
        except NetlinkError as exc:
            raise LabError(f"creating veth {end}", str(exc)) from exc

    @staticmethod
    def _link_up(ipr: IPRoute, name: str) -> None:
        ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")

    def _configure(self, ns: str, ifname: str, addr: str, gateway: str) -> None:
        try:
            with entered(ns), IPRoute() as ipr:
                self._link_up(ipr, "lo")
                idx = ipr.link_lookup(ifname=ifname)[0]
                ipr.addr("add", index=idx, address=addr, prefixlen=naming.PREFIXLEN)
                ipr.link("set", index=idx, state="up")
                ipr.route("add", dst="0.0.0.0/0", gateway=gateway)
        except NetlinkError as exc:
            raise LabError(f"configuring {ifname} in {ns}", str(exc)) from exc

    def describe(self) -> dict[str, str]:
        """Where things are, for reports and for ``connchaos up``."""
        return {"client_ns": self.client_ns, "router_ns": self.router_ns,
                "server_ns": self.server_ns, "client_addr": self.client_addr,
                "server_addr": self.server_addr, "tmpdir": self.tmpdir}


def _remove_host_link(*names: str) -> None:
    """Remove the links ``names`` still in the host's namespace (a veth's other end goes too)."""
    with IPRoute() as ipr:
        for name in names:
            found = ipr.link_lookup(ifname=name)
            if found:
                with contextlib.suppress(NetlinkError):  # went with its pair
                    ipr.link("del", index=found[0])


def kill_namespace_processes(name: str, grace_s: float = 3.0) -> None:
    """End every process inside namespace ``name`` (ours by construction): TERM, then KILL."""
    end_processes(lambda: [p for p in pids_in(name) if running(p)], grace_s)


def _remove_namespace(name: str) -> None:
    """Remove a namespace of ours after ending what still runs inside it."""
    if name not in list_namespaces():
        return
    kill_namespace_processes(name)
    try:
        netns.remove(name)
    except OSError as exc:
        raise LabError(f"removing namespace {name}", str(exc)) from exc
