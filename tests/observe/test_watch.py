"""The observer's column-by-column comparison against the session-by-session one it
replaced (kept here as the reference): random sequences of socket tables, the same events
in the same order, for every session. Pure logic: the tables come from a fake reader."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from harness.core.timeline import Event
from harness.observe.sockdiag import STATE_CODES, Columns, Key, SockInfo, address_int
from harness.observe.watch import Observer, Watched

PORT = 5432
T0 = 1_000_000.0
ESTABLISHED, CLOSE_WAIT, FIN_WAIT1, TIME_WAIT = (STATE_CODES[s] for s in (
    "ESTABLISHED", "CLOSE_WAIT", "FIN_WAIT1", "TIME_WAIT"))


class FakeTable:
    """A TableReader that serves prepared rows."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, ...]] = []

    def columns(self, local_port: int) -> Columns:
        assert local_port == PORT
        return Columns.of(self.rows)

    def dump(self, local_port: int) -> dict[Key, SockInfo]:
        return self.columns(local_port).table()

    def close(self) -> None:
        pass


@dataclass
class Reference:
    """The observer before numpy: each session compared with its last SockInfo."""

    sessions: list[Watched]
    t0: float
    last: dict[int, SockInfo | None] = field(default_factory=dict)
    log: list[tuple[int, float, str, str]] = field(default_factory=list)

    def start(self, before: dict[Key, SockInfo]) -> None:
        for s in self.sessions:
            self.last[s.id] = before.get(s.key)

    def event(self, s: Watched, at: float, what: str, detail: str = "") -> None:
        s.events.append(Event(t=round(at - self.t0, 4), what=what, detail=detail))
        self.log.append((s.id, at - self.t0, what, detail))

    def sample(self, table: dict[Key, SockInfo], now: float) -> None:
        for s in self.sessions:
            if s.socket_gone_at is not None:
                continue
            info = table.get(s.key)
            prev = self.last[s.id]
            if info is None:
                s.socket_gone_at = now
                self.event(s, now, "socket-gone", prev.state if prev else "")
                continue
            if info.inode == 0 or info.state == "TIME_WAIT":
                s.socket_gone_at = now
                self.event(s, now, "socket-released", info.state)
                self.last[s.id] = info
                continue
            if prev is not None:
                if info.state != prev.state:
                    self.event(s, now, "state", info.state)
                if info.probes > prev.probes:
                    self.event(s, now, "probe", str(info.probes))
                if info.retransmits > prev.retransmits:
                    self.event(s, now, "retransmit", str(info.retransmits))
                if info.timer == "persist" and (prev.timer != "persist"
                                                or (prev.backoff and not info.backoff)):
                    again = " again (the window had opened)" if prev.timer == "persist" else ""
                    self.event(s, now, "zero-window",
                               f"persist timer armed{again}, rto {info.rto_s * 1e3:g} ms")
                if info.timer == "persist" and info.backoff and not (prev.timer == "persist" and prev.backoff):
                    self.event(s, now, "zero-window-probe", f"backoff {info.backoff}")
                if info.unacked and not prev.unacked and not info.retransmits:
                    self.event(s, now - info.last_data_sent_s, "data-sent",
                               f"{info.unacked} segments")
            self.last[s.id] = info


def row(key: Key, state: int = ESTABLISHED, inode: int = 1, retransmits: int = 0,
        probes: int = 0, unacked: int = 0, sent_ms: int = 0) -> tuple[int, ...]:
    local, lport, remote, rport = key
    return (state, 2, lport, rport, address_int(local), address_int(remote), inode, retransmits, probes, 0,
            200_000, unacked, sent_ms, 5, 5)


