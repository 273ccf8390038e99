"""The nftables adapter: load a ruleset on a lab host, delete our table again.

Everything lives in one table, ``inet connchaos``, inside the lab's namespaces; nothing is
ever added to the host's ruleset. The lab runs ``nft`` there (``run_in``): this machine's nft
inside the namespace as root, ``docker exec`` in the container's own without root.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Protocol

from harness.lab import naming
from harness.lab.netns import run_in

TABLE = f"inet {naming.NFT_TABLE}"


class RunsIn(Protocol):
    """A lab, as far as nft needs it: a way to run a command on one of its hosts."""

    def run_in(self, role: str, argv: list[str], *, input: str | None = None,
               step: str = "") -> subprocess.CompletedProcess[str]: ...


def nft_binary() -> str | None:
    """Path of the ``nft`` command, or None."""
    return shutil.which("nft")


def load(lab: RunsIn, role: str, ruleset: str) -> None:
    """Atomically add ``ruleset`` (nft syntax) on the lab host ``role`` (``cli``/``rtr``)."""
    lab.run_in(role, ["nft", "-f", "-"], input=ruleset, step=f"loading nftables rules in {role}")


def delete_table(lab: RunsIn, role: str) -> None:
    """Remove our table from the lab host ``role`` if it is there."""
    listing = lab.run_in(role, ["nft", "list", "tables"], step=f"listing nftables tables in {role}")
    if f"table {TABLE}" in listing.stdout:
        lab.run_in(role, ["nft", "delete", "table", *TABLE.split()],
                   step=f"deleting nftables table in {role}")


class InNamespace:
    """A bare namespace as a ``RunsIn`` (its one host for every role): the doctor's check
    and tests that build a namespace of their own."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def run_in(self, role: str, argv: list[str], *, input: str | None = None,
               step: str = "") -> subprocess.CompletedProcess[str]:
        return run_in(self.namespace, argv, input=input, step=step)
