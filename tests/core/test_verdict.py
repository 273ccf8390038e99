"""Verdicts: every expectation, pass and fail, and the texts that explain them."""

from __future__ import annotations

import pytest

from harness.core.prediction import Prediction
from harness.core.records import SessionRecord
from harness.core.verdict import Expectations, Verdict, judge

KEEPALIVE_DEFAULTS = Prediction(
    reclaim_s=7875.0,
    mechanism="keepalive",
    formula="last activity 0 s + idle 7200 s (OS default) + 9 (OS default) × interval 75 s "
    "(OS default) = 7875 s",
)


def faulted(id: int, reclaim_s: float | None, mechanism: str | None = "keepalive") -> SessionRecord:
    return SessionRecord(id=id, faulted=True, reclaimed=reclaim_s is not None,
                         reclaim_s=reclaim_s, predicted_s=4.0,
                         mechanism=mechanism if reclaim_s is not None else None,
                         alive_at_end=None)


def survivor(id: int, alive: bool | None = True, reclaim_s: float | None = None) -> SessionRecord:
    return SessionRecord(id=id, faulted=False, reclaimed=reclaim_s is not None,
                         reclaim_s=reclaim_s, predicted_s=None, mechanism=None,
                         alive_at_end=alive)


WITHIN_8 = Expectations(reclaimed_within=8.0, still_held_after=None,
                        survivors_untouched=False, mechanism=None)


# --- reclaimed_within ----------------------------------------------------------------------


def test_reclaimed_within_passes_and_says_the_max() -> None:
    sessions = [faulted(i, 4.0 + i / 100) for i in range(14)]
    verdict = judge(WITHIN_8, sessions, deadline_s=30)
    assert verdict.verdict == "pass"
    assert verdict.passed
    assert verdict.reason == "14 of 14 faulted sessions reclaimed within 8 s (max 4.13 s)"


def test_reclaimed_within_fails_for_sessions_still_held_and_quotes_the_prediction() -> None:
    sessions = [faulted(i, 4.0) for i in range(17)] + [faulted(i, None) for i in (17, 18, 19)]
    verdict = judge(WITHIN_8, sessions, deadline_s=30, prediction=KEEPALIVE_DEFAULTS)
    assert verdict.verdict == "fail"
    assert not verdict.passed
    assert verdict.reason == (
        "3 of 20 faulted sessions not reclaimed within 8 s (deadline 30 s): "
        "sessions 17, 18, 19 still held at the deadline; predicted 7875 s (keepalive): "
        + KEEPALIVE_DEFAULTS.formula
    )


def test_reclaimed_within_fails_for_a_late_reclaim() -> None:
    verdict = judge(WITHIN_8, [faulted(0, 4.0), faulted(1, 9.125)], deadline_s=30)
    assert verdict.verdict == "fail"
    assert verdict.reason == (
        "1 of 2 faulted sessions not reclaimed within 8 s (deadline 30 s): "
        "session 1 reclaimed at 9.125 s"
    )


def test_reclaimed_exactly_at_the_limit_passes() -> None:
    assert judge(WITHIN_8, [faulted(0, 8.0)], deadline_s=30).verdict == "pass"


def test_not_reclaimed_is_never_a_pass_even_when_the_deadline_ends_before_the_limit() -> None:
    # Observation stopped at 30 s; the limit is 60 s. Nothing shows a reclaim: fail.
    exp = Expectations(reclaimed_within=60.0, still_held_after=None,
                       survivors_untouched=False, mechanism=None)
    verdict = judge(exp, [faulted(0, 5.0), faulted(1, None)], deadline_s=30)
    assert verdict.verdict == "fail"
    assert "1 of 2 faulted sessions not reclaimed within 60 s" in verdict.reason
    assert "ends observation before 60 s" in verdict.reason


