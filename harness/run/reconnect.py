"""The faulted clients' reconnect (``syn-blackhole``): close the session, connect again, time it.

The attempt is a plain TCP connect() from the client's network, as a pool's reconnect starts:
its socket carries the scenario's ``syn_retries`` (TCP_SYNCNT) when given, else the client
host's own ``net.ipv4.tcp_syn_retries``; a ``connect_timeout`` is the client's own timer on top.
What ends it (the kernel's ETIMEDOUT, the timer, a connection) is the session's
``reconnect_outcome``; how long it took from its start, its ``reconnect_s``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import socket
import time
from collections.abc import Sequence
from typing import Any

from harness.errors import LabError
from harness.faults.syn_blackhole import ClientSyn, SynBlackhole
from harness.lab.netns import LoopInNamespace
from harness.targets.base import Session

SYSCTL = "/proc/sys/net/ipv4/"


def client_syn(lab: Any) -> ClientSyn:
    """The client host's SYN sysctls (its network's own; the linear timeouts only where the
    kernel has them, Linux 6.17+)."""
    def read(name: str) -> int | None:
        proc = lab.run_in("cli", ["sh", "-c", f"cat {SYSCTL}{name} 2>/dev/null || true"],
                          step=f"reading net.ipv4.{name} in the client's network")
        text = proc.stdout.strip()
        return int(text) if text.isdigit() else None
    retries = read("tcp_syn_retries")
    if retries is None:
        raise LabError("reading the client's SYN settings",
                       "no net.ipv4.tcp_syn_retries in the client's network")
    return ClientSyn(syn_retries=retries, linear_timeouts=read("tcp_syn_linear_timeouts") or 0)


async def attempt(addr: str, port: int, syn_retries: int | None,
                  connect_timeout_s: float | None) -> tuple[float, str, str]:
    """One connect(): (seconds it took, outcome, detail). Runs on the client's loop, so the
    socket is in the client's network."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    if syn_retries is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, syn_retries)
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    try:
        async with asyncio.timeout(connect_timeout_s):
            await loop.sock_connect(sock, (addr, port))
        return time.monotonic() - start, "connected", ""
    except TimeoutError as exc:
        took = time.monotonic() - start
        if exc.errno == errno.ETIMEDOUT:
            return took, "timed-out", "the kernel gave up on its SYNs (ETIMEDOUT)"
        return took, "timed-out", "the client's connect timeout"
    except OSError as exc:
        return time.monotonic() - start, "failed", f"{exc.__class__.__name__}: {exc.strerror or exc}"
    finally:
        sock.close()


class Reconnects:
    """The faulted sessions' clients, closing and reconnecting on the client's loop."""

    def __init__(self, client: LoopInNamespace, target: Any, fault: SynBlackhole) -> None:
        self.client, self.target, self.fault = client, target, fault
        self._future: concurrent.futures.Future[None] | None = None
        self.started: dict[int, float] = {}     # session id -> seconds from the fault
        self.ended: dict[int, tuple[float, float, str, str]] = {}
        self._t0 = 0.0

    def start(self, sessions: Sequence[Session], t0: float) -> None:
        """Close each session and connect again, all at once (returns at once)."""
        self._t0 = t0

        async def one(s: Session) -> None:
            await self.target.close_session(s)
            self.started[s.id] = started = time.time() - t0
            took, how, detail = await attempt(s.flow.server_addr, s.flow.server_port,
                                              self.fault.syn_retries, self.fault.connect_timeout_s)
            self.ended[s.id] = (started, took, how, detail)

        async def every() -> None:
            await asyncio.gather(*(one(s) for s in sessions))
        self._future = asyncio.run_coroutine_threadsafe(every(), self.client.loop)

    def results(self, until: float) -> dict[int, tuple[float, float, str, str]]:
        """Each session's (started, took, outcome, detail), waiting until ``until`` (a
        time.time()); an attempt still going then is cut off as ``hanging``."""
        assert self._future is not None
        try:
            self._future.result(timeout=max(0.0, until - time.time()))
        except concurrent.futures.TimeoutError:
            self._future.cancel()
        out = dict(self.ended)
        now = time.time() - self._t0
        for sid, started in self.started.items():
            out.setdefault(sid, (started, now - started, "hanging",
                                 "still connecting when observation stopped"))
        return out
