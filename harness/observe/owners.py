"""The processes of the server's network: which one holds a socket (for services whose
per-session process the client cannot learn: sshd forks one per connection), and what each
uses (the resource sampler of load runs).

sock_diag gives each socket's inode; ``/proc/<pid>/fd`` links of the processes in the server
namespace name the inodes they hold.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from harness.lab.netns import pids_in
from harness.observe.sockdiag import Key, SockInfo


def socket_holders(namespace: str) -> dict[int, list[int]]:
    """inode -> pids (ascending) of the processes in ``namespace`` holding that socket."""
    holders: dict[int, list[int]] = {}
    for pid in sorted(pids_in(namespace)):
        folder = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(folder)
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"{folder}/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                holders.setdefault(int(link[8:-1]), []).append(pid)
    return holders


def session_pids(namespace: str, table: dict[Key, SockInfo], keys: Iterable[Key]) -> dict[Key, int]:
    """For each server-side socket, the first (oldest: the per-connection parent) process
    that holds it; sockets no process holds are left out."""
    return pids_holding(socket_holders(namespace), table, keys)


def pids_holding(holders: dict[int, list[int]], table: dict[Key, SockInfo],
                 keys: Iterable[Key]) -> dict[Key, int]:
    """``session_pids`` from a ``socket_holders`` answer (the agent's, without root)."""
    found = {}
    for key in keys:
        info = table.get(key)
        pids = holders.get(info.inode, []) if info is not None else []
        if pids:
            found[key] = pids[0]
    return found


def usage_of(pid: int) -> tuple[int, int, int] | None:
    """(open descriptors, VmRSS kB, RssAnon kB) of one process; None if it is gone."""
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        rss = anon = 0
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("RssAnon:"):
                    anon = int(line.split()[1])
    except (OSError, ValueError):
        return None
    return fds, rss, anon


def process_usage(namespace: str) -> list[tuple[int, int, int]]:
    """``usage_of`` each process in ``namespace`` (those that are gone left out)."""
    return [u for u in (usage_of(pid) for pid in pids_in(namespace)) if u is not None]