def test_a_prediction_of_never_is_quoted_as_never() -> None:
    never = Prediction(reclaim_s=None, mechanism="none", formula="never: keepalive is off")
    verdict = judge(WITHIN_8, [faulted(0, None)], deadline_s=30, prediction=never)
    assert verdict.reason.endswith("; predicted never (none): never: keepalive is off")


def test_long_session_lists_are_cut_short() -> None:
    verdict = judge(WITHIN_8, [faulted(i, None) for i in range(25)], deadline_s=30)
    assert "sessions 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ... (+15 more) still held" in verdict.reason


# --- still_held_after ----------------------------------------------------------------------

HELD_30 = Expectations(reclaimed_within=None, still_held_after=30.0,
                       survivors_untouched=False, mechanism=None)


def test_still_held_after_passes_when_nothing_was_reclaimed() -> None:
    verdict = judge(HELD_30, [faulted(0, None), faulted(1, None)], deadline_s=40)
    assert verdict.verdict == "pass"
    assert verdict.reason == (
        "2 of 2 faulted sessions still held after 30 s (none reclaimed by the deadline 40 s)"
    )


def test_still_held_after_passes_when_reclaimed_later() -> None:
    verdict = judge(HELD_30, [faulted(0, 35.5), faulted(1, None)], deadline_s=40)
    assert verdict.verdict == "pass"
    assert "1 reclaimed later, the first at 35.5 s" in verdict.reason


def test_still_held_after_fails_for_an_early_reclaim() -> None:
    verdict = judge(HELD_30, [faulted(4, 1.2), faulted(5, None)], deadline_s=40)
    assert verdict.verdict == "fail"
    assert verdict.reason == "session 4 reclaimed at 1.2 s, before still_held_after 30 s"


def test_still_held_after_fails_for_several_early_reclaims() -> None:
    verdict = judge(HELD_30, [faulted(4, 1.2), faulted(6, 30.0), faulted(7, None)],
                    deadline_s=40)
    assert verdict.reason == (
        "2 of 3 faulted sessions reclaimed before still_held_after 30 s "
        "(session 4 at 1.2 s, session 6 at 30 s)"
    )


def test_still_held_after_beyond_the_deadline_cannot_pass() -> None:
    verdict = judge(HELD_30, [faulted(0, None)], deadline_s=20)
    assert verdict.verdict == "fail"
    assert "observation stopped at the deadline 20 s" in verdict.reason


# --- survivors_untouched -------------------------------------------------------------------

SURVIVORS = Expectations(reclaimed_within=None, still_held_after=None,
                         survivors_untouched=True, mechanism=None)


def test_survivors_untouched_passes() -> None:
    sessions = [faulted(0, 4.0), survivor(1), survivor(2)]
    verdict = judge(SURVIVORS, sessions, deadline_s=30)
    assert verdict.verdict == "pass"
    assert verdict.reason == "2 of 2 survivors untouched (all answered a final query)"


def test_survivors_killed_are_named_with_why() -> None:
    sessions = [faulted(0, 4.0)] + [survivor(i) for i in (1, 2, 4, 5, 6, 8, 9, 10)]
    sessions += [survivor(3, alive=False, reclaim_s=2.5), survivor(7, alive=False)]
    verdict = judge(SURVIVORS, sessions, deadline_s=30)
    assert verdict.verdict == "fail"
    assert verdict.reason == (
        "2 of 10 survivors killed (sessions 3, 7): session 3 reclaimed at 2.5 s, "
        "session 7 failed its final query"
    )


def test_a_survivor_reclaimed_fails_even_if_it_answered() -> None:
    verdict = judge(SURVIVORS, [faulted(0, 4.0), survivor(1, alive=True, reclaim_s=3.0)],
                    deadline_s=30)
    assert verdict.verdict == "fail"
    assert verdict.reason.startswith("1 of 1 survivors killed (session 1)")


