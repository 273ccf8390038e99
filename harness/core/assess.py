"""From what was seen of each session to its record: timeline, outcome, prediction, and the
scenario's verdict. No I/O: both runners (plain and load) and ``connchaos explain`` call
this, and nothing else computes a per-session verdict or prediction.

A runner gathers one ``SessionFacts`` per session (times in seconds from the fault); the
fault predicts what its settings make of those facts (``FaultModel.predict``), the service's
heartbeat may come first (``Heartbeat``), and the events decide what really happened.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from harness.core.loss import LossBound, binomial_range
from harness.core.prediction import Activity, Effective, Prediction, combine, format_seconds
from harness.core.reconnect import ReconnectPrediction
from harness.core.records import (
    EventRecord,
    Json,
    JsonObject,
    KernelRecord,
    LegRecord,
    LoadRecord,
    ObserverRecord,
    PredictionRecord,
    ScenarioRecord,
    SessionRecord,
    SummaryRecord,
    TargetRecord,
    VerdictName,
)
from harness.core.stats import summarize
from harness.core.timeline import UPSTREAM, Event, Outcome, outcome, sort_events
from harness.core.verdict import Expectations, judge

Heartbeat = Callable[[float, float], tuple[Prediction | None, float | None]]
"""The service's own heartbeat, given (last activity, opened) in seconds from the fault: its
prediction and when its first unanswered heartbeat goes out; (None, None) without one."""


@dataclass(frozen=True)
class LegFacts:
    """What a runner saw of a session's upstream leg (a tier's connection to its backend)."""

    server: str                    # the backend's address
    peer: str                      # the tier's end, as the backend sees it
    pid: int | None = None         # the backend's process serving it
    events: tuple[Event, ...] = ()  # ``upstream-*`` events, in seconds from the fault


@dataclass(frozen=True)
class UpstreamPrediction:
    """What a tier does with a faulted session's upstream leg."""

    outcome: Literal["closed", "pooled", "held"]
    at_s: float | None       # closed / pooled: when, from the fault; held: None
    mechanism: str           # "tier-closed", "server_idle_timeout", "pool", ...
    formula: str             # one line naming the settings that decided it
    slack_s: float = 0.0     # the tier's timer granularity


@dataclass(frozen=True)
class SessionFacts:
    """What a runner saw of one session, in seconds from the fault."""

    id: int
    faulted: bool
    opened_s: float
    last_activity_s: float
    activity: Activity = "idle"      # the session at the fault
    data_sent_s: float = 0.0         # in-flight: when the unacknowledged data went out
    rto_s: float | None = None
    pid: int | None = None
    events: tuple[Event, ...] = ()   # what the observer saw
    server_error: tuple[float, str] | None = None       # the service's log: (at, kind)
    alive_check: tuple[float, bool, str] | None = None   # survivors: (at, ok, detail)
    client: str | None = None
    server: str | None = None
    server_peer: str | None = None
    client_error: str | None = None
    opened_detail: str | None = None   # the "opened" event's detail (default: the client)
    upstream: LegFacts | None = None   # a tier's session: its upstream leg
    # syn-blackhole: the client's reconnect: (started, took, outcome, detail), seconds from the
    # fault and from its start; outcome timed-out | connected | failed
    reconnect: tuple[float, float, str, str] | None = None


class FaultModel(Protocol):
    """What assessment needs of a fault: its prediction from the settings and the facts."""

    def predict(self, settings: Effective, facts: SessionFacts, heartbeat: Heartbeat) -> Prediction:
        """When (and how) the server should reclaim a faulted session."""
        ...


def predict_with_heartbeat(network: Prediction, facts: SessionFacts, heartbeat: Heartbeat,
                           blinded: Callable[[float], Prediction] | None) -> Prediction:
    """The network's prediction against the service's heartbeat: the earlier decides, and a
    heartbeat in flight blinds keepalive (``blinded(first_send)`` is then the kernel's path)."""
    app, first_send = heartbeat(facts.last_activity_s, facts.opened_s)
    tcp_in_flight = None if first_send is None or blinded is None else blinded(first_send)
    return combine(network, app, app_first_send_s=first_send, tcp_in_flight=tcp_in_flight)


UpstreamModel = Callable[[Prediction | None, SessionFacts], UpstreamPrediction]
"""A tier's prediction of a faulted session's upstream leg, from its client leg's."""


def leg_outcome(leg: LegFacts) -> tuple[Literal["closed", "pooled", "held"], float | None, float | None]:
    """What became of an upstream leg, from its events after the fault: closed (the
    backend's socket gone, and its process when it has one) at a time, else pooled (the tier
    put it back) at a time, else held. Returns (outcome, closed_s, pooled_s)."""
    plain = [Event(e.t, e.what.removeprefix(UPSTREAM), e.detail) for e in leg.events
             if e.what.removeprefix(UPSTREAM) in ("socket-gone", "socket-released", "process-exit")]
    gone = outcome(plain, needs_process=leg.pid is not None)
    pooled = next((e.t for e in sort_events(leg.events)
                   if e.what == UPSTREAM + "pooled" and e.t >= 0), None)
    if gone.reclaimed:
        return "closed", gone.reclaim_s, pooled
    return ("pooled" if pooled is not None else "held"), None, pooled


