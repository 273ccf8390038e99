"""Turns socket-table samples and process exits into each session's timestamped events.

One socket-table dump per sample serves every session (no per-session system calls); process
exits arrive through pidfds while waiting between samples, so their times are exact.

A sample is compared with the previous one column by column (numpy over the dump's
``Columns``), not session by session: at 10,000 sessions the comparison costs under a
millisecond, and Python runs only for the sessions that may have an event.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from harness.core.timeline import Event
from harness.observe.procs import ExitWatcher
from harness.observe.sockdiag import (
    ROW,
    STATE_CODES,
    STATE_NAMES,
    TIME_WAIT,
    Key,
    SockInfo,
    TableReader,
    address_int,
)
from harness.observe.sockdiag.wire import TIMER_NAMES

MAX_LOCAL_ADDRESSES = 1 << 16       # a session's code has 16 bits for the server's address
UNSEEN = np.uint64(1 << 63)          # a signature no row has
NAMES = ROW.names or ()
STATE, PROBES, RETRANSMITS = NAMES.index("state"), NAMES.index("probes"), NAMES.index("retransmits")
UNACKED, LAST_DATA_SENT = NAMES.index("unacked"), NAMES.index("last_data_sent")
TIMER, RTO, BACKOFF = NAMES.index("timer"), NAMES.index("rto"), NAMES.index("backoff")
PERSIST = TIMER_NAMES.index("persist")   # the zero-window probe timer


class Last(NamedTuple):
    """What the events compare of a session's previous row."""

    state: int
    probes: int
    retransmits: int
    unacked: int
    persist: bool = False      # the zero-window probe timer is armed
    backoff: int = 0


