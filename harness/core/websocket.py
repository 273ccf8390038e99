"""What a ``websockets`` server does to a connection whose client went silent, in numbers.

Pure arithmetic over the keepalive loop of websockets 17 (``asyncio.connection.Connection.
keepalive`` and ``send_context``) and, where the kernel takes over, over
:mod:`harness.core.prediction`. Nothing here reads the machine or the clock; times are float
seconds counted from the fault (negative = before it).

Two moments matter, and they are far apart: when websockets **lets go** of the connection
(``PingTimeline.released_s``: its handler ends, its count of open connections drops, the
descriptor closes) and when the socket **leaves the kernel's table**
(``PingTimeline.gone_s``, the prediction's ``reclaim_s``, which is what the runner watches).

Measured with websockets 17.4 (Linux 6.18, Python 3.11, HZ 250, the lab's namespaces;
sock_diag samples every 10 ms, the reference server's control socket and log, and a client
that timestamps every ping frame it receives):

- **The schedule is the connection's own.** The loop starts when the opening handshake
  completes and pings at ``open + k × ping_interval`` (k = 1, 2, ...). Traffic does not move
  it: echo traffic every 0.3 s left the pings where they were (1.001, 2.002, 3.004 s after
  the open). Each period runs a little long, 1.0–2.8 ms, mean 1.4–2.0 ms (asyncio's sleep
  wakes up to a millisecond late on epoll, and the next sleep is shortened only by the pong's
  latency): after 30 periods of 1 s the pings were 56 ms behind the nominal schedule.
- **One ping at a time.** After a ping the loop waits up to ``ping_timeout`` for its pong and
  sends nothing else meanwhile, so a timeout longer than the interval delays the next ping;
  it never overlaps. The first ping after the fault is the only one that matters.
- **Giving up.** At ``ping + ping_timeout`` it fails the connection: a close frame 1011
  "keepalive ping timeout" and, on the server side, a FIN right behind it (the socket goes to
  FIN_WAIT1). It then waits ``close_timeout`` for a TCP close the dead client never sends,
  and aborts the transport: websockets has let go. Measured (interval / timeout / close
  timeout, when the connection opened → let go): 2/2/2 opened -1.007 s → 5.004 s; 1/3/1
  opened -1.506 s → 4.497 s; 20/20/10 (the defaults) opened -1.010 s → 48.991 s (ping at
  18.99, close frame at 38.99). Every one within 3–11 ms of the schedule above.
- **The kernel keeps an orphan.** Closing a socket whose ping, close frame and FIN are
  unacknowledged does not remove it: it stays in the table in FIN_WAIT1, owned by no process
  (sock_diag inode 0), retransmitting until ``tcp_orphan_retries`` runs out (0, the default,
  means 8 for a socket that sent recently: the first retransmission timer expiry at or past
  the 102.2 s that ``tcp_model_timeout`` gives 8 retries, counted from the first
  retransmission). Measured: 2/2/2 above left the table at 108.5 s, 107.5 s after its ping.
- **The first retransmission is late.** The ping is a lone segment: Linux first re-sends it as
  a tail loss probe (1.5 RTT + 200 ms, capped at the RTO) and does not count that; the counted
  retransmissions, from which TCP_USER_TIMEOUT and the retry budgets are measured, start one
  RTO after the probe: 0.417–0.42 s after the ping with an RTO of 0.204 s.
- **TCP_USER_TIMEOUT ends it sooner**, held or orphaned: 2/2/2 with 3 s left the table 3.00 s
  after the first retransmission (4.41 s after the fault), reported ``ETIMEDOUT``, before
  close_timeout; 2/2/1 with 3 s let go at 4.0 s and left the table at 4.42 s.
- ``close_timeout`` off (None): after the close frame websockets waits for the client's
  close forever; the socket stays FIN_WAIT1 and held until the kernel gives up the
  retransmissions (tcp_retries2: about 925 s). ``ping_timeout`` off: pings go out and are never
  awaited, so only the kernel ends it, the same way. ``ping_interval`` off: the server sends
  nothing on an idle connection; without TCP keepalive nothing ever notices a silent client.

websockets' defaults (20 s, 20 s, 10 s), from the above rather than waited out in every run:
the first ping after the fault goes out 0–20 s after it depending on where in the period the
fault falls, the close frame 20 s later, the abort 10 s after that: websockets lets go **30–50 s**
after the fault (40 s on average; 49.0 s measured for a connection opened 1 s before it), and
its orphan leaves the table about 100 s after the ping, 70–80 s after that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from harness.core.prediction import (
    KernelDefaults,
    Prediction,
    SocketSettings,
    effective,
    format_seconds,
    predict,
    retransmission_timeout_s,
)

WEBSOCKETS_DEFAULT_PING_INTERVAL_S = 20.0
WEBSOCKETS_DEFAULT_PING_TIMEOUT_S = 20.0
WEBSOCKETS_DEFAULT_CLOSE_TIMEOUT_S = 10.0

PERIOD_LATENESS_S = 0.0017
"""How much longer than ``ping_interval`` one keepalive period runs (measured mean)."""
PERIOD_SPREAD_S = 0.0012
"""How far one period may stray from that mean (measured 1.0–2.8 ms a period)."""
TIMER_LATENESS_S = 0.002
"""How late an asyncio timeout (the pong wait, the close wait) may fire: epoll's 1 ms
rounding plus the loop's own turn."""
ORPHAN_RETRIES = 8
"""``tcp_orphan_retries`` 0 (the default) counts as 8 for a socket that sent recently."""
LONE_SEGMENT_PROBE_S = 0.2
"""A ping is one segment alone in flight: Linux first re-sends it as a tail loss probe,
1.5 RTT + TCP_DELACK_MAX (200 ms) later (capped at the RTO), and does not count that as a
retransmission. The counted ones, from which TCP_USER_TIMEOUT and tcp_retries2 are measured,
start one RTO after the probe: 0.417-0.42 s after the ping in the lab (RTO 0.204 s)."""


