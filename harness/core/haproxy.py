"""What HAProxy (TCP mode) does to a session whose client died: pure arithmetic, no I/O.

HAProxy's own reclaim of the client leg is an inactivity timeout (configuration.txt, 2.6):
in TCP mode the stream becomes a tunnel as soon as no analyser remains (at once without
``tcp-request content`` rules), and from then on ``timeout tunnel`` "supersedes both the
client and server timeouts" and counts inactivity in both directions; without it ``timeout
client`` (client side) and ``timeout server`` (server side) each count their own side, and a
write refreshes the read timeout of the same side (``option independent-streams`` is off).
An expired timeout closes the stream: both sides at once, the client side without lingering.

The upstream service's own heartbeat passes through: a WebSocket server's ping is data that
HAProxy forwards to the dead client (in flight on the client leg: keepalive there is blind
from then on, and the data is activity for HAProxy's timers); when that service gives up and
closes its leg, HAProxy half-closes the client leg and closes it at its half-closed timeout
(``timeout client-fin``). The earliest decides.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.core.prediction import Prediction, format_seconds

TIMER_SLACK_S = 0.02
"""HAProxy's timers are millisecond ticks checked at each wake-up of the stream's task."""
CLOSE_SLACK_S = 0.05
"""From the client leg's close to the server connection's close: one pass of the stream."""


@dataclass(frozen=True)
class Timeouts:
    """HAProxy's inactivity timeouts in seconds (None: not set, infinite)."""

    client_s: float | None = None
    server_s: float | None = None
    tunnel_s: float | None = None
    client_fin_s: float | None = None

    def half_closed(self) -> tuple[float, str] | None:
        """The timeout of a client leg HAProxy has half-closed (the server side closed)."""
        for seconds, name in ((self.client_fin_s, "timeout client-fin"), (self.tunnel_s, "timeout tunnel"),
                              (self.client_s, "timeout client")):
            if seconds is not None:
                return seconds, name
        return None

    def idle(self) -> tuple[float, str] | None:
        """The timeout that ends an idle TCP stream and its name; None: nothing ends it."""
        if self.tunnel_s is not None:
            return self.tunnel_s, "timeout tunnel"
        # An idle stream: both sides are silent since the last exchange; the shorter side's
        # timeout fires first and closes the whole stream.
        sides = [(t, n) for t, n in ((self.client_s, "timeout client"), (self.server_s, "timeout server"))
                 if t is not None]
        return min(sides) if sides else None


def tier_timeout(timeouts: Timeouts, *, last_activity_s: float,
                 upstream_first_send_s: float | None) -> Prediction | None:
    """HAProxy's own reclaim of the client leg by its inactivity timeout, counted from the
    last activity; None when no timeout is set, or when the upstream's heartbeat passes data
    through before the timeout expires (which refreshes it: the upstream's heartbeat decides)."""
    idle = timeouts.idle()
    if idle is None:
        return None
    seconds, name = idle
    at = last_activity_s + seconds
    if upstream_first_send_s is not None and upstream_first_send_s < at:
        return None
    return Prediction(
        reclaim_s=round(at, 6), mechanism="closed", slack_s=TIMER_SLACK_S,
        formula=(f"last activity {format_seconds(last_activity_s)} s + HAProxy's {name}"
                 f" {format_seconds(seconds)} s = {format_seconds(at)} s (HAProxy closes the"
                 " idle stream, client and server sides)"))


def through_tier(upstream: Prediction | None, timeouts: Timeouts) -> Prediction | None:
    """The upstream service's own heartbeat, seen on the client leg. When that service gives
    up it closes its leg; HAProxy passes the close on (a FIN after the data still queued for
    the dead client) and keeps the half-closed client leg until its half-closed timeout:
    ``timeout client-fin``, else the tunnel's, else ``timeout client``. Measured on 2.6: the
    client leg goes to FIN_WAIT1 when the upstream closes and stays HAProxy's. The upstream's
    give-up is the moment it lets go (its prediction), at most its own close wait after it
    sent its FIN: the prediction is that late at most."""
    if upstream is None or upstream.reclaim_s is None:
        return upstream
    gone = upstream.reclaim_s
    held = timeouts.half_closed()
    head = f"the upstream's own heartbeat gives up at {format_seconds(gone)} s ({upstream.formula})"
    if held is None:
        return Prediction(reclaim_s=None, mechanism="none",
                          formula=f"{head}; HAProxy half-closes the client leg and, with no"
                                  " timeout client-fin, tunnel or client, holds it")
    seconds, name = held
    at = gone + seconds
    return Prediction(reclaim_s=round(at, 6), mechanism=upstream.mechanism,
                      slack_s=upstream.slack_s + TIMER_SLACK_S,
                      formula=f"{head}; HAProxy half-closes the client leg and closes it after"
                              f" {name} {format_seconds(seconds)} s = {format_seconds(at)} s")


def earliest(*predictions: Prediction | None) -> Prediction | None:
    """The earliest prediction that reclaims; else one that never does; else None."""
    found = [p for p in predictions if p is not None]
    timed = [p for p in found if p.reclaim_s is not None]
    if timed:
        return min(timed, key=lambda p: p.reclaim_s or 0.0)
    return found[0] if found else None


UpstreamOutcome = tuple[str, float | None, str, str, float]
"""(outcome, at_s, mechanism, formula, slack_s) of a session's upstream leg."""


def upstream_leg(client: Prediction | None) -> UpstreamOutcome:
    """In TCP mode HAProxy has no pool: its server connection lives and dies with the stream.
    Closed when the client leg is reclaimed, held while it is not."""
    if client is None or client.reclaim_s is None:
        return ("held", None, "none",
                "the client leg is never reclaimed, so HAProxy keeps its server connection open", 0.0)
    at = client.reclaim_s
    return ("closed", at, "tier-closed",
            f"HAProxy closes its server connection with the client leg at {format_seconds(at)} s"
            " (TCP mode: one stream, no pool)", client.slack_s + CLOSE_SLACK_S)