def test_a_survivor_never_checked_cannot_pass() -> None:
    verdict = judge(SURVIVORS, [faulted(0, 4.0), survivor(1, alive=None)], deadline_s=30)
    assert verdict.verdict == "fail"
    assert "1 of 1 survivors never checked at the end (session 1)" in verdict.reason


def test_survivors_untouched_with_every_session_faulted_passes() -> None:
    verdict = judge(SURVIVORS, [faulted(0, 4.0), faulted(1, 4.1)], deadline_s=30)
    assert verdict.verdict == "pass"
    assert verdict.reason == "no survivors to check: every session was faulted"


# --- mechanism -----------------------------------------------------------------------------

KEEPALIVE = Expectations(reclaimed_within=None, still_held_after=None,
                         survivors_untouched=False, mechanism="keepalive")


def test_mechanism_passes_when_every_reclaimed_session_shows_it() -> None:
    verdict = judge(KEEPALIVE, [faulted(0, 4.0), faulted(1, None)], deadline_s=30)
    assert verdict.verdict == "pass"
    assert verdict.reason == "1 of 1 reclaimed faulted sessions reclaimed by keepalive"


def test_mechanism_fails_and_groups_what_was_seen() -> None:
    sessions = [faulted(0, 4.0), faulted(1, 0.1, "reset"), faulted(2, 0.1, "reset"),
                faulted(3, 5.0, "closed")]
    verdict = judge(KEEPALIVE, sessions, deadline_s=30)
    assert verdict.verdict == "fail"
    assert verdict.reason == (
        "3 of 4 reclaimed faulted sessions not reclaimed by keepalive: "
        "sessions 1, 2 by reset, session 3 by closed"
    )


def test_mechanism_with_nothing_reclaimed_cannot_pass() -> None:
    verdict = judge(KEEPALIVE, [faulted(0, None)], deadline_s=30)
    assert verdict.verdict == "fail"
    assert "no faulted session was reclaimed" in verdict.reason


# --- across expectations -------------------------------------------------------------------


def test_no_faulted_session_fails() -> None:
    verdict = judge(WITHIN_8, [survivor(0), survivor(1)], deadline_s=30)
    assert verdict.verdict == "fail"
    assert verdict.reason.startswith("no session was faulted")


def test_no_faulted_session_fails_even_without_expectations() -> None:
    assert judge(Expectations(), [], deadline_s=30).verdict == "fail"


def test_only_failures_are_given_when_it_fails_joined_with_semicolons() -> None:
    exp = Expectations(reclaimed_within=8.0, still_held_after=None,
                       survivors_untouched=True, mechanism="keepalive")
    sessions = [faulted(0, None), faulted(1, 4.0), survivor(2, alive=False)]
    verdict = judge(exp, sessions, deadline_s=30)
    assert verdict.verdict == "fail"
    assert len(verdict.reasons) == 2
    assert verdict.reasons[0].startswith("1 of 2 faulted sessions not reclaimed within 8 s")
    assert verdict.reasons[1].startswith("1 of 1 survivors killed")
    assert verdict.reason == "; ".join(verdict.reasons)


def test_a_pass_gives_one_reason_per_expectation() -> None:
    exp = Expectations(reclaimed_within=8.0, still_held_after=None,
                       survivors_untouched=True, mechanism="keepalive")
    verdict = judge(exp, [faulted(0, 4.0), survivor(1)], deadline_s=30)
    assert verdict.verdict == "pass"
    assert len(verdict.reasons) == 3


def test_no_expectations_passes_and_says_so() -> None:
    verdict = judge(Expectations(), [faulted(0, 4.0), faulted(1, None)], deadline_s=30)
    assert verdict.verdict == "pass"
    assert verdict.reason == "no expectations set; 1 of 2 faulted sessions reclaimed"


def test_verdict_refuses_other_values() -> None:
    with pytest.raises(ValueError, match="verdict"):
        Verdict("error", ())  # type: ignore[arg-type]
