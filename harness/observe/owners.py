"""Which process holds a socket: for services whose per-session process the client cannot
learn (sshd forks one per connection), found from the server's side.

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
