"""``process-pause``: the client process is stopped (SIGSTOP) while its host stays up.

Its kernel keeps answering: it acknowledges every keepalive probe and every segment the
server sends, so no TCP timer on the server ever fires (TCP_USER_TIMEOUT included: nothing
stays unacknowledged). Only what waits for the *application* notices: a heartbeat that
needs an answer (websockets' ping and its pong, sshd's ClientAlive requests). The faulted
sessions live in a session host of their own (``harness.run.session_host``), which this
fault stops at the fault and continues at its revert.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from harness.core.assess import Heartbeat, SessionFacts
from harness.core.prediction import Effective, Prediction

if TYPE_CHECKING:
    from harness.faults.site import Site
    from harness.run.session_host import SessionHost

KERNEL_ANSWERS = ("the paused client's kernel is up and acknowledges every keepalive probe and"
                  " every segment, so no keepalive, retransmission or TCP_USER_TIMEOUT fires")
NEVER_BY_TCP = f"never by TCP: {KERNEL_ANSWERS}"


def answered_by_kernel(settings: Effective, facts: SessionFacts, heartbeat: Heartbeat) -> Prediction:
    """The prediction for a client whose kernel answers but whose application does not: the
    service's heartbeat (its rule for an acknowledged but unanswered heartbeat), else never."""
    app, _ = heartbeat(facts.last_activity_s, facts.opened_s)
    if app is None:
        return Prediction(reclaim_s=None, mechanism="none",
                          formula=f"{NEVER_BY_TCP}; the service has no heartbeat of its own")
    if app.reclaim_s is None:
        return Prediction(reclaim_s=None, mechanism="none",
                          formula=f"{NEVER_BY_TCP}; and the service's heartbeat: {app.formula}")
    return Prediction(reclaim_s=app.reclaim_s, mechanism=app.mechanism,
                      formula=f"the service's heartbeat: {app.formula} ({KERNEL_ANSWERS})",
                      slack_s=app.slack_s)


@dataclass
class ProcessPause:
    """Stop the process holding the faulted sessions; continue it at revert."""

    peer: ClassVar[str] = "stopped, its kernel answering"     # for explain
    layer: str = field(default="packet", init=False)
    where: str = field(default="client", init=False)
    holds_sessions: bool = field(default=True, init=False)   # the runner opens them in a session host
    kernel_answers: bool = field(default=True, init=False)   # heartbeats are acknowledged, not answered
    _host: SessionHost | None = field(default=None, init=False, repr=False)

    def apply(self, site: Site) -> None:
        """SIGSTOP the session host."""
        if site.host is None:
            raise ValueError("process-pause needs the faulted sessions in a session host")
        self._host = site.host
        site.host.pause()

    def revert(self) -> None:
        """SIGCONT (the lab's teardown then kills the host)."""
        if self._host is not None:
            self._host.resume()
            self._host = None

    def describe(self) -> str:
        return "client process stopped (SIGSTOP): its kernel still ACKs, its application answers nothing"

    def predict(self, settings: Effective, facts: SessionFacts, heartbeat: Heartbeat) -> Prediction:
        return answered_by_kernel(settings, facts, heartbeat)
