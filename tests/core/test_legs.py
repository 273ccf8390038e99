"""A tier's upstream legs, as assessment, the verdict, the records and the reports take them
(pure: a fake tier model stands in for pgbouncer's or HAProxy's prediction)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from harness.core.assess import (
    Conditions,
    LegFacts,
    SessionFacts,
    UpstreamPrediction,
    assess,
    assess_all,
    leg_outcome,
    scenario_record,
)
from harness.core.prediction import Effective, KernelDefaults, Prediction, SocketSettings, effective
from harness.core.records import RunRecord, SessionRecord
from harness.core.timeline import Event
from harness.core.verdict import Expectations, judge
from harness.report import html, markdown, messages, plots
from harness.scenario.loader import load_text

SETTINGS: Effective = effective(SocketSettings(keepalive=True, idle_s=1, interval_s=1, count=2),
                                KernelDefaults())
SCHEMA = json.loads((Path(__file__).parents[2] / "harness/report/results.schema.json").read_text())


class Keepalive:
    def predict(self, settings: Effective, facts: SessionFacts, heartbeat: object) -> Prediction:
        return Prediction(reclaim_s=facts.last_activity_s + 3.0, mechanism="keepalive", formula="1 + 1 x 2")


def _silent(last: float, opened: float) -> tuple[Prediction | None, float | None]:
    return None, None


def closes_with_client(client: Prediction | None, facts: SessionFacts) -> UpstreamPrediction:
    if client is None or client.reclaim_s is None:
        return UpstreamPrediction("held", None, "pool", "the client leg is never reclaimed")
    return UpstreamPrediction("closed", client.reclaim_s, "tier-closed", "closed with the client leg")


def leg(*events: Event, pid: int | None = None) -> LegFacts:
    return LegFacts(server="127.0.0.1:5432", peer="127.0.0.1:40100", pid=pid, events=events)


def session(id: int, upstream: LegFacts | None, faulted: bool = True) -> SessionFacts:
    return SessionFacts(id=id, faulted=faulted, opened_s=-2.0, last_activity_s=-1.0,
                        events=(Event(1.0, "probe"), Event(2.0, "socket-gone")), upstream=upstream)


def test_a_leg_is_closed_when_its_socket_and_its_process_are_gone() -> None:
    assert leg_outcome(leg(Event(2.1, "upstream-socket-gone"), Event(2.2, "upstream-process-exit"),
                           pid=7)) == ("closed", 2.2, None)
    # the backend's socket went but its process lives: not closed yet
    assert leg_outcome(leg(Event(2.1, "upstream-socket-gone"), pid=7))[0] == "held"
    assert leg_outcome(leg(Event(2.1, "upstream-socket-released"))) == ("closed", 2.1, None)


def test_a_leg_the_tier_put_back_is_pooled_and_one_never_touched_is_held() -> None:
    assert leg_outcome(leg(Event(2.0, "upstream-pooled"))) == ("pooled", None, 2.0)
    # pooled before the fault says nothing about the fault
    assert leg_outcome(leg(Event(-3.0, "upstream-pooled"))) == ("held", None, None)
    assert leg_outcome(leg(Event(2.0, "upstream-pooled"), Event(5.0, "upstream-socket-gone"))) \
        == ("closed", 5.0, 2.0)


def test_a_faulted_sessions_record_carries_its_leg_against_the_tiers_prediction() -> None:
    done = assess(session(0, leg(Event(2.05, "upstream-socket-gone"))), SETTINGS, Keepalive(), _silent,
                  fault_type="blackhole", needs_process=False, upstream=closes_with_client)
    up = done.record.upstream
    assert up is not None
    assert (up.outcome, up.closed_s, up.predicted_outcome, up.predicted_s, up.mechanism) == \
        ("closed", 2.05, "closed", 2.0, "tier-closed")
    # the leg's events are in the session's timeline, and do not decide the client leg
    assert "upstream-socket-gone" in [e.what for e in done.record.events]
    assert done.record.reclaim_s == 2.0


def test_a_survivors_leg_is_recorded_without_a_prediction_and_a_plain_target_has_none() -> None:
    survivor = assess(session(1, leg(), faulted=False), SETTINGS, Keepalive(), _silent,
                      fault_type="blackhole", needs_process=False, upstream=closes_with_client)
    assert survivor.record.upstream is not None and survivor.record.upstream.predicted_outcome is None
    plain = assess(session(2, None), SETTINGS, Keepalive(), _silent, fault_type="blackhole",
                   needs_process=False)
    assert plain.record.upstream is None and "upstream" not in plain.record.to_json()


def _records(*legs: LegFacts | None) -> list[SessionRecord]:
    return [assess(session(i, lg), SETTINGS, Keepalive(), _silent, fault_type="blackhole",
                   needs_process=False, upstream=closes_with_client).record for i, lg in enumerate(legs)]


def test_the_upstream_expectation_passes_only_when_every_leg_ended_so() -> None:
    closed = leg(Event(2.0, "upstream-socket-gone"))
    ok = judge(Expectations(reclaimed_within=5, upstream="closed"), _records(closed, closed), deadline_s=9)
    assert ok.passed and "2 of 2 faulted sessions' upstream legs closed" in ok.reason
    bad = judge(Expectations(reclaimed_within=5, upstream="closed"),
                _records(closed, leg(Event(2.0, "upstream-pooled")), None), deadline_s=9)
    assert not bad.passed
    assert "2 of 3 faulted sessions' upstream legs not closed" in bad.reason
    assert "session 1 pooled at 2 s" in bad.reason and "session 2 no upstream leg" in bad.reason
    assert "predicted: closed with the client leg" in bad.reason


def _scenario_record():  # type: ignore[no-untyped-def]
    from harness.core.assess import ScenarioHead
    from harness.core.records import KernelRecord, ObserverRecord, TargetRecord

    facts = [session(0, leg(Event(2.0, "upstream-pooled"), Event(2.04, "upstream-socket-gone"))),
             session(1, leg(), faulted=False)]
    conditions = Conditions(settings=SETTINGS, fault=Keepalive(), heartbeat=_silent, fault_type="blackhole",
                            needs_process=False, upstream=closes_with_client)
    assessment = assess_all(facts, conditions, Expectations(reclaimed_within=5, upstream="closed"),
                            deadline_s=9)
    head = ScenarioHead(name="tier", file="tier.yaml", about="a tier", backend="local", layer="packet",
                        fault="blackhole", fault_detail="blackhole", target=TargetRecord("haproxy"),
                        activity="idle", expect={"reclaimed_within": "5s", "upstream": "closed"},
                        deadline_s=9, observed_s=3, kernel=KernelRecord(7200, 75, 9, 15),
                        lab={}, observer=ObserverRecord(0.01, 300, 0.1), duration_s=5)
    return scenario_record(head, assessment)


def test_records_with_legs_round_trip_and_match_the_schema() -> None:
    sc = _scenario_record()
    run = RunRecord(run_id="r", started_at="2026-12-03T00:00:00Z", scenarios=(sc,))
    data = run.to_json()
    assert RunRecord.from_json(json.loads(json.dumps(data))).to_json() == data
    Draft202012Validator(SCHEMA).validate(data)
    leg_json = data["scenarios"][0]["sessions"][0]["upstream"]  # type: ignore[index]
    assert leg_json["outcome"] == "closed" and leg_json["pooled_s"] == 2.0  # type: ignore[index]


def test_every_report_says_what_became_of_the_upstream_legs() -> None:
    sc = _scenario_record()
    predicted, measured = messages.upstream_lines(sc)
    assert predicted == "closed at 2 s (tier-closed)"
    assert measured == "1 upstream legs: 1 closed (max 2.04 s)"
    assert measured in messages.seen(sc)
    assert "their upstream legs closed" in messages.expected(sc)
    run = RunRecord(run_id="r", started_at="2026-12-03T00:00:00Z", scenarios=(sc,))
    assert "upstream leg" in html.render(run)
    assert measured in markdown.render(run)
    svg = plots.timeline(sc)
    assert "upstream leg pooled" in svg and "upstream socket gone" in svg


def test_expecting_an_upstream_of_a_target_without_one_is_refused_at_its_line(tmp_path: Path) -> None:
    from harness.errors import ScenarioError

    text = ("name: x\ntarget:\n  service: postgres\nsessions:\n  count: 1\nfault:\n  type: blackhole\n"
            "expect:\n  reclaimed_within: 5s\n  upstream: closed\n")
    with pytest.raises(ScenarioError) as info:
        load_text(text, str(tmp_path / "x.yaml"))
    assert "x.yaml:10" in str(info.value) and "upstream" in str(info.value)
