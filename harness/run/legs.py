"""A tier's upstream legs, followed beside its client legs (pgbouncer, haproxy).

Each session of a tier has a client leg (the tier's socket towards the client: the session
as every runner watches it) and may have an upstream leg (the tier's connection to its
backend). The upstream legs are found once from the tier itself (``Tier.upstreams``), then
watched on the backend's side by a second socket-table observer on the backend's port (its
socket, its process) and through the tier's own view (``Tier.pool_states``: linked, pooled,
gone), sampled with the client legs.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from harness.core.assess import LegFacts
from harness.core.timeline import UPSTREAM, Event
from harness.observe.sockdiag import Key, TableReader
from harness.observe.watch import Observer, Watched
from harness.targets.base import Upstream

POOL_EVERY_S = 0.25
"""How often the tier's own view is asked (an admin-console query or a runtime-API call)."""

SETTLE_S = 1.0
"""How long after a client leg goes its upstream leg is watched by default for what the tier
does with it (a tier closing the upstream with the client does so at once)."""


def _addr(pair: tuple[str, int]) -> str:
    return f"{pair[0]}:{pair[1]}"


class UpstreamWatch:
    """The upstream legs of a tier's sessions, as the harness follows them."""

    def __init__(self, lab: Any, target: Any, table: TableReader, keys: Mapping[int, Key]) -> None:
        self.lab, self.target = lab, target
        found: dict[tuple[str, int], Upstream] = target.upstreams(lab, [(k[2], k[3]) for k in keys.values()])
        self.legs: dict[int, Upstream] = {sid: found[(k[2], k[3])] for sid, k in keys.items()
                                          if (k[2], k[3]) in found}
        self.watched = {sid: Watched(sid, up.key, up.pid) for sid, up in self.legs.items()}
        self.observer = Observer(table, target.upstream_port, list(self.watched.values()))
        self.settle_s = float(getattr(target, "upstream_settle_s", lambda: SETTLE_S)())
        self._tier_events: dict[int, list[Event]] = {sid: [] for sid in self.legs}
        self._states: dict[int, str | None] = {}
        self._next_pool = 0.0
        self.t0 = time.time()

    def start(self, t0: float) -> None:
        """Begin counting from the fault at ``t0``, from the legs as they are now."""
        self.t0 = t0
        self.observer.start(t0, self.observer.snapshot())
        self._states = self._pool_now()
        self._next_pool = time.monotonic() + POOL_EVERY_S

    def _pool_now(self) -> dict[int, str | None]:
        states: Mapping[tuple[str, int], str] = self.target.pool_states(self.lab)
        return {sid: states.get((up.key[2], up.key[3])) for sid, up in self.legs.items()}

    def sample(self) -> None:
        """One look at the backend's sockets and processes; the tier's own view every
        ``POOL_EVERY_S``."""
        self.observer.sample()
        self.observer.wait(0)
        if time.monotonic() < self._next_pool:
            return
        self._next_pool = time.monotonic() + POOL_EVERY_S
        now = time.time()
        for sid, state in self._pool_now().items():
            if state == self._states.get(sid):
                continue
            self._states[sid] = state
            what = "tier-dropped" if state is None else state
            if what in ("linked", "pooled", "tier-dropped"):
                self._tier_events[sid].append(Event(round(now - self.t0, 4), UPSTREAM + what))

    def closed(self, sid: int) -> bool:
        w = self.watched.get(sid)
        return w is None or w.released()

    def settled(self, released_at: Mapping[int, float | None], now: float) -> bool:
        """Whether every leg whose client leg went (at ``released_at[sid]``, time.time()) has
        closed or has been watched ``settle_s`` since: what the tier does next is seen."""
        for sid, at in released_at.items():
            if sid in self.watched and not self.closed(sid) and (at is None or now < at + self.settle_s):
                return False
        return True

    def facts(self, sid: int) -> LegFacts | None:
        """The session's upstream leg as assessment takes it (None: it had none)."""
        up, w = self.legs.get(sid), self.watched.get(sid)
        if up is None or w is None:
            return None
        events = tuple(Event(e.t, UPSTREAM + e.what, e.detail) for e in w.events)
        return LegFacts(server=_addr((up.key[0], up.key[1])), peer=_addr((up.key[2], up.key[3])),
                        pid=up.pid, events=events + tuple(self._tier_events[sid]))

    def close(self) -> None:
        self.observer.close()


def watch_upstreams(lab: Any, target: Any, table: TableReader,
                    keys: Mapping[int, Key]) -> UpstreamWatch | None:
    """The upstream watch of a tier's sessions (closed with the lab), None for other targets."""
    from harness.targets.base import is_tier

    if not is_tier(target):
        return None
    watch = UpstreamWatch(lab, target, table, keys)
    lab.on_close("upstream observer", watch.close)
    return watch


def released_times(watched: Iterable[Watched]) -> dict[int, float | None]:
    """When each session's client leg went (time.time()), None while it is held."""
    out: dict[int, float | None] = {}
    for w in watched:
        if not w.released():
            out[w.id] = None
        else:
            times = [t for t in (w.socket_gone_at, w.process_gone_at) if t is not None]
            out[w.id] = max(times) if times else None
    return out