def leg_record(leg: LegFacts, prediction: UpstreamPrediction | None) -> LegRecord:
    """The upstream leg's record, against the tier's prediction when there is one."""
    what, closed_s, pooled_s = leg_outcome(leg)
    return LegRecord(
        server=leg.server, peer=leg.peer, outcome=what, pid=leg.pid,
        closed_s=None if closed_s is None else round(closed_s, 4),
        pooled_s=None if pooled_s is None else round(pooled_s, 4),
        predicted_outcome=None if prediction is None else prediction.outcome,
        predicted_s=None if prediction is None or prediction.at_s is None else round(prediction.at_s, 3),
        mechanism=None if prediction is None else prediction.mechanism,
        formula=None if prediction is None else prediction.formula)


@dataclass(frozen=True)
class Assessed:
    """One session's record, with the full prediction behind its ``predicted_s``."""

    record: SessionRecord
    prediction: Prediction | None


def _timeline(facts: SessionFacts, fault_type: str) -> list[Event]:
    events = list(facts.events)
    if facts.upstream is not None:
        events.extend(facts.upstream.events)
    opened = facts.opened_detail if facts.opened_detail is not None else facts.client
    events.append(Event(round(facts.opened_s, 4), "opened", opened or ""))
    events.append(Event(round(facts.last_activity_s, 4), "last-activity"))
    if facts.faulted:
        events.append(Event(0.0, "fault", fault_type))
    if facts.server_error is not None:
        at, kind = facts.server_error
        events.append(Event(round(at, 4), "server-error", kind))
    if facts.alive_check is not None:
        at, ok, detail = facts.alive_check
        events.append(Event(round(at, 4), "alive-check", "ok" if ok else f"failed: {detail}"))
    if facts.reconnect is not None:
        started, took, how, detail = facts.reconnect
        events.append(Event(round(started, 4), "reconnect-started"))
        events.append(Event(round(started + took, 4), "reconnect-ended",
                            f"{how}: {detail}" if detail else how))
    return sort_events(events)


def _anchor(pred: Prediction, out: Outcome) -> Prediction:
    """What a tier's upstream prediction counts from: the client leg's reclaim as measured
    when it was reclaimed (the tier acts on what really happened to it), else as predicted."""
    if not out.reclaimed or out.reclaim_s is None:
        return pred
    return Prediction(reclaim_s=out.reclaim_s, mechanism=pred.mechanism,
                      formula=f"the client leg reclaimed at {format_seconds(out.reclaim_s)} s (measured)")


def assess(facts: SessionFacts, settings: Effective, fault: FaultModel, heartbeat: Heartbeat, *,
           fault_type: str, needs_process: bool, upstream: UpstreamModel | None = None) -> Assessed:
    """One session: its timeline, what happened, and (faulted) what should have: its record
    and the full prediction behind it (``upstream``: a tier's model of its upstream legs)."""
    events = _timeline(facts, fault_type)
    out = outcome(events, needs_process=needs_process, user_timeout_set=settings.user_timeout_s > 0,
                  zero_window=bool(getattr(fault, "zero_window", False)))
    pred = fault.predict(settings, facts, heartbeat) if facts.faulted else None
    leg = None
    if facts.upstream is not None:
        leg_pred = None
        if upstream is not None and pred is not None:
            leg_pred = upstream(_anchor(pred, out), facts)
        leg = leg_record(facts.upstream, leg_pred)
    alive = None if facts.alive_check is None else facts.alive_check[1]
    again = getattr(fault, "reconnect_prediction", None)
    expected_again = again() if facts.reconnect is not None and again is not None else None
    record = SessionRecord(
        id=facts.id, faulted=facts.faulted, client=facts.client, server=facts.server,
        server_peer=facts.server_peer, server_pid=facts.pid, reclaimed=out.reclaimed,
        reclaim_s=out.reclaim_s, predicted_s=None if pred is None else pred.reclaim_s,
        mechanism=out.mechanism, predicted_mechanism=None if pred is None else pred.mechanism,
        alive_at_end=alive, events=tuple(EventRecord(e.t, e.what, e.detail) for e in events),
        client_error=facts.client_error, upstream=leg,
        reconnect_s=None if facts.reconnect is None else round(facts.reconnect[1], 4),
        reconnect_outcome=None if facts.reconnect is None else facts.reconnect[2],
        predicted_reconnect_s=None if expected_again is None else expected_again.at_s,
        predicted_reconnect_mechanism=None if expected_again is None else expected_again.mechanism)
    return Assessed(record, pred)


def headline(predictions: Sequence[Prediction]) -> Prediction | None:
    """The scenario's prediction: the latest of its faulted sessions' (never = latest)."""
    return max(predictions, key=lambda p: float("inf") if p.reclaim_s is None else p.reclaim_s,
               default=None)


