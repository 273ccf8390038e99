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
closes its leg, HAProxy closes the client leg with it. The earliest decides.
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


def through_tier(upstream: Prediction | None) -> Prediction | None:
    """The upstream service's own heartbeat, seen on the client leg: when it gives up and
    closes its leg, HAProxy closes the client leg with it."""
    if upstream is None or upstream.reclaim_s is None:
        return upstream
    return Prediction(reclaim_s=upstream.reclaim_s, mechanism=upstream.mechanism,
                      slack_s=upstream.slack_s + CLOSE_SLACK_S,
                      formula=f"the upstream's own heartbeat: {upstream.formula}; HAProxy closes"
                              " the client leg when the upstream closes its leg")


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
