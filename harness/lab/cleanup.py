"""``connchaos clean``: remove what a killed run left behind, and nothing that is not ours.

Ours means: network namespaces and host links whose names start with ``cc-``, nftables tables
named ``connchaos`` in the host namespace, temporary folders starting with ``connchaos-``.
A lab whose owner process is still alive belongs to a run in progress and is left alone.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import tempfile

from pyroute2 import IPRoute

from harness.lab import naming
from harness.lab.local import _remove_namespace
from harness.lab.netns import list_namespaces


def _owner_alive(lab_id: str) -> bool:
    for folder in glob.glob(os.path.join(tempfile.gettempdir(), f"{naming.TMP_PREFIX}{lab_id}-*")):
        try:
            with open(os.path.join(folder, naming.OWNER_FILE)) as f:
                pid = int(json.load(f)["pid"])
        except (OSError, ValueError, KeyError):
            continue
        if os.path.exists(f"/proc/{pid}"):
            return True
    return False


def leftovers() -> dict[str, list[str]]:
    """What a clean would remove now (labs of live runs excluded)."""
    found: dict[str, list[str]] = {"namespaces": [], "links": [], "nft_tables": [], "folders": []}
    for ns in list_namespaces():
        lab = naming.lab_id_of(ns)
        if ns.startswith(naming.PREFIX) and not (lab and _owner_alive(lab)):
            found["namespaces"].append(ns)
    with IPRoute() as ipr:
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME")
            lab = naming.lab_id_of(name)
            if name.startswith(naming.PREFIX) and not (lab and _owner_alive(lab)):
                found["links"].append(name)
    if shutil.which("nft"):
        out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[2].startswith(naming.NFT_TABLE):
                found["nft_tables"].append(f"{parts[1]} {parts[2]}")
    for folder in glob.glob(os.path.join(tempfile.gettempdir(), f"{naming.TMP_PREFIX}*")):
        lab = naming.lab_id_of(os.path.basename(folder))
        if not (lab and _owner_alive(lab)):
            found["folders"].append(folder)
    return found


def clean() -> dict[str, list[str]]:
    """Remove the leftovers; returns what was removed."""
    found = leftovers()
    for ns in found["namespaces"]:
        _remove_namespace(ns)  # ends the processes inside first (a server of a killed run)
    with IPRoute() as ipr:
        for name in found["links"]:
            idx = ipr.link_lookup(ifname=name)
            if idx:
                ipr.link("del", index=idx[0])
    for table in found["nft_tables"]:
        subprocess.run(["nft", "delete", "table", *table.split()], capture_output=True)
    for folder in found["folders"]:
        shutil.rmtree(folder, ignore_errors=True)
    return found
