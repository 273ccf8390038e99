"""``connchaos clean``: remove what a killed run left behind, and nothing it cannot prove is ours.

Ours means proven by an owner record (``harness.lab.owner``): a ``connchaos-<lab id>-`` folder
whose ``owner.json`` names that lab id and the process that made it. The objects of a lab are
those whose names carry its id: namespaces and host links ``cc-<lab id>-...``, the per-run
account ``cc-<lab id>`` (the ssh target's), Docker containers and networks labelled
``connchaos.lab=<lab id>`` whose ``connchaos.proof`` label is the one the record's secret
makes for their name (removed with their anonymous volumes), and the record's folder.
They are leftovers only when the recorded process is gone (see ``Owner.alive``: a reused pid
does not keep a dead run's lab). Nothing else is touched, whatever its name: a namespace,
link, account or folder that merely starts like ours, a container or network whose labels
name a dead lab without its proof, an nftables table in the host (labs
load theirs inside their own namespaces only), the scratch folders of a ``connchaos check``.
Images are a cache (``connchaos images``), not leftovers.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import subprocess
import time
from typing import Any

from pyroute2 import IPRoute

from harness.errors import LabError
from harness.lab import naming, owner
from harness.lab.local import _remove_namespace
from harness.lab.netns import list_namespaces
from harness.lab.processes import end_processes

# A per-run account: our prefix and a lab id, nothing else. Any other account is not ours.
RUN_USER = re.compile(rf"{re.escape(naming.PREFIX)}[0-9a-f]{{6}}")


def _of_lab(name: str, labs: set[str]) -> bool:
    """``name`` is a ``cc-<lab id>`` or ``cc-<lab id>-...`` name of one of ``labs``."""
    return name.startswith(naming.PREFIX) and naming.lab_id_of(name) in labs


def leftovers(dead: set[str] | None = None) -> dict[str, list[str]]:
    """What a clean would remove now: the objects of the labs whose recorded process is gone
    (of ``dead``, when given: ``dead_labs()``)."""
    found: dict[str, list[str]] = {"namespaces": [], "links": [], "folders": [], "users": []}
    dead = dead_labs() if dead is None else dead
    if not dead:
        return found
    found["namespaces"] = [ns for ns in list_namespaces() if _of_lab(ns, dead)]
    with IPRoute() as ipr:
        found["links"] = [name for name in (link.get_attr("IFLA_IFNAME") for link in ipr.get_links())
                          if _of_lab(name, dead)]
    found["users"] = [user for user in run_users() if _of_lab(user, dead)]
    found["folders"] = [r.folder for r in owner.records() if r.lab_id in dead]
    return found


def dead_labs() -> set[str]:
    """The labs whose owner record names a process that is gone."""
    return owner.labs()[1]


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
    dead = dead_labs()
    found = leftovers(dead)
    if not namespaces:
        for kind in ("namespaces", "links", "users"):
            found[kind] = []
        found["folders"] = [f for f in found["folders"] if _owned_by_me(f)]
    client = _docker_client() if dead else None
    if client is not None:
        from harness.lab.docker import remove_labelled

        # containers first: the namespaces attached from them then hold nothing
        of = {r.lab_id: r for r in owner.records() if r.lab_id in dead}

        def proven(lab: str, name: str, label: str) -> bool:
            return lab in of and owner.proves(of[lab], name, label)

        try:
            found["docker"] = remove_labelled(client, keep=lambda lab: lab not in dead, proven=proven)
        finally:
            client.close()
    ended = [_end_recorded(folder) for folder in found["folders"]]
    if any(ended):
        found["session_hosts"] = [p for e in ended for p in e]
    for ns in found["namespaces"]:
        _remove_namespace(ns)  # ends the processes inside first (a server of a killed run)
    with IPRoute() as ipr:
        for name in found["links"]:
            idx = ipr.link_lookup(ifname=name)
            if idx:
                ipr.link("del", index=idx[0])
    for user in found["users"]:
        remove_run_user(user)
    # the records last: a clean cut short leaves them, and the next one finishes the job
    for folder in found["folders"]:
        shutil.rmtree(folder, ignore_errors=True)
    return found


def _end_recorded(folder: str) -> list[str]:
    """Continue and kill the processes a dead lab wrote down (``owner.record_process``: a
    session host, perhaps stopped) that still run: the same pid and start time."""
    import signal

    ended = []
    for who, what in owner.recorded_processes(folder):
        if not who.alive():
            continue
        for sig in (signal.SIGCONT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(who.pid, sig)
        ended.append(f"{who.pid} ({what})")
    return ended


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
