"""The verdict on a bound (random loss) and on reconnects (syn-blackhole)."""

from __future__ import annotations

from harness.core.loss import LossBound
from harness.core.prediction import Prediction
from harness.core.records import SessionRecord
from harness.core.verdict import Expectations, judge

BOUND = LossBound("distribution", 0.5, 2.0, ((2.0, 0.5), (3.0, 0.3), (4.0, 0.15)))
PRED = Prediction(reclaim_s=2.0, mechanism="keepalive", formula="...", bound=BOUND)


def faulted(i: int, at: float | None, earliest: float = 2.0) -> SessionRecord:
    return SessionRecord(id=i, faulted=True, reclaimed=at is not None, reclaim_s=at, predicted_s=earliest,
                         mechanism="keepalive" if at is not None else None)


def test_within_the_bound_passes_and_says_it_is_not_a_point() -> None:
    v = judge(Expectations(), [faulted(0, 2.05), faulted(1, 3.1), faulted(2, 2.1), faulted(3, None)],
              deadline_s=5.0, prediction=PRED)
    assert v.passed, v.reason
    assert "not a point" in v.reason and "3 of 4 reclaimed by the deadline 5 s, P 0.950" in v.reason


def test_a_reclaim_before_the_earliest_possible_time_fails() -> None:
    v = judge(Expectations(), [faulted(0, 1.5), faulted(1, 2.2)], deadline_s=5.0, prediction=PRED)
    assert not v.passed and "before the earliest possible time" in v.reason and "session 0" in v.reason


def test_too_few_reclaimed_for_the_chance_fails() -> None:
    # P 0.95 each: none of 8 reclaimed has a chance far below 0.1 %
    v = judge(Expectations(), [faulted(i, None) for i in range(8)], deadline_s=5.0, prediction=PRED)
    assert not v.passed and "outside it" in v.reason


def test_a_floor_only_checks_the_low_side() -> None:
    floor = LossBound("lower-bound", 0.5, 2.0, ((2.0, 0.01),))
    pred = Prediction(reclaim_s=2.0, mechanism="user-timeout", formula="...", bound=floor)
    v = judge(Expectations(), [faulted(i, 2.1) for i in range(6)], deadline_s=5.0, prediction=pred)
    assert v.passed, v.reason


def again(i: int, took: float | None, how: str) -> SessionRecord:
    return SessionRecord(id=i, faulted=True, reclaimed=True, reclaim_s=0.01, predicted_s=0.0,
                         mechanism="closed", reconnect_s=took, reconnect_outcome=how,
                         predicted_reconnect_s=7.0, predicted_reconnect_mechanism="syn-retries")


def test_reconnect_within() -> None:
    ok = judge(Expectations(reconnect_within=7.5), [again(0, 7.1, "timed-out"), again(1, 7.2, "timed-out")],
               deadline_s=8.0)
    assert ok.passed and "2 of 2 reconnect attempts ended within 7.5 s" in ok.reason
    late = judge(Expectations(reconnect_within=7.5), [again(0, 8.0, "hanging")], deadline_s=8.0)
    assert not late.passed and "session 0 hanging after 8 s" in late.reason


def test_reconnect_fields_round_trip() -> None:
    r = again(3, 7.1234, "timed-out")
    data = r.to_json()
    assert data["reconnect_s"] == 7.123 and data["reconnect_outcome"] == "timed-out"
    back = SessionRecord.from_json(data)
    assert back.reconnect_outcome == "timed-out" and back.predicted_reconnect_s == 7.0
    assert "reconnect_s" not in faulted(0, 1.0).to_json()
