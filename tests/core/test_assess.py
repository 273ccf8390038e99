"""The assessment core: facts in, records, headline and verdict out (pure; a fake fault
model stands in for a fault's prediction)."""

from __future__ import annotations

from harness.core.assess import Conditions, SessionFacts, assess, assess_all
from harness.core.prediction import Effective, KernelDefaults, Prediction, SocketSettings, effective
from harness.core.timeline import Event
from harness.core.verdict import Expectations

SETTINGS: Effective = effective(SocketSettings(keepalive=True, idle_s=1, interval_s=1, count=2),
                                KernelDefaults())


class AtLastActivityPlus:
    """Predicts keepalive at last activity + ``after``; counts its calls."""

    def __init__(self, after: float) -> None:
        self.after, self.calls = after, 0

    def predict(self, settings: Effective, facts: SessionFacts, heartbeat: object) -> Prediction:
        self.calls += 1
        return Prediction(reclaim_s=facts.last_activity_s + self.after, mechanism="keepalive",
                          formula="fake")


def _silent(last: float, opened: float) -> tuple[Prediction | None, float | None]:
    return None, None


def faulted(id: int, gone_at: float | None) -> SessionFacts:
    seen = [Event(1.0, "probe"), Event(2.0, "probe")]
    if gone_at is not None:
        seen.append(Event(gone_at, "socket-gone"))
    return SessionFacts(id=id, faulted=True, opened_s=-2.0, last_activity_s=-1.0,
                        events=tuple(seen), client=f"10.77.0.2:{4000 + id}")


def test_a_faulted_session_gets_its_timeline_outcome_and_prediction() -> None:
    fault = AtLastActivityPlus(3.0)
    done = assess(faulted(0, 2.1), SETTINGS, fault, _silent, fault_type="blackhole", needs_process=False)
    record = done.record
    assert [e.what for e in record.events] == ["opened", "last-activity", "fault", "probe", "probe",
                                               "socket-gone"]
    assert record.events[0].detail == "10.77.0.2:4000"
    assert record.reclaimed and record.reclaim_s == 2.1 and record.mechanism == "keepalive"
    assert record.predicted_s == 2.0 and done.prediction is not None and fault.calls == 1


def test_a_survivor_is_not_predicted_and_a_failed_check_kills_it() -> None:
    fault = AtLastActivityPlus(3.0)
    survivor = SessionFacts(id=1, faulted=False, opened_s=-2.0, last_activity_s=-1.0,
                            alive_check=(5.0, False, "reset by peer"))
    done = assess(survivor, SETTINGS, fault, _silent, fault_type="blackhole", needs_process=False)
    assert fault.calls == 0 and done.prediction is None and done.record.predicted_s is None
    assert done.record.events[-1].detail == "failed: reset by peer"
    assert done.record.survivor_killed


def test_the_headline_is_the_latest_prediction_and_the_verdict_reads_the_records() -> None:
    fault = AtLastActivityPlus(3.0)
    facts = [faulted(0, 2.1), faulted(1, None)]
    facts[1] = SessionFacts(**{**facts[1].__dict__, "last_activity_s": -0.5})
    conditions = Conditions(settings=SETTINGS, fault=fault, heartbeat=_silent, fault_type="blackhole",
                            needs_process=False)
    assessment = assess_all(facts, conditions, Expectations(reclaimed_within=3.0), deadline_s=4.0)
    assert assessment.headline is not None and assessment.headline.reclaim_s == 2.5
    assert assessment.verdict == "fail" and "1 of 2" in assessment.reason
    assert assessment.summary.faulted == 2 and assessment.summary.reclaimed == 1
    assert [r.id for r in assessment.records(lambda r: r.reclaimed)] == [0]