@dataclass(frozen=True)
class PingSettings:
    """A websockets server's keepalive, as ``serve()`` takes it; ``None`` = off."""

    interval_s: float | None = WEBSOCKETS_DEFAULT_PING_INTERVAL_S
    timeout_s: float | None = WEBSOCKETS_DEFAULT_PING_TIMEOUT_S
    close_timeout_s: float | None = WEBSOCKETS_DEFAULT_CLOSE_TIMEOUT_S
    user_timeout_s: float | None = None
    """TCP_USER_TIMEOUT on the server's sockets (not a websockets setting, but it decides
    how long the kernel keeps a connection whose data goes unacknowledged)."""

    def __post_init__(self) -> None:
        for name in ("interval_s", "timeout_s"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None (off), got {value}")
        for name in ("close_timeout_s", "user_timeout_s"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")


def first_ping_after(opened_s: float, interval_s: float, after_s: float = 0.0) -> tuple[int, float]:
    """The first keepalive ping sent after ``after_s``: (its number k, its time).

    Ping k goes out at ``opened_s + k × (interval + PERIOD_LATENESS_S)``; the first is one
    period after the connection opened.
    """
    if interval_s <= 0:
        raise ValueError(f"interval must be positive, got {interval_s}")
    period = interval_s + PERIOD_LATENESS_S
    k = max(1, math.floor((after_s - opened_s) / period) + 1)
    return k, opened_s + k * period


def _s(value: float) -> str:
    return f"{format_seconds(value)} s"


@dataclass(frozen=True)
class PingTimeline:
    """What happens to one connection after the fault, by the settings."""

    ping_number: int
    ping_s: float                  # the first ping that goes unanswered
    give_up_s: float | None        # close frame 1011 + FIN; None without a ping timeout
    close_s: float | None          # websockets aborts the transport; None when it never does
    first_retransmission_s: float  # the kernel's clock for TCP_USER_TIMEOUT and the retries
    first_retransmission_why: str  # how that moment follows from the ping or the data
    held: Prediction               # when the kernel ends the connection while it is still held
    orphan: Prediction | None      # when the kernel drops the orphan left by websockets' abort

    @property
    def released_s(self) -> float:
        """When the server lets go: its abort, or the kernel ending the connection first
        (its count of open connections drops, its handler ends, the descriptor closes)."""
        held = self.held.reclaim_s
        assert held is not None  # data in flight always ends, by retransmissions if nothing else
        return held if self.close_s is None else min(self.close_s, held)

    @property
    def gone_s(self) -> float:
        """When the socket leaves the server's table."""
        if self.orphan is None or self.orphan.reclaim_s is None:
            return self.released_s
        # an orphan past its budget goes at the next retransmission timer: about at once
        return max(self.released_s, self.orphan.reclaim_s)


def timeline(settings: PingSettings, *, opened_s: float, in_flight_since_s: float | None = None,
             kernel: KernelDefaults | None = None, rto_s: float | None = None) -> PingTimeline | None:
    """The heartbeat's timeline for a connection opened at ``opened_s``; None with pings off.

    ``in_flight_since_s`` is when the server sent data the client never acknowledged, if it
    did before the first ping (``activity: in-flight``); the kernel's retransmission clock
    starts from the earlier of the two (see ``LONE_SEGMENT_PROBE_S`` for the ping's).
    ``rto_s`` is the socket's RTO, TCP_RTO_MIN (0.2 s) when not given.
    """
    if settings.interval_s is None:
        return None
    kernel = kernel or KernelDefaults()
    k, ping = first_ping_after(opened_s, settings.interval_s)
    # the kernel's clock: the probe of the lone ping, or data in flight since before it (a
    # message of several segments is probed within a few RTTs: no such delay)
    sent = ping + LONE_SEGMENT_PROBE_S
    rto = kernel.rto_min_s if rto_s is None else rto_s
    why = (f"the ping's tail loss probe {_s(LONE_SEGMENT_PROBE_S)} after it, then one RTO "
           f"{_s(rto)}")
    if in_flight_since_s is not None and in_flight_since_s < ping:
        sent = in_flight_since_s
        why = f"one RTO {_s(rto)} after the data sent at {_s(sent)}"
    own = SocketSettings(keepalive=False, user_timeout_s=settings.user_timeout_s)
    held = predict(effective(own, kernel), activity="in-flight", peer="silent",
                   data_sent_s=sent, rto_s=rto_s)
    give_up = None if settings.timeout_s is None else ping + settings.timeout_s
    close = None
    if give_up is not None and settings.close_timeout_s is not None:
        close = give_up + settings.close_timeout_s
    orphan = None
    if close is not None and held.reclaim_s is not None and close < held.reclaim_s:
        # TCP_USER_TIMEOUT bounds an orphan as it bounds a held socket; without it the
        # orphan's own budget (tcp_orphan_retries) replaces tcp_retries2's
        orphans = replace(kernel, tcp_retries2=ORPHAN_RETRIES)
        orphan = predict(effective(own, orphans), activity="in-flight", peer="silent",
                         data_sent_s=sent, rto_s=rto_s)
    return PingTimeline(ping_number=k, ping_s=ping, give_up_s=give_up, close_s=close,
                        first_retransmission_s=sent + rto, first_retransmission_why=why,
                        held=held, orphan=orphan)


def _kernel_text(tl: PingTimeline, ends: Prediction, settings: PingSettings,
                 budget: str) -> str:
    """How the kernel ends the connection, counted from its first retransmission."""
    assert ends.reclaim_s is not None
    first = (f"the first retransmission at {_s(tl.first_retransmission_s)} "
             f"({tl.first_retransmission_why})")
    if settings.user_timeout_s:
        return (f"TCP_USER_TIMEOUT {_s(settings.user_timeout_s)} after {first} = "
                f"{_s(ends.reclaim_s)}")
    return (f"the first retransmission timer expiry at or past the {budget} allows, counted "
            f"from {first}: {_s(ends.reclaim_s)}")


def predict_heartbeat(settings: PingSettings, *, opened_s: float,
                      in_flight_since_s: float | None = None, kernel: KernelDefaults | None = None,
                      rto_s: float | None = None) -> tuple[Prediction | None, float | None]:
    """When the socket of a connection whose client went silent at 0 leaves the server's
    table, and when the server's first unanswered ping goes out; ``(None, None)`` with pings
    off. The formula also says when websockets itself lets go (``PingTimeline.released_s``),
    which is earlier when the kernel keeps an orphan."""
    tl = timeline(settings, opened_s=opened_s, in_flight_since_s=in_flight_since_s,
                  kernel=kernel, rto_s=rto_s)
    if tl is None:
        return None, None
    assert settings.interval_s is not None
    steps = (f"first ping after the fault: opened {_s(opened_s)} + {tl.ping_number} × "
             f"ping_interval {_s(settings.interval_s)} = {_s(tl.ping_s)}")
    periods = tl.ping_number * PERIOD_SPREAD_S
    held_end = tl.held.reclaim_s
    assert held_end is not None
    retries = KernelDefaults().tcp_retries2 if kernel is None else kernel.tcp_retries2
    budget = retransmission_timeout_s(retries)
    held_text = _kernel_text(tl, tl.held, settings,
                             f"{format_seconds(budget)} s that tcp_retries2 {retries}")

    if tl.give_up_s is None or held_end < tl.give_up_s:
        why = ("ping_timeout is off, so websockets never gives up on the pong"
               if tl.give_up_s is None else
               f"the kernel ends it before the pong timeout at {_s(tl.give_up_s)}")
        return Prediction(
            reclaim_s=round(held_end, 6), mechanism=tl.held.mechanism,
            formula=f"{steps}; {why}: {held_text}",
            slack_s=round(periods + tl.held.slack_s, 6)), tl.ping_s

    assert settings.timeout_s is not None
    steps += (f"; no pong: + ping_timeout {_s(settings.timeout_s)} = {_s(tl.give_up_s)} "
              f"(close frame 1011 and FIN)")
    if tl.close_s is None:
        formula = (f"{steps}; close_timeout is off, so websockets waits for the dead client's"
                   f" close forever, until the kernel gives up: {held_text}")
        slack = tl.held.slack_s
    elif held_end <= tl.close_s:
        formula = (f"{steps}; the kernel ends it at {_s(held_end)}, before close_timeout would "
                   f"at {_s(tl.close_s)}: {held_text}")
        slack = TIMER_LATENESS_S + tl.held.slack_s
    else:
        assert tl.orphan is not None and settings.close_timeout_s is not None
        orphan = tl.orphan
        orphan_budget = retransmission_timeout_s(ORPHAN_RETRIES)
        formula = (f"{steps}; + close_timeout {_s(settings.close_timeout_s)} = {_s(tl.close_s)}:"
                   f" websockets aborts the connection and lets go (the reclaim); its socket then"
                   f" stays in the table as an orphan in FIN_WAIT1, held by no process, until the"
                   f" kernel stops retransmitting: " + _kernel_text(
                       tl, orphan, settings, f"{format_seconds(orphan_budget)} s that"
                                             f" tcp_orphan_retries ({ORPHAN_RETRIES})"))
        slack = 2 * TIMER_LATENESS_S + orphan.slack_s
    # The reclaim is websockets letting go: an orphan socket is the kernel's, not the server's.
    return Prediction(reclaim_s=round(tl.released_s, 6), mechanism="heartbeat", formula=formula,
                      slack_s=round(periods + slack, 6)), tl.ping_s


def predict_heartbeat_answered(settings: PingSettings, *,
                               opened_s: float) -> tuple[Prediction | None, float | None]:
    """The same keepalive against a client whose kernel is up but whose application answers
    nothing (a stopped process, ``process-pause``): the kernel acknowledges the ping, the close
    frame and the FIN, so no TCP timer fires and nothing is left to the kernel; only
    websockets' own timeouts end it. ``(None, None)`` with pings off."""
    if settings.interval_s is None:
        return None, None
    k, ping = first_ping_after(opened_s, settings.interval_s)
    steps = (f"first ping after the fault: opened {_s(opened_s)} + {k} × ping_interval"
             f" {_s(settings.interval_s)} = {_s(ping)}, acknowledged by the client's kernel but"
             " never answered")
    if settings.timeout_s is None:
        return Prediction(reclaim_s=None, mechanism="none",
                          formula=f"never: {steps}; ping_timeout is off, so websockets never waits"
                                  " for the pong"), ping
    give_up = ping + settings.timeout_s
    steps += (f"; no pong: + ping_timeout {_s(settings.timeout_s)} = {_s(give_up)} (close frame"
              " 1011 and FIN, both acknowledged: the socket goes to FIN_WAIT2)")
    if settings.close_timeout_s is None:
        return Prediction(reclaim_s=None, mechanism="none",
                          formula=f"never: {steps}; close_timeout is off, so websockets waits for"
                                  " the client's close forever"), ping
    close = give_up + settings.close_timeout_s
    return Prediction(
        reclaim_s=round(close, 6), mechanism="heartbeat",
        formula=(f"{steps}; + close_timeout {_s(settings.close_timeout_s)} = {_s(close)}: websockets"
                 " aborts and lets go (its socket, orphaned in FIN_WAIT2, is no process's)"),
        slack_s=round(k * PERIOD_SPREAD_S + 2 * TIMER_LATENESS_S, 6)), ping
