"""The nftables adapter: load a ruleset into a lab namespace, delete our table again.

Everything lives in one table, ``inet connchaos``, inside the lab's namespaces; nothing is
ever added to the host's ruleset.
"""

from __future__ import annotations

import shutil

from harness.lab import naming
from harness.lab.netns import run_in

TABLE = f"inet {naming.NFT_TABLE}"


def nft_binary() -> str | None:
    """Path of the ``nft`` command, or None."""
    return shutil.which("nft")


def load(namespace: str, ruleset: str) -> None:
    """Atomically add ``ruleset`` (nft syntax) inside ``namespace``."""
    run_in(namespace, ["nft", "-f", "-"], input=ruleset, step=f"loading nftables rules in {namespace}")


def delete_table(namespace: str) -> None:
    """Remove our table from ``namespace`` if it is there."""
    listing = run_in(namespace, ["nft", "list", "tables"], step=f"listing nftables tables in {namespace}")
    if f"table {TABLE}" in listing.stdout:
        run_in(namespace, ["nft", "delete", "table", *TABLE.split()],
               step=f"deleting nftables table in {namespace}")
