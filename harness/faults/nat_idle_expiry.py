"""``nat-idle-expiry``: the chosen sessions go idle behind a middlebox whose entries expire.

The middlebox is the lab's router (``harness.lab.middlebox``): it tracks every flow, and an
entry that sees no packet for ``idle_timeout`` goes; the flow's later packets then meet no
entry and are dropped (``drop``: AWS NLB, GCP) or answered with a reset (``reset``: Azure
with TCP reset on idle). The fault itself loads no rule: from the fault on, the harness
stops talking on the faulted sessions (the others keep talking), so only what the server
sends itself (keepalive probes, its heartbeat) can refresh their entries.

Every packet of a flow refreshes its entry. So the server's own keepalive decides: probes
that go out before the entry expires (keepalive idle < idle_timeout) keep the session; if
they go out later, the first one meets the dead entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from harness.core.assess import Heartbeat, SessionFacts, predict_with_heartbeat
from harness.core.prediction import Effective, Prediction, format_seconds, predict, timer_slack_s

if TYPE_CHECKING:
    from harness.faults.site import Site

OnExpiry = Literal["drop", "reset"]


@dataclass
class NatIdleExpiry:
    """The faulted sessions fall silent behind a middlebox with ``idle_timeout_s``."""

    idle_timeout_s: float = 350.0
    on_expiry: OnExpiry = "drop"
    nat: bool = True
    layer: str = field(default="packet", init=False)
    where: str = field(default="router", init=False)
    silences_sessions: bool = field(default=True, init=False)   # the runners stop talking on them

    def apply(self, site: Site) -> None:
        """Nothing to load: the middlebox is already in the router, the silence is the runner's."""

    def revert(self) -> None:
        """Nothing to remove (the middlebox goes with the lab)."""

    def describe(self) -> str:
        then = "drops their packets" if self.on_expiry == "drop" else "answers their packets with a reset"
        nat = "NAT" if self.nat else "middlebox"
        return (f"sessions go idle behind a {nat} whose entries expire after"
                f" {format_seconds(self.idle_timeout_s)} s idle; it then {then}")

    def predict(self, settings: Effective, facts: SessionFacts, heartbeat: Heartbeat) -> Prediction:
        """Whether the server's own packets refresh the entry in time, and if not, what the
        first packet after expiry meets."""
        timeout = self.idle_timeout_s
        expires = facts.last_activity_s + timeout
        box = f"middlebox idle_timeout {format_seconds(timeout)} s"
        if settings.keepalive and settings.idle_s < timeout:
            return Prediction(
                reclaim_s=None, mechanism="none",
                formula=(f"never: tcp keepalive idle {_idle(settings)} < {box}: probes refresh"
                         " the entry before it expires"))
        app, first_send = heartbeat(facts.last_activity_s, facts.opened_s)
        if app is not None and first_send is not None and first_send < expires:
            return Prediction(
                reclaim_s=None, mechanism="none",
                formula=(f"never: the service's heartbeat goes out at {format_seconds(first_send)} s,"
                         f" before the entry expires at {format_seconds(expires)} s"
                         f" (last activity {format_seconds(facts.last_activity_s)} s + {box}):"
                         " its answers refresh the entry"))
        why = (f"tcp keepalive idle {_idle(settings)} >= {box}" if settings.keepalive
               else "tcp keepalive is off")
        head = (f"{why}: the entry expires at last activity {format_seconds(facts.last_activity_s)} s"
                f" + {format_seconds(timeout)} s = {format_seconds(expires)} s")
        if self.on_expiry == "reset":
            return self._reset(settings, facts, head, app, first_send)
        tcp = predict(settings, activity="idle", peer="silent", last_activity_s=facts.last_activity_s)

        def blinded(sent: float) -> Prediction:
            return predict(settings, activity="in-flight", peer="silent", data_sent_s=sent,
                           rto_s=facts.rto_s)
        found = predict_with_heartbeat(tcp, facts, heartbeat, blinded)
        return Prediction(reclaim_s=found.reclaim_s, mechanism=found.mechanism,
                          formula=f"{head}; the middlebox then drops every packet of the flow, so"
                                  f" the server hears nothing back: {found.formula}",
                          slack_s=found.slack_s)

    def _reset(self, settings: Effective, facts: SessionFacts, head: str,
               app: Prediction | None, first_send: float | None) -> Prediction:
        """The first packet the server sends after expiry draws a reset."""
        candidates: list[tuple[float, str, float]] = []
        if settings.keepalive:
            probe = facts.last_activity_s + settings.idle_s
            candidates.append((probe, f"the first keepalive probe at last activity"
                               f" {format_seconds(facts.last_activity_s)} s + idle {_idle(settings)}"
                               f" = {format_seconds(probe)} s", timer_slack_s(settings.idle_s, settings.hz)))
        if app is not None and first_send is not None:
            candidates.append((first_send, f"the service's first heartbeat at {format_seconds(first_send)} s",
                               0.0))
        if not candidates:
            return Prediction(reclaim_s=None, mechanism="none",
                              formula=f"{head}; never: the server sends nothing idle, so nothing meets"
                                      " the middlebox's reset")
        at, what, slack = min(candidates)
        return Prediction(reclaim_s=round(at, 6), mechanism="reset",
                          formula=f"{head}; {what} meets the middlebox's reset", slack_s=slack)


def _idle(settings: Effective) -> str:
    note = " (OS default)" if "idle" in settings.defaults_used else ""
    return f"{format_seconds(settings.idle_s)} s{note}"
