"""``slow-reader``: the client asks for a large stream and then reads nothing.

At the fault each faulted session asks its server for more than the buffers hold (the
target's ``request_stream``: PostgreSQL's ``COPY ... TO STDOUT`` of a big result), and its
process is stopped (SIGSTOP), so no client library reads behind its back. The server's data
fills the client's receive window; the rest waits in the server's send queue and the kernel
probes the zero window (the persist timer, ``tcp_probe_timer`` in net/ipv4/tcp_timer.c).

The client's kernel acknowledges every probe. RFC 1122 4.2.2.17 keeps such a connection open
indefinitely, and Linux does so by default (the probe count resets with each ACK; keepalive
does not fire with data waiting to be sent). Since "tcp: fix TCP_USER_TIMEOUT with zero
window" (Linux 5.11, 2021) TCP_USER_TIMEOUT bounds it: the first persist timer run stamps
``icsk_probes_tstamp``, later runs abort once ``user_timeout`` has passed since that stamp,
and each re-arm is clamped to what is left of it (``tcp_clamp_probe0_to_user_timeout``), so
the abort lands on stamp + user timeout. The first run comes one RTO
(``tcp_probe0_base``) after the window closed (60-180 ms after the request here). Measured:
that run sometimes finds the window open by a few bytes (the client's kernel announced zero
with a little room left) and sends them instead of a probe, which resets the stamp: the
clock then starts one RTO later. The observer sees which (the persist timer's backoff leaving
0 is the stamping probe: ``zero-window-probe``), and the prediction counts from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from harness.core.assess import Heartbeat, SessionFacts
from harness.core.prediction import Effective, Prediction, combine, format_seconds, timer_slack_s

if TYPE_CHECKING:
    from harness.faults.site import Site
    from harness.run.session_host import SessionHost

FILL_S = 0.05
"""How long the server takes to fill the window after the request (a lab link: a few ms;
measured 60-180 ms for PostgreSQL's COPY), taken as slack when it was not seen."""
PROBE_SEEN_S = 0.01
"""How late the observer sees the first probe: one sample (10 ms by default)."""


def first_probe_s(facts: SessionFacts) -> tuple[float, str] | None:
    """Where TCP_USER_TIMEOUT's clock starts, as the observer saw it: the last first
    zero-window probe (``zero-window-probe``: the persist timer's backoff leaving 0), else one
    RTO after the persist timer was last armed (``zero-window``); None if neither was seen."""
    probes = [e.t for e in facts.events if e.what == "zero-window-probe" and e.t >= 0]
    if probes:
        return max(probes), f"first zero-window probe at {format_seconds(max(probes))} s (seen)"
    armed = [e.t for e in facts.events if e.what == "zero-window" and e.t >= 0]
    if armed:
        rto = facts.rto_s or 0.2
        at = max(armed) + rto
        return at, (f"window closed at {format_seconds(max(armed))} s (seen: the persist timer armed)"
                    f" + RTO {format_seconds(rto)} s = first zero-window probe at {format_seconds(at)} s")
    return None


def zero_window(settings: Effective, rto_s: float | None,
                probe: tuple[float, str] | None = None) -> Prediction:
    """What the kernel does with a zero window whose probes the client's kernel ACKs;
    ``probe``: when its first probe went out, as seen (None: one RTO after the fault)."""
    if settings.user_timeout_s <= 0:
        return Prediction(
            reclaim_s=None, mechanism="none",
            formula=("never by TCP: the window is full and the server's kernel probes it (persist"
                     " timer), but the client's kernel ACKs every zero-window probe, which resets"
                     " the probe count (RFC 1122 4.2.2.17); keepalive does not fire with data"
                     " waiting to be sent; only TCP_USER_TIMEOUT would bound it"))
    ut = settings.user_timeout_s
    if probe is None:
        rto = settings.rto_min_s if rto_s is None else max(rto_s, settings.rto_min_s)
        at, head, slack = rto, (f"window full at the fault (not seen closing) + RTO {format_seconds(rto)} s ="
                                f" first zero-window probe at {format_seconds(rto)} s"), FILL_S
    else:
        (at, head), slack = probe, PROBE_SEEN_S
    reclaim = at + ut
    return Prediction(
        reclaim_s=round(reclaim, 6), mechanism="user-timeout",
        formula=(f"{head} (it stamps the probe clock) + TCP_USER_TIMEOUT {format_seconds(ut)} s ="
                 f" {format_seconds(reclaim)} s (the probes are ACKed, but since Linux 5.11 the"
                 " user timeout counts from the first probe)"),
        slack_s=round(slack + timer_slack_s(ut, settings.hz), 6))


@dataclass
class SlowReader:
    """Ask for a stream on each faulted session, then stop reading (stop the session host)."""

    peer: ClassVar[str] = "reading nothing, its kernel answering"     # for explain
    layer: str = field(default="packet", init=False)
    where: str = field(default="client", init=False)
    holds_sessions: bool = field(default=True, init=False)
    kernel_answers: bool = field(default=True, init=False)
    zero_window: bool = field(default=True, init=False)   # probes seen are zero-window probes
    _host: SessionHost | None = field(default=None, init=False, repr=False)

    def apply(self, site: Site) -> None:
        if site.host is None:
            raise ValueError("slow-reader needs the faulted sessions in a session host")
        self._host = site.host
        site.host.request_stream()
        site.host.pause()

    def revert(self) -> None:
        if self._host is not None:
            self._host.resume()
            self._host = None

    def describe(self) -> str:
        return "client asks for a large stream and reads nothing: the server fills the window"

    def predict(self, settings: Effective, facts: SessionFacts, heartbeat: Heartbeat) -> Prediction:
        """The user timeout's bound on the zero window, against the service's heartbeat
        (which is queued behind the data and so goes unanswered)."""
        tcp = zero_window(settings, facts.rto_s, first_probe_s(facts))
        app, first_send = heartbeat(facts.last_activity_s, facts.opened_s)
        return combine(tcp, app, app_first_send_s=first_send)
