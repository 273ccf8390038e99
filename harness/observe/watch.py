"""Turns socket-table samples and process exits into each session's timestamped events.

One socket-table dump per sample serves every session (no per-session system calls); process
exits arrive through pidfds while waiting between samples, so their times are exact.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from harness.core.timeline import Event
from harness.observe.procs import ExitWatcher
from harness.observe.sockdiag import Key, SockInfo, TableReader


@dataclass
class Watched:
    """One session as the observer follows it."""

    id: int
    key: Key                      # the server's view: (server addr, port, client addr, port)
    pid: int | None               # the server-side process of the session, if it has one
    events: list[Event] = field(default_factory=list)
    last: SockInfo | None = None
    socket_gone_at: float | None = None
    process_gone_at: float | None = None

    def released(self) -> bool:
        """The server holds neither the socket nor the session's process any more."""
        return self.socket_gone_at is not None and (
            self.pid is None or self.process_gone_at is not None)


class Observer:
    """Samples the server namespace's socket table and the sessions' processes."""

    def __init__(self, table: TableReader, port: int, sessions: Sequence[Watched]) -> None:
        self.table = table
        self.port = port
        self.sessions = list(sessions)
        self.t0 = time.time()
        self.samples = 0
        self.sample_cost_s = 0.0
        self._exits = ExitWatcher()
        self._by_pid = {s.pid: s for s in self.sessions if s.pid is not None}
        # told of every event as it is recorded: (session id, seconds after the fault, what, detail)
        self.on_event: Callable[[int, float, str, str], None] | None = None
        for s in self.sessions:
            if s.pid is not None:
                self._exits.watch(s.pid)

    def snapshot(self) -> dict[Key, SockInfo]:
        """One dump of the table, without turning it into events."""
        return self.table.dump(self.port)

    def start(self, t0: float, before: dict[Key, SockInfo]) -> None:
        """Begin counting from the fault at ``t0`` (time.time()); ``before`` is the last
        sample taken before the fault."""
        self.t0 = t0
        for s in self.sessions:
            s.last = before.get(s.key)

    def _event(self, s: Watched, at: float, what: str, detail: str = "") -> None:
        s.events.append(Event(t=round(at - self.t0, 4), what=what, detail=detail))
        if self.on_event is not None:
            self.on_event(s.id, at - self.t0, what, detail)

    def sample(self) -> None:
        """One dump: compare each session with its previous sample."""
        started = time.perf_counter()
        now = time.time()
        table = self.table.dump(self.port)
        self.sample_cost_s += time.perf_counter() - started
        self.samples += 1
        for s in self.sessions:
            if s.socket_gone_at is not None:
                continue
            info = table.get(s.key)
            prev = s.last
            if info is None:
                s.socket_gone_at = now
                self._event(s, now, "socket-gone", prev.state if prev else "")
                continue
            if info.inode == 0 or info.state == "TIME_WAIT":
                # No descriptor holds it: the service closed it (an orphan the kernel keeps
                # retransmitting a FIN for, for up to ~100 s, or TIME_WAIT). Given back.
                s.socket_gone_at = now
                self._event(s, now, "socket-released", info.state)
                s.last = info
                continue
            if prev is not None:
                if info.state != prev.state:
                    self._event(s, now, "state", info.state)
                if info.probes > prev.probes:
                    self._event(s, now, "probe", str(info.probes))
                if info.retransmits > prev.retransmits:
                    self._event(s, now, "retransmit", str(info.retransmits))
                if info.unacked and not prev.unacked and not info.retransmits:
                    # the kernel says how long ago the data left; more exact than this sample
                    self._event(s, now - info.last_data_sent_s, "data-sent", f"{info.unacked} segments")
            s.last = info

    def wait(self, timeout_s: float) -> None:
        """Sleep until the next sample, recording process exits the moment they happen."""
        for pid in self._exits.wait(timeout_s):
            s = self._by_pid.get(pid)
            if s is not None and s.process_gone_at is None:
                s.process_gone_at = self._exits.exited[pid]
                self._event(s, s.process_gone_at, "process-exit", str(pid))

    def run(self, *, interval_s: float, until: float, done: Callable[[], bool],
            on_sample: Callable[[], None] | None = None) -> None:
        """Sample every ``interval_s`` until ``done()`` or the wall-clock time ``until``;
        ``on_sample`` is called after each sample (progress views)."""
        next_at = time.time()
        while True:
            self.sample()
            if on_sample is not None:
                on_sample()
            if done() or time.time() >= until:
                return
            next_at += interval_s
            self.wait(max(0.0, min(next_at, until) - time.time()))

    def close(self) -> None:
        self._exits.close()
