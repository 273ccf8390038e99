"""What random packet loss does to a dead-peer reclaim: a distribution or a bound, never a point.

With a share ``p`` of the faulted flow's packets dropped in each direction, an exchange (a
keepalive probe and its ACK, a segment and its ACK) fails when either packet is lost:
``1 - (1 - p)**2``. The server's timers are those of a silent peer, except that any exchange
that gets through starts them again:

- keepalive (``tcp_keepalive_timer``): an answered probe resets ``icsk_probes_out`` and the
  receive time (``tcp_ack``), so the socket is killed only after ``count`` *consecutive* lost
  probes, or (TCP_USER_TIMEOUT set) at a firing where the silence has lasted the user timeout
  and at least one probe is out. That is an exact distribution, computed here firing by firing;
- data in flight: the kill at the silent-peer time needs every transmission lost; any one
  that gets through makes the socket idle again (later reclaim by keepalive), so the chance of
  the earliest kill is a lower bound on the chance of a reclaim by then.

Either way the earliest possible reclaim is the silent peer's (every packet lost), which is
what the verdict checks first: no session may be reclaimed before it. Pure arithmetic.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Literal

from harness.core.prediction import Effective, format_seconds

BoundKind = Literal["distribution", "lower-bound", "earliest-only"]
"""How much the prediction knows: the exact chance of a reclaim by each time
(``distribution``), a chance it is at least (``lower-bound``), or only the earliest time."""

HORIZON_S = 600.0
"""How far ahead the keepalive distribution is computed (the rest of the mass is 'later')."""

_ROUND = 6   # times to the microsecond, so that equal firings merge


def exchange_loss(p: float) -> float:
    """The chance an exchange (a packet and its answer) fails when each direction loses ``p``."""
    if not 0 <= p <= 1:
        raise ValueError(f"loss must be between 0 and 1, got {p}")
    return 1 - (1 - p) ** 2


@dataclass(frozen=True)
class LossBound:
    """What the prediction under loss says: the earliest possible reclaim and, as far as it is
    known, the chance of a reclaim by each time (``atoms``: (time, probability) pairs in time
    order, from the fault)."""

    kind: BoundKind
    loss: float                              # per direction
    earliest_s: float | None                 # None: never, whatever is lost
    atoms: tuple[tuple[float, float], ...] = ()
    horizon_s: float = HORIZON_S

    def p_by(self, t: float) -> float | None:
        """The chance (or, ``lower-bound``, its floor) of a reclaim by ``t``; None when unknown."""
        if self.kind == "earliest-only":
            return None
        return min(1.0, sum(p for at, p in self.atoms if at <= t + 1e-9))

    def describe(self, deadline_s: float | None = None) -> str:
        """One line for formulas and reports."""
        if self.earliest_s is None:
            return "never, whatever is lost"
        head = (f"a bound, not a point: no reclaim before {format_seconds(self.earliest_s)} s"
                f" (the fastest path the loss allows); {self.loss:.0%} loss each way")
        if deadline_s is None or self.kind == "earliest-only":
            return head + ("" if self.kind != "earliest-only" else "; the chance by a time is not modelled")
        p = self.p_by(deadline_s)
        assert p is not None
        word = "P" if self.kind == "distribution" else "P >="
        return head + f"; {word} {p:.3f} of a reclaim by {format_seconds(deadline_s)} s"


def keepalive_distribution(eff: Effective, loss: float, last_activity_s: float,
                           horizon_s: float = HORIZON_S) -> LossBound:
    """When keepalive kills an idle socket whose probes (or their ACKs) are lost at random.

    Follows the kernel's firings: at each one, a socket silent for ``idle`` sends a probe
    unless the kill condition holds (``count`` probes out, or with TCP_USER_TIMEOUT the
    silence at least the user timeout with one probe out); an answered probe (chance
    ``(1 - loss)**2``) resets the count and the silence. The ACK is taken to arrive at once
    (a lab RTT is well under a millisecond)."""
    if not eff.keepalive:
        return LossBound("distribution", loss, None)
    r = exchange_loss(loss)
    ut = eff.user_timeout_s
    # (next firing, last heard, probes out) -> probability; every time rounded alike, and
    # compared with a margin above that rounding, so that a state never comes back as itself
    last = round(last_activity_s, _ROUND)
    start = round(last + eff.idle_s, _ROUND)
    states: dict[tuple[float, float, int], float] = {(start, last, 0): 1.0}
    queue = [(start, last, 0)]
    atoms: dict[float, float] = {}
    limit = last + horizon_s
    margin = 10.0 ** -(_ROUND - 1)
    while queue:
        key = heapq.heappop(queue)
        mass = states.pop(key, 0.0)
        t, heard, out = key
        if mass < 1e-12 or t > limit:
            continue
        killed = (out >= eff.count) if ut <= 0 else (out > 0 and t - heard >= ut - margin)
        if killed:
            atoms[t] = atoms.get(t, 0.0) + mass
            continue
        if t - heard < eff.idle_s - margin:   # heard from recently: wait for the idle time
            _push(states, queue, (round(heard + eff.idle_s, _ROUND), heard, 0), mass)
            continue
        after = round(t + eff.interval_s, _ROUND)
        if r > 0:
            _push(states, queue, (after, heard, out + 1), mass * r)
        if r < 1:
            _push(states, queue, (after, t, 0), mass * (1 - r))
    earliest = min(atoms) if atoms else None
    if r == 0:
        earliest = None
    return LossBound("distribution", loss, earliest,
                     tuple(sorted(atoms.items())), horizon_s)


def _push(states: dict[tuple[float, float, int], float], queue: list[tuple[float, float, int]],
          key: tuple[float, float, int], mass: float) -> None:
    if key not in states:
        heapq.heappush(queue, key)
        states[key] = 0.0
    states[key] += mass


def in_flight_bound(silent_s: float | None, transmissions: int, loss: float,
                    idle_after_s: float | None = None) -> LossBound:
    """Data in flight: the silent-peer kill at ``silent_s`` needs all ``transmissions`` (the
    original and every retransmission before it) to fail; its chance is a floor on the chance
    of a reclaim by then. Data that gets through at once leaves an idle socket that keepalive
    may kill sooner (``idle_after_s``: its silent-peer time counted from the send; with
    TCP_USER_TIMEOUT that can come before the retransmission path's, as measured): the
    earliest possible reclaim is the earlier of the two."""
    times = [t for t in (silent_s, idle_after_s) if t is not None]
    earliest = min(times) if times else None
    if silent_s is None or loss <= 0:
        return LossBound("lower-bound", loss, None if loss <= 0 else earliest)
    p = exchange_loss(loss) ** max(1, transmissions)
    return LossBound("lower-bound", loss, earliest, ((silent_s, p),))


def binomial_range(n: int, p: float, alpha: float = 0.001) -> tuple[int, int]:
    """The counts of ``n`` independent sessions (each reclaimed with chance ``p``) outside
    which a result has a chance under ``alpha`` (split between the two tails)."""
    if n < 0 or not 0 <= p <= 1:
        raise ValueError(f"need n >= 0 and 0 <= p <= 1, got {n}, {p}")
    pmf = [math.comb(n, k) * p ** k * (1 - p) ** (n - k) for k in range(n + 1)]
    lo, below = 0, 0.0
    while lo < n and below + pmf[lo] <= alpha / 2:
        below += pmf[lo]
        lo += 1
    hi, above = n, 0.0
    while hi > 0 and above + pmf[hi] <= alpha / 2:
        above += pmf[hi]
        hi -= 1
    return lo, max(lo, hi)