def step(state: dict[Key, tuple[int, ...] | None], rng: random.Random) -> None:
    """Move some sockets on the way a server's table does (and some not at all)."""
    for key, cur in state.items():
        if cur is None:
            continue
        roll = rng.random()
        s, tm, sp, dp, src, dst, inode, re, pr, bo, rto, un, sent, dr, ar = cur
        if roll < 0.05:
            state[key] = None                                           # gone
        elif roll < 0.08:
            state[key] = (TIME_WAIT, 3, sp, dp, src, dst, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        elif roll < 0.10:
            state[key] = cur[:6] + (0,) + cur[7:]                       # orphaned
        elif roll < 0.20:
            state[key] = (rng.choice([CLOSE_WAIT, FIN_WAIT1, ESTABLISHED]),) + cur[1:]
        elif roll < 0.35:
            state[key] = cur[:8] + (pr + 1,) + cur[9:]                  # a keepalive probe
        elif roll < 0.45:
            state[key] = cur[:7] + (re + 1,) + cur[8:]                  # a retransmission
        elif roll < 0.60:
            state[key] = cur[:11] + (0 if un else rng.randint(1, 9), rng.randint(0, 500)) + cur[13:]
        elif roll < 0.65:
            state[key] = cur[:7] + (0,) + cur[8:]                       # acknowledged again
        elif roll < 0.72:                                               # the window closes (again)
            state[key] = cur[:1] + (4,) + cur[2:9] + (rng.choice([0, 1, 2]),) + cur[10:]
        elif roll < 0.75:
            state[key] = cur[:1] + (2,) + cur[2:]                       # and opens


@pytest.mark.parametrize("seed", range(12))
def test_the_same_events_as_the_session_by_session_comparison(seed: int) -> None:
    rng = random.Random(seed)
    locals_ = ["10.77.1.2"] if seed % 3 else ["10.77.1.2", "10.77.1.3", "172.17.0.4"]
    keys = list({(rng.choice(locals_), PORT, f"10.77.0.{rng.randint(2, 4)}",
                  rng.randint(1024, 65535)) for _ in range(120)})
    watched = keys[:100]                       # the rest: sockets nobody watches
    state: dict[Key, tuple[int, ...] | None] = {k: row(k) for k in keys}
    for k in rng.sample(watched, 10):
        state[k] = None                        # not there when the fault starts
    for k in rng.sample(watched, 4):
        state[k] = row(k, state=TIME_WAIT, inode=0)     # closed before it
    order = list(keys)
    table = FakeTable()

    def rows() -> list[tuple[int, ...]]:
        """The table in dump order, which changes only now and then (the observer reuses
        where each session was while it does not)."""
        if rng.random() < 0.3:
            rng.shuffle(order)
        return [r for r in (state[k] for k in order) if r is not None]

    table.rows = rows()
    ours = [Watched(i, k, None) for i, k in enumerate(watched)]
    theirs = [Watched(i, k, None) for i, k in enumerate(watched)]
    observer = Observer(table, PORT, ours)
    log: list[tuple[int, float, str, str]] = []
    observer.on_event = lambda *e: log.append(e)
    reference = Reference(theirs, T0)
    before = table.dump(PORT)
    observer.start(T0, before)
    reference.start(before)
    for i in range(40):
        if i % 4:
            step(state, rng)                   # and every fourth sample, nothing moves
        table.rows = rows()
        now = T0 + 0.05 * (i + 1)
        observer.compare(table.columns(PORT).rows, now)
        reference.sample(table.dump(PORT), now)
    assert log == reference.log
    assert [s.events for s in ours] == [s.events for s in theirs]
    assert [s.socket_gone_at for s in ours] == [s.socket_gone_at for s in theirs]
    kinds = {e[2] for e in log}
    assert kinds == {"socket-gone", "socket-released", "state", "probe", "retransmit",
                     "data-sent", "zero-window", "zero-window-probe"}, kinds


def test_sample_reads_the_table_and_counts_its_cost() -> None:
    key = ("10.77.1.2", PORT, "10.77.0.2", 40000)
    table = FakeTable()
    table.rows = [row(key)]
    observer = Observer(table, PORT, [Watched(0, key, None)])
    observer.start(T0, table.dump(PORT))
    table.rows = [row(key, probes=1)]
    observer.sample()
    table.rows = []
    observer.sample()
    observer.sample()
    (s,) = observer.sessions
    assert [e.what for e in s.events] == ["probe", "socket-gone"]
    assert s.events[1].detail == "ESTABLISHED" and s.socket_gone_at is not None
    assert observer.samples == 3 and observer.sample_cost_s > 0


def test_an_empty_or_all_gone_table_and_no_sessions() -> None:
    table = FakeTable()
    Observer(table, PORT, []).sample()          # nothing to watch: nothing to do
    key = ("10.77.1.2", PORT, "10.77.0.2", 40000)
    observer = Observer(table, PORT, [Watched(0, key, None)])
    observer.start(T0, {})
    observer.sample()
    assert [(e.what, e.detail) for e in observer.sessions[0].events] == [("socket-gone", "")]
