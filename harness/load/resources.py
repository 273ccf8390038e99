"""The server's resources over a load run: sessions, processes, descriptors, memory.

A thread samples every ``interval_s`` from before the users arrive until the end, through
the lab's reach (directly as root, the observer's agent without root): one socket-table dump
of the server's network (its own sock_diag socket, so the observer's is never shared between
threads) for the sessions, and ``/proc`` for the processes of the server's network (their
count: PostgreSQL's backends; their open descriptors; their memory).
Memory is the sum of each process's VmRSS, so pages shared between processes (PostgreSQL's
shared buffers) count once per process that touched them; ``anon_mib`` (RssAnon) is the
private part and the better measure of what each session costs.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import TYPE_CHECKING, Any

from harness.errors import LabError

if TYPE_CHECKING:
    from harness.lab.reach import Reach
    from harness.observe.sockdiag import TableReader


class ResourceSampler:
    """Samples the server's network on a thread (through the lab's reach); ``series`` holds
    one dict per sample."""

    def __init__(self, reach: Reach, port: int, peer_addr: str, interval_s: float = 1.0) -> None:
        self.reach = reach
        self.port = port
        self.peer_addr = peer_addr          # sessions are sockets to this client address
        self.interval_s = interval_s
        self.series: list[dict[str, Any]] = []
        self.error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="resource-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def sample(self, table: TableReader) -> dict[str, Any]:
        at = time.time()
        sockets = table.columns(self.port)
        established = sockets.established_to(self.peer_addr)
        procs = self.reach.server_usage()
        return {"at": at, "established": established, "sockets": len(sockets),
                "processes": len(procs), "fds": sum(p[0] for p in procs),
                "rss_mib": round(sum(p[1] for p in procs) / 1024, 1),
                "anon_mib": round(sum(p[2] for p in procs) / 1024, 1)}

    def _run(self) -> None:
        try:
            with contextlib.closing(self.reach.socket_table()) as table:
                while True:
                    started = time.monotonic()
                    self.series.append(self.sample(table))
                    cost = time.monotonic() - started
                    # a slow dump (thousands of sockets) must not become a busy loop
                    if self._stop.wait(max(self.interval_s, 4 * cost)):
                        return
        except LabError as exc:
            # the lab going away under the sampler ends the series, not the run
            self.error = str(exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def relative_to(self, t0: float) -> list[dict[str, Any]]:
        """The series with ``t`` in seconds from ``t0`` (the fault) instead of ``at``."""
        return [{"t": round(s["at"] - t0, 2), **{k: v for k, v in s.items() if k != "at"}}
                for s in self.series]
