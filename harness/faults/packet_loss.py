"""``packet-loss``: the router drops a share of the faulted flows' packets at random, each
direction on its own (nftables ``numgen random``).

The prediction is a bound, not a point (``harness.core.loss``): the earliest possible reclaim
is the silent peer's (every packet lost), and for an idle keepalive socket without a heartbeat
the chance of a reclaim by each time is exact; with data in flight it is a floor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from harness.core.assess import Heartbeat, SessionFacts
from harness.core.loss import LossBound, in_flight_bound, keepalive_distribution
from harness.core.prediction import Effective, Prediction, format_seconds, predict
from harness.faults.base import TO_CLIENT, TO_SERVER, Flow, PacketFault, chain, flow_set

SCALE = 10_000   # numgen's modulus: the share in hundredths of a percent


@dataclass
class PacketLoss(PacketFault):
    """Drop ``loss`` (0 to 1) of the faulted flows' packets in each direction, in the router."""

    loss: float = 0.3
    where = "router"
    peer = "silent"

    @property
    def threshold(self) -> int:
        """numgen draws 0 .. SCALE-1; a packet is dropped below this."""
        return round(self.loss * SCALE)

    def rules(self, flows: Sequence[Flow]) -> str:
        # the counters (every packet of the flows, those dropped) let the loss be checked
        drop = f"numgen random mod {SCALE} < {self.threshold} counter drop"
        return flow_set(flows) + chain("forward", "forward", f"{TO_SERVER} counter", f"{TO_CLIENT} counter",
                                       f"{TO_SERVER} {drop}", f"{TO_CLIENT} {drop}")

    def describe(self) -> str:
        return f"router drops {self.loss:.0%} of packets at random, each direction"

    def predict(self, settings: Effective, facts: SessionFacts, heartbeat: Heartbeat) -> Prediction:
        """The silent peer's prediction is the earliest possible reclaim; what is known of the
        chance of one by a given time rides along as its ``bound``."""
        silent = super().predict(settings, facts, heartbeat)
        app, _ = heartbeat(facts.last_activity_s, facts.opened_s)
        bound: LossBound
        if app is None and facts.activity == "idle" and silent.mechanism == "keepalive":
            bound = keepalive_distribution(settings, self.loss, facts.last_activity_s)
        elif app is None and facts.activity == "in-flight" and silent.reclaim_s is not None:
            # the data acknowledged at once: an idle socket from then, for keepalive
            idle = predict(settings, activity="idle", peer="silent", last_activity_s=facts.data_sent_s)
            bound = in_flight_bound(silent.reclaim_s, _transmissions(settings, facts, silent), self.loss,
                                    idle.reclaim_s)
        else:
            # a heartbeat that gets through does not blind keepalive: the kernel's own path,
            # unblinded, may come first
            kernel = predict(settings, activity=facts.activity, peer="silent",
                             last_activity_s=facts.last_activity_s, data_sent_s=facts.data_sent_s,
                             rto_s=facts.rto_s)
            times = [t for t in (silent.reclaim_s, kernel.reclaim_s) if t is not None]
            bound = LossBound("earliest-only", self.loss, min(times) if times else None)
        if silent.reclaim_s is None:
            return replace(silent, bound=bound)
        sooner = ""
        if bound.earliest_s is not None and bound.earliest_s < silent.reclaim_s - 1e-9:
            sooner = (f"; sooner, {format_seconds(bound.earliest_s)} s, if the data is acknowledged at"
                      " once and keepalive then finds the peer silent")
        formula = (f"at the earliest {silent.formula} (every packet lost){sooner}; with {self.loss:.0%} loss"
                   f" each way a reclaim needs {_needs(silent.mechanism, settings)}, so it may come"
                   " later or not by the deadline")
        return replace(silent, reclaim_s=bound.earliest_s, formula=formula, bound=bound)


def _needs(mechanism: str, eff: Effective) -> str:
    if mechanism == "keepalive" and eff.user_timeout_s <= 0:
        return f"{eff.count} consecutive lost probes (a probe or its ACK)"
    if mechanism == "keepalive":
        return (f"probes lost for TCP_USER_TIMEOUT {format_seconds(eff.user_timeout_s)} s"
                " since the last answered one")
    return "every transmission of the data in flight lost"


def _transmissions(eff: Effective, facts: SessionFacts, silent: Prediction) -> int:
    """The original send and the retransmissions before the silent-peer kill."""
    assert silent.reclaim_s is not None
    rto = eff.rto_min_s if facts.rto_s is None else min(facts.rto_s, eff.rto_max_s)
    t, count = facts.data_sent_s, 1
    while True:
        t += rto
        if t >= silent.reclaim_s - 1e-9:
            # one more than doubling gives: the user timeout's clamped last re-arm may add one,
            # and over-counting keeps the chance a floor
            return count + 1
        count += 1
        rto = min(rto * 2, eff.rto_max_s)

