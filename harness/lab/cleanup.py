"""``connchaos clean``: remove what a killed run left behind, and nothing that is not ours.

Ours means: network namespaces and host links whose names start with ``cc-``, nftables tables
named ``connchaos`` in the host namespace, temporary folders starting with ``connchaos-``,
the per-run user accounts named ``cc-<lab id>`` (the ssh target's), and Docker containers and
networks labelled ``connchaos.run`` (removed with their anonymous volumes). Images are a cache
(``connchaos images``), not leftovers. A lab whose owner process
is still alive belongs to a run in progress and is left alone.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from typing import Any

from pyroute2 import IPRoute

from harness.errors import LabError
from harness.lab import naming
from harness.lab.local import _remove_namespace
from harness.lab.netns import list_namespaces
from harness.lab.processes import end_processes

# A per-run account: our prefix and a lab id, nothing else. Any other account is not ours.
RUN_USER = re.compile(rf"{re.escape(naming.PREFIX)}[0-9a-f]{{6}}")


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
    found: dict[str, list[str]] = {"namespaces": [], "links": [], "nft_tables": [], "folders": [],
                                   "users": []}
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
    for user in run_users():
        lab = naming.lab_id_of(user)
        if not (lab and _owner_alive(lab)):
            found["users"].append(user)
    return found


def _docker_client() -> Any:
    """The engine, if one answers; cleaning local leftovers does not need it."""
    from harness.errors import MachineError
    from harness.lab.docker import engine

    try:
        return engine(timeout_s=10)
    except MachineError:
        return None


def clean(namespaces: bool = True) -> dict[str, list[str]]:
    """Remove the leftovers; returns what was removed. ``namespaces=False`` (not root): only
    the docker objects and the folders, leaving what needs root."""
    found = leftovers()
    if not namespaces:
        for kind in ("namespaces", "links", "nft_tables", "users"):
            found[kind] = []
        found["folders"] = [f for f in found["folders"] if _owned_by_me(f)]
    client = _docker_client()
    if client is not None:
        from harness.lab.docker import remove_labelled

        # containers first: the namespaces attached from them then hold nothing
        try:
            found["docker"] = remove_labelled(client, keep=_owner_alive)
        finally:
            client.close()
    for ns in found["namespaces"]:
        _remove_namespace(ns)  # ends the processes inside first (a server of a killed run)
    with IPRoute() as ipr:
        for name in found["links"]:
            idx = ipr.link_lookup(ifname=name)
            if idx:
                ipr.link("del", index=idx[0])
    for table in found["nft_tables"]:
        subprocess.run(["nft", "delete", "table", *table.split()], capture_output=True)
    for user in found["users"]:
        remove_run_user(user)
    for folder in found["folders"]:
        shutil.rmtree(folder, ignore_errors=True)
    return found


def _owned_by_me(path: str) -> bool:
    try:
        return os.stat(path).st_uid == os.geteuid()
    except OSError:
        return False


def run_users() -> list[str]:
    """The per-run accounts that exist now (``cc-`` and a lab id), whoever's lab they are."""
    return sorted(p.pw_name for p in pwd.getpwall() if RUN_USER.fullmatch(p.pw_name))


def _uid_pids(uid: int) -> list[int]:
    """The live (not zombie) processes running as ``uid``."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid != uid:
                    continue
                with open(f"/proc/{entry}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        continue
            except (OSError, IndexError):
                continue
            pids.append(int(entry))
    return pids


def remove_run_user(name: str, grace_s: float = 3.0) -> None:
    """Remove a per-run account: end its processes (every one is a lab's), then ``userdel``.
    Refuses any name that is not a per-run account; an account already gone is fine."""
    if not RUN_USER.fullmatch(name):
        raise ValueError(f"{name!r} is not a per-run account of connchaos")
    try:
        uid = pwd.getpwnam(name).pw_uid
    except KeyError:
        return
    end_processes(lambda: _uid_pids(uid), grace_s)
    # userdel takes a lock on /etc/passwd; another lab adding or removing its own account at
    # the same moment makes it fail with "cannot lock", which passes in a moment.
    deadline = time.monotonic() + 10
    while True:
        done = subprocess.run(["userdel", name], capture_output=True, text=True, check=False)
        if done.returncode == 0 or name not in {p.pw_name for p in pwd.getpwall()}:
            return
        if "lock" not in done.stderr or time.monotonic() > deadline:
            raise LabError(f"removing the account {name}", done.stderr.strip())
        time.sleep(0.1)