@dataclass(frozen=True)
class Conditions:
    """What holds for every session of a scenario."""

    settings: Effective
    fault: FaultModel
    heartbeat: Heartbeat
    fault_type: str
    needs_process: bool
    upstream: UpstreamModel | None = None   # a tier's model of its upstream legs


@dataclass(frozen=True)
class Assessment:
    """A scenario's sessions judged: records, the headline prediction and the verdict."""

    sessions: tuple[Assessed, ...]
    headline: Prediction | None
    verdict: VerdictName
    reason: str
    summary: SummaryRecord
    deadline_s: float | None = None
    reconnect: ReconnectPrediction | None = None   # syn-blackhole: the clients' reconnects

    def records(self, listed: Callable[[SessionRecord], bool] = lambda _: True) -> tuple[SessionRecord, ...]:
        return tuple(a.record for a in self.sessions if listed(a.record))


def assess_all(facts: Sequence[SessionFacts], conditions: Conditions, expect: Expectations,
               deadline_s: float) -> Assessment:
    """Every session assessed, and the scenario's verdict on them."""
    c = conditions
    done = tuple(assess(f, c.settings, c.fault, c.heartbeat, fault_type=c.fault_type,
                        needs_process=c.needs_process, upstream=c.upstream) for f in facts)
    top = headline([a.prediction for a in done if a.prediction is not None])
    results = [a.record for a in done]
    again = getattr(c.fault, "reconnect_prediction", None)
    reconnect = again() if again is not None else None
    verdict = judge(expect, results, deadline_s=deadline_s, prediction=top)
    return Assessment(sessions=done, headline=top, verdict=verdict.verdict, reason=verdict.reason,
                      summary=summarize(results), deadline_s=deadline_s, reconnect=reconnect)


def bound_record(bound: LossBound, deadline_s: float | None, faulted: int) -> JsonObject:
    """What results.json says of a bound: its kind, the earliest reclaim, and by the deadline
    the chance of a reclaim and the binomial range of reclaimed counts it allows."""
    earliest = None if bound.earliest_s is None else round(bound.earliest_s, 3)
    out: dict[str, Json] = {"kind": bound.kind, "loss": bound.loss, "earliest_s": earliest,
                            "point": False, "text": bound.describe(deadline_s)}
    p = None if deadline_s is None else bound.p_by(deadline_s)
    if deadline_s is not None and p is not None:
        lo, hi = binomial_range(faulted, p)
        out.update({"deadline_s": deadline_s, "p_by_deadline": round(p, 4),
                    "expected_by_deadline": round(p * faulted, 2), "faulted": faulted,
                    "binomial_range": [lo, hi if bound.kind == "distribution" else faulted]})
    return out


def prediction_record(p: Prediction | None, deadline_s: float | None = None, faulted: int = 0,
                      reconnect: ReconnectPrediction | None = None) -> PredictionRecord | None:
    if p is None:
        return None
    return PredictionRecord(reclaim_s=None if p.reclaim_s is None else round(p.reclaim_s, 3),
                            mechanism=p.mechanism, formula=p.formula, slack_s=round(p.slack_s, 3),
                            bound=None if p.bound is None else bound_record(p.bound, deadline_s, faulted),
                            reconnect=None if reconnect is None else {
                                "outcome": reconnect.outcome, "at_s": reconnect.at_s,
                                "mechanism": reconnect.mechanism, "formula": reconnect.formula,
                                "slack_s": round(reconnect.slack_s, 3)})


@dataclass(frozen=True)
class ScenarioHead:
    """What a scenario's record says about the scenario itself (all but its sessions)."""

    name: str
    file: str
    about: str
    backend: str
    layer: str
    fault: str
    fault_detail: str
    target: TargetRecord
    activity: str
    expect: JsonObject
    deadline_s: float
    observed_s: float
    kernel: KernelRecord
    lab: JsonObject
    observer: ObserverRecord
    duration_s: float


def scenario_record(head: ScenarioHead, assessment: Assessment,
                    listed: Callable[[SessionRecord], bool] = lambda _: True,
                    load: LoadRecord | None = None) -> ScenarioRecord:
    """The scenario's record: its head, verdict, headline and the sessions ``listed``."""
    return ScenarioRecord(
        name=head.name, file=head.file, about=head.about, verdict=assessment.verdict,
        reason=assessment.reason, backend=head.backend, layer=head.layer, fault=head.fault,
        fault_detail=head.fault_detail, target=head.target, activity=head.activity,
        expect=head.expect, deadline_s=head.deadline_s, observed_s=head.observed_s,
        prediction=prediction_record(assessment.headline, assessment.deadline_s,
                                     assessment.summary.faulted, assessment.reconnect),
        kernel=head.kernel, lab=head.lab,
        observer=head.observer, duration_s=head.duration_s,
        sessions=assessment.records(listed), summary=assessment.summary, load=load)