@dataclass
class Watched:
    """One session as the observer follows it."""

    id: int
    key: Key                      # the server's view: (server addr, port, client addr, port)
    pid: int | None               # the server-side process of the session, if it has one
    events: list[Event] = field(default_factory=list)
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
        self._by_id = {s.id: s for s in self.sessions}
        # told of every event as it is recorded: (session id, seconds after the fault, what, detail)
        self.on_event: Callable[[int, float, str, str], None] | None = None
        for s in self.sessions:
            if s.pid is not None:
                self._exits.watch(s.pid)
        # Each session's socket as one integer, as ``_row_codes`` makes it of a dump's rows.
        self._local_ids: dict[int, int] = {}
        self._codes = self._key_codes([s.key for s in self.sessions])
        self._by_code = np.argsort(self._codes, kind="stable")
        self._sorted_codes = self._codes[self._by_code]
        self._seen_codes: np.ndarray | None = None       # the last dump's codes, and where
        self._where: tuple[np.ndarray, np.ndarray] = (   # each session was in it
            np.zeros(len(self.sessions), dtype=bool), np.zeros(len(self.sessions), dtype=np.intp))
        # each session's previous row, as far as events go: the fields that can make an event
        # in one integer (``compare``; UNSEEN: compare in Python next time) and those the
        # events compare (None: not seen yet)
        self._last_sig = np.full(len(self.sessions), UNSEEN, dtype=np.uint64)
        self._last: list[Last | None] = [None] * len(self.sessions)
        self._gone = np.array([s.socket_gone_at is not None for s in self.sessions], dtype=bool)

    def _local_id(self, raw: int) -> int:
        found = self._local_ids.get(raw)
        if found is None:
            if len(self._local_ids) >= MAX_LOCAL_ADDRESSES:
                raise ValueError(f"more than {MAX_LOCAL_ADDRESSES} server addresses")
            found = self._local_ids[raw] = len(self._local_ids)
        return found

    def _key_codes(self, keys: Sequence[Key]) -> np.ndarray:
        """``_row_codes`` of sockets given by their keys."""
        rows = np.array([(address_int(local), address_int(remote), rport)
                         for local, _, remote, rport in keys],
                        dtype=[("src", "u4"), ("dst", "u4"), ("dport", "u2")])
        return self._row_codes(rows)

    def _row_codes(self, rows: np.ndarray) -> np.ndarray:
        """Each row's socket as one integer: the server's address (as a small number), the
        client's address and port; the server's port is the one the dump is filtered on."""
        src = rows["src"]
        if len(src) and bool((src == src[0]).all()):        # one server address: the rule
            local = np.full(len(src), self._local_id(int(src[0])), dtype=np.uint64)
        else:
            distinct, which = np.unique(src, return_inverse=True)
            ids = np.array([self._local_id(int(raw)) for raw in distinct], dtype=np.uint64)
            local = ids[which]
        codes: np.ndarray = ((local << np.uint64(48)) | (rows["dst"].astype(np.uint64) << np.uint64(16))
                             | rows["dport"].astype(np.uint64))
        return codes

    def snapshot(self) -> dict[Key, SockInfo]:
        """One dump of the table, without turning it into events."""
        return self.table.dump(self.port)

    def start(self, t0: float, before: dict[Key, SockInfo]) -> None:
        """Begin counting from the fault at ``t0`` (time.time()); ``before`` is the last
        sample taken before the fault."""
        self.t0 = t0
        infos = dict(zip(self._key_codes(list(before)).tolist(), before.values(), strict=True))
        for i, code in enumerate(self._codes.tolist()):
            info = infos.get(code)
            self._last[i] = None if info is None else Last(
                STATE_CODES.get(info.state, 0), info.probes, info.retransmits, info.unacked,
                info.timer == "persist", info.backoff)
        self._last_sig[:] = UNSEEN

    def _event(self, s: Watched, at: float, what: str, detail: str = "") -> None:
        s.events.append(Event(t=round(at - self.t0, 4), what=what, detail=detail))
        if self.on_event is not None:
            self.on_event(s.id, at - self.t0, what, detail)

    def record(self, session_id: int, at: float, what: str, detail: str = "") -> None:
        """An event seen elsewhere (the middlebox's conntrack), at ``at`` (time.time())."""
        self._event(self._by_id[session_id], at, what, detail)

    def sample(self) -> None:
        """One dump: compare each session with its previous sample."""
        started = time.perf_counter()
        now = time.time()
        rows = self.table.columns(self.port).rows
        self.compare(rows, now)
        self.sample_cost_s += time.perf_counter() - started
        self.samples += 1

    def compare(self, rows: np.ndarray, now: float) -> None:
        """Turn the differences between ``rows`` (a dump taken at ``now``) and each
        session's previous row into events.

        A session's socket missing from the dump is ``socket-gone``; present with no
        descriptor (inode 0: an orphan the kernel keeps retransmitting a FIN for, for up to
        ~100 s) or in TIME_WAIT, the service closed it: ``socket-released``. Either ends its
        watch. Otherwise, against the previous row: ``state``, ``probe``, ``retransmit``,
        ``zero-window`` when the persist timer is armed (the client's window closed with data
        waiting), ``zero-window-probe`` at its first probe (its backoff leaves 0),
        and ``data-sent`` when data went out unanswered, at the time the kernel
        says it left.

        numpy finds the sessions that may have one (gone, released, or a ``signature`` other
        than last time's); Python looks only at those."""
        active = ~self._gone
        if not active.any():
            return
        found, at = self._locate(rows)
        if len(rows):
            row_sig = ((rows["state"].astype(np.uint64))
                       | ((rows["inode"] == 0).astype(np.uint64) << np.uint64(8))
                       | (rows["probes"].astype(np.uint64) << np.uint64(16))
                       | (rows["retransmits"].astype(np.uint64) << np.uint64(24))
                       | ((rows["unacked"] != 0).astype(np.uint64) << np.uint64(32))
                       | ((rows["timer"] == PERSIST).astype(np.uint64) << np.uint64(33))
                       | ((rows["backoff"] == 0).astype(np.uint64) << np.uint64(34)))
            closed = (rows["inode"] == 0) | (rows["state"] == TIME_WAIT)
            sig, released = row_sig[at], closed[at]
        else:
            sig, released = self._last_sig, found
        # A released row always differs from the last signature: a live one had a descriptor
        # and was not in TIME_WAIT, and after start() every signature is UNSEEN.
        todo = active & (~found | (sig != self._last_sig))
        for i in np.flatnonzero(todo).tolist():
            s, prev = self.sessions[i], self._last[i]
            if not found[i]:
                self._gone[i] = True
                s.socket_gone_at = now
                self._event(s, now, "socket-gone", STATE_NAMES[prev.state] if prev else "")
                continue
            row = rows[at[i]].item()            # ROW's fields as Python ints
            info = Last(row[STATE], row[PROBES], row[RETRANSMITS], row[UNACKED], row[TIMER] == PERSIST,
                        row[BACKOFF])
            self._last[i], self._last_sig[i] = info, sig[i]
            if released[i]:
                self._gone[i] = True
                s.socket_gone_at = now
                self._event(s, now, "socket-released", STATE_NAMES[info.state])
                continue
            if prev is None:
                continue
            if info.state != prev.state:
                self._event(s, now, "state", STATE_NAMES[info.state])
            if info.probes > prev.probes:
                self._event(s, now, "probe", str(info.probes))
            if info.retransmits > prev.retransmits:
                self._event(s, now, "retransmit", str(info.retransmits))
            if info.persist and (not prev.persist or (prev.backoff and not info.backoff)):
                # the window closed with data waiting: the persist timer's first run is one
                # RTO after it was armed (tcp_probe0_base). Armed afresh (its backoff back to
                # 0), the window had opened again in between
                again = " again (the window had opened)" if prev.persist else ""
                self._event(s, now, "zero-window", f"persist timer armed{again}, rto {row[RTO] / 1e3:g} ms")
            if info.persist and info.backoff and not (prev.persist and prev.backoff):
                # the persist timer's first run that probed (its backoff 0 -> 1): the run that
                # stamps TCP_USER_TIMEOUT's clock (one whose probe found the window open a
                # little sent data instead, and did not)
                self._event(s, now, "zero-window-probe", f"backoff {info.backoff}")
            if info.unacked and not prev.unacked and not info.retransmits:
                # the kernel says how long ago the data left; more exact than this sample
                self._event(s, now - row[LAST_DATA_SENT] / 1e3, "data-sent",
                            f"{info.unacked} segments")

    def _locate(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each session: whether ``rows`` hold its socket, and at which row (the last
        one, as a dict of the dump would keep it). Reused while the dump's sockets and
        their order stay the same, which is most samples."""
        if not len(rows):
            self._seen_codes = None
            return (np.zeros(len(self.sessions), dtype=bool),
                    np.zeros(len(self.sessions), dtype=np.intp))
        codes = self._row_codes(rows)
        if self._seen_codes is not None and np.array_equal(codes, self._seen_codes):
            return self._where
        order = np.argsort(codes, kind="stable")
        ordered = codes[order]
        pos = np.searchsorted(ordered, self._sorted_codes, side="right") - 1
        hit = pos >= 0
        pos = np.where(hit, pos, 0)
        found = np.empty(len(self.sessions), dtype=bool)
        at = np.empty(len(self.sessions), dtype=np.intp)
        found[self._by_code] = hit & (ordered[pos] == self._sorted_codes)
        at[self._by_code] = order[pos]
        self._seen_codes, self._where = codes, (found, at)
        return found, at

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
