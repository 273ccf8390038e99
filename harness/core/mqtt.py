"""When Mosquitto 2.0 disconnects a silent MQTT client: its keepalive check, as measured.

Pure: the client's keepalive and the broker's clock arrive as values, times as float seconds
counted from the fault; nothing here reads the machine.

MQTT 3.1.1 (3.1.2.10) says the server disconnects a client it has heard nothing from for one
and a half times its keepalive. Debian's Mosquitto 2.0.11 does it this way (src/keepalive.c,
the 2.0 "prototype" check, and src/mux_epoll.c):

- every stamp is a *whole* second of CLOCK_MONOTONIC (``mosquitto_time()``, ``db.now_s``,
  taken when ``epoll_wait`` returns); ``last_msg_in`` is the second it last read a packet
  from the client (CONNECT, PINGREQ, PUBLISH, ...), and sending to the client does not count;
- a client is over its time when ``now_s - last_msg_in > keepalive * 3 / 2`` in integer
  arithmetic: keepalive 1 → 1 s, 2 → 3 s, 3 → 4 s, 4 → 6 s, 5 → 7 s; so its first second
  over is ``last_msg_in + keepalive * 3 // 2 + 1``;
- the check runs only when ``last_keepalive_check + 5 < now_s``: every **6** whole seconds,
  from the first turn of the main loop (the second the broker started), whatever the clients
  do; it runs at the top of a loop turn, and the loop turns at least every 100 ms (the epoll
  wait's timeout), so a check falls 0-100 ms into its second;
- keepalive 0 is never checked (MQTT 3.1.1: "turned off"); Mosquitto sets no SO_KEEPALIVE on
  its sockets and has no option for it in 2.0, so nothing else reclaims an idle silent
  client (an MQTT 5 client's keepalive 0 is answered with a server keepalive of
  ``max_keepalive``, 65535 by default; connchaos's sessions are MQTT 3.1.1).

So the disconnect is the first check second at or after the first second over. Measured on
this machine (Mosquitto 2.0.11, 20 clients connected at random phases over 6 s, each then
silent with or without one PINGREQ later; "L" is the whole monotonic second of the client's
last packet, "S0" the broker's start second; every disconnect 76-93 ms into its second):

==========  ==================  =============================  =================
keepalive   first second over   disconnect (check seconds)     last packet → gone
==========  ==================  =============================  =================
1           L + 2               S0+6 / S0+12, the first ≥      2.81-5.41 s
2           L + 4               S0+6 / S0+12                    3.68-8.20 s
3           L + 5               S0+12                           5.47-7.48 s
4           L + 7               S0+12                           8.30-10.84 s
5           L + 8               S0+12 / S0+18                   7.45-12.76 s
==========  ==================  =============================  =================

Three more runs of 40 clients (8 per keepalive) gave, last packet → disconnect, keepalive 1:
1.10-6.62 s, 2: 3.35-8.92 s, 3: 4.41-9.63 s, 4: 6.13-11.79 s, 5: 7.45-12.97 s; all 140
disconnects within -0.047..+0.056 s of ``broker_keepalive`` (the check second + 0.05 s).
Through the runner (blackhole, keepalive 1) the broker's sockets went 4.95 s after the fault
against 4.995 s predicted (docker: 4.90 s against 4.90 s).

Against "1.5 × keepalive" (1.5 s for keepalive 1), the reclaim is up to 5.5 s later. A
client that is silent behind a live TCP peer (a proxy stall) is the same to the broker: the
check reads only ``last_msg_in``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.core.prediction import Prediction, format_seconds

CHECK_EVERY_S = 6
"""``last_keepalive_check + 5 < db.now_s``: a check every sixth whole second."""
LOOP_WAKE_S = 0.1
"""The main loop's longest wait (``epoll_wait`` 100 ms): how late into its second a check runs."""
MAX_KEEPALIVE = 65535


def limit_s(keepalive: int) -> int:
    """How many whole seconds of silence the broker allows: ``keepalive * 3 / 2`` in C."""
    if keepalive < 0:
        raise ValueError(f"keepalive must not be negative, got {keepalive}")
    return keepalive * 3 // 2


def first_second_over(last_heard_second: int, keepalive: int) -> int:
    """The first whole second at which a check would disconnect the client."""
    return last_heard_second + limit_s(keepalive) + 1


def check_second(at_or_after: int, first_check_second: int) -> int:
    """The first keepalive check at or after ``at_or_after`` (whole monotonic seconds)."""
    turns = max(0, math.ceil((at_or_after - first_check_second) / CHECK_EVERY_S))
    return first_check_second + turns * CHECK_EVERY_S


@dataclass(frozen=True)
class BrokerClock:
    """How the broker's whole seconds line up with the run: the fault in CLOCK_MONOTONIC
    seconds, and the second of the broker's first keepalive check (its start)."""

    fault_mono_s: float
    first_check_second: int


def _s(value: float) -> str:
    return f"{format_seconds(value)} s"


def broker_keepalive(keepalive: int, *, last_heard_s: float,
                     clock: BrokerClock | None) -> Prediction:
    """When Mosquitto disconnects a client silent since ``last_heard_s`` (seconds from the
    fault: when the broker last read from it). With ``clock`` the exact check; without (no
    run yet), the middle of the 6 s the check may fall in, the bounds in the formula."""
    if keepalive == 0:
        return Prediction(reclaim_s=None, mechanism="none", formula=(
            "never by Mosquitto: keepalive 0 turns its check off, and it sets no SO_KEEPALIVE"
            " on its sockets, so an idle silent client is held for good"))
    limit = limit_s(keepalive)
    rule = (f"keepalive {keepalive} s: over its time {limit} + 1 whole seconds after the"
            f" second it was last heard (keepalive × 3 / 2 in integers, not {_s(1.5 * keepalive)});"
            f" Mosquitto checks only every {CHECK_EVERY_S} whole seconds from its start, within"
            f" {_s(LOOP_WAKE_S)} into the second")
    if clock is None:
        # the last second heard ends 0-1 s after the hearing, the check comes 0-6 s after that
        low = last_heard_s + limit
        high = last_heard_s + limit + 1 + CHECK_EVERY_S - 1 + LOOP_WAKE_S
        mid = (low + high) / 2
        return Prediction(reclaim_s=round(mid, 6), mechanism="heartbeat", slack_s=round((high - low) / 2, 6),
                          formula=(f"last heard {_s(last_heard_s)}; {rule}: between {_s(low)} and"
                                   f" {_s(high)} (the phase of its checks is known once it runs)"))
    heard = math.floor(clock.fault_mono_s + last_heard_s)
    over = first_second_over(heard, keepalive)
    check = check_second(over, clock.first_check_second)
    at = check - clock.fault_mono_s + LOOP_WAKE_S / 2
    formula = (f"last heard {_s(last_heard_s)} (broker second {heard}); {rule}: over at second {over},"
               f" checked at second {check} (checks at {clock.first_check_second} + {CHECK_EVERY_S} k)"
               f" = {_s(check - clock.fault_mono_s)} after the fault + half a loop wait"
               f" {_s(LOOP_WAKE_S / 2)} = {_s(at)} (MQTT's 1.5 × keepalive says"
               f" {_s(last_heard_s + 1.5 * keepalive)})")
    return Prediction(reclaim_s=round(at, 6), mechanism="heartbeat", formula=formula,
                      slack_s=LOOP_WAKE_S / 2)
