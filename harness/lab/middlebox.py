"""The router as a middlebox: a NAT / load balancer whose connection-tracking entries expire.

Cloud load balancers and NAT gateways forget a flow that has been idle for their timeout
(AWS NLB 350 s, Azure 4 min); the flow's later packets are then dropped, or answered with a
reset. The lab's router plays that part with its own conntrack (per namespace): established
TCP entries time out after ``idle_timeout`` (``nf_conntrack_tcp_timeout_established``), and
with ``nf_conntrack_tcp_loose`` 0 a mid-stream packet of a forgotten flow is not picked up
as a new flow but is ``ct state invalid``, which our table drops or rejects with a reset.

With NAT the client network is masqueraded behind the router's server-side address: the
server's packets of a forgotten flow are addressed to the router itself, so they meet the
rule in ``input``; the client's meet it in ``forward``. Everything is in the table
``inet connchaos_middlebox`` inside the lab's router namespace, removed with the lab.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from harness.faults import nft
from harness.lab import naming
from harness.lab.netns import read_sysctl, write_sysctl

TABLE = f"inet {naming.NFT_TABLE}_middlebox"
ESTABLISHED = "net.netfilter.nf_conntrack_tcp_timeout_established"
LOOSE = "net.netfilter.nf_conntrack_tcp_loose"


class RouterLab(nft.RunsIn, Protocol):
    """What the middlebox needs of a lab (the local backend's ``LocalLab``)."""

    router_ns: str
    lab_id: str

    def on_close(self, what: str, fn: Callable[[], None]) -> None: ...


@dataclass(frozen=True)
class MiddleboxConfig:
    """The scenario's ``middlebox:`` section, as the router applies it."""

    idle_timeout_s: float
    on_expiry: Literal["drop", "reset"] = "drop"
    nat: bool = True

    def describe(self) -> str:
        then = "drops" if self.on_expiry == "drop" else "resets"
        nat = "NAT (masquerade), " if self.nat else ""
        return (f"{nat}conntrack established timeout {self.idle_timeout_s:g} s;"
                f" then {then} the flow's packets")


def ruleset(config: MiddleboxConfig, *, client_net: str, server_link: str) -> str:
    """The router's table: masquerade (with NAT), and the verdict on packets of a flow it
    no longer tracks."""
    verdict = "drop" if config.on_expiry == "drop" else "reject with tcp reset"
    # only TCP: a reset is a TCP answer; the lab carries nothing else that is tracked
    rule = f"meta l4proto tcp ct state invalid counter {verdict}"
    nat = (f"  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n"
           f"    oifname \"{server_link}\" ip saddr {client_net} masquerade\n  }}\n") if config.nat else ""
    return (f"table {TABLE} {{\n{nat}"
            f"  chain forward {{\n    type filter hook forward priority filter; policy accept;\n"
            f"    {rule}\n  }}\n"
            f"  chain input {{\n    type filter hook input priority filter; policy accept;\n"
            f"    {rule}\n  }}\n}}\n")


def install(lab: RouterLab, config: MiddleboxConfig) -> None:
    """Make the lab's router the middlebox (undone with the lab: its table is deleted; the
    sysctls belong to the router namespace, which goes with the lab)."""
    ns = lab.router_ns
    write_sysctl(ns, ESTABLISHED, str(int(config.idle_timeout_s)))
    write_sysctl(ns, LOOSE, "0")
    lab.on_close("middlebox table", lambda: _delete(lab))
    nft.load(lab, "rtr", ruleset(config, client_net=naming.CLIENT_NET,
                                 server_link=naming.link(lab.lab_id, "rs")))


def _delete(lab: nft.RunsIn) -> None:
    listing = lab.run_in("rtr", ["nft", "list", "tables"], step="listing nftables tables in rtr")
    if f"table {TABLE}" in listing.stdout:
        lab.run_in("rtr", ["nft", "delete", "table", *TABLE.split()],
                   step="deleting the middlebox's nftables table")


def router_timeout(ns: str) -> int:
    """The established-TCP timeout the router's conntrack applies now (seconds)."""
    return int(read_sysctl(ns, ESTABLISHED))
