"""The verdict: a scenario's expectations against what its sessions did.

The rule throughout is that a pass needs evidence. A session still held when observation
stopped never counts as reclaimed in time, whatever the deadline; an expectation about a
mechanism that nothing showed fails. Every failure text says what was expected, what was
seen, and, where a prediction is known, why.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from harness.core.loss import LossBound, binomial_range
from harness.core.prediction import Prediction, format_seconds
from harness.core.records import SessionRecord

# Past this many, session lists are cut short: a failure line must stay readable.
_MAX_LISTED = 10


@dataclass(frozen=True)
class Expectations:
    """A scenario's gate (the ``expect:`` block); ``None``/``False`` = not asked for."""

    reclaimed_within: float | None = None
    still_held_after: float | None = None
    survivors_untouched: bool = False
    mechanism: str | None = None
    upstream: str | None = None          # a tier's faulted sessions' upstream legs: closed | pooled | held
    reconnect_within: float | None = None   # syn-blackhole: every reconnect attempt ended within this


@dataclass(frozen=True)
class Verdict:
    """Pass or fail, with one reason per expectation (failures only, when it fails)."""

    verdict: Literal["pass", "fail"]
    reasons: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.verdict not in ("pass", "fail"):
            raise ValueError(f"verdict must be 'pass' or 'fail', got {self.verdict!r}")

    @property
    def passed(self) -> bool:
        """True when every expectation was met."""
        return self.verdict == "pass"

    @property
    def reason(self) -> str:
        """The reasons as one line, for results.json and the terminal."""
        return "; ".join(self.reasons)


def _ids(sessions: Sequence[SessionRecord]) -> str:
    """``session 4`` or ``sessions 3, 7, ...`` with a count of the rest."""
    ids = [str(s.id) for s in sessions]
    if len(ids) == 1:
        return f"session {ids[0]}"
    shown = ", ".join(ids[:_MAX_LISTED])
    more = f", ... (+{len(ids) - _MAX_LISTED} more)" if len(ids) > _MAX_LISTED else ""
    return f"sessions {shown}{more}"


def _at(session: SessionRecord) -> str:
    if session.reclaim_s is None:
        return "at an unknown time"
    return f"at {format_seconds(session.reclaim_s)} s"


def _predicted(prediction: Prediction | None) -> str:
    """The prediction as the 'why' of a failure, or nothing when none was made."""
    if prediction is None:
        return ""
    when = "never" if prediction.reclaim_s is None else f"{format_seconds(prediction.reclaim_s)} s"
    return f"; predicted {when} ({prediction.mechanism}): {prediction.formula}"


def _reclaimed_within(
    limit: float,
    faulted: Sequence[SessionRecord],
    deadline_s: float,
    prediction: Prediction | None,
) -> tuple[bool, str]:
    held = [s for s in faulted if not s.reclaimed or s.reclaim_s is None]
    late = [s for s in faulted if s.reclaimed and s.reclaim_s is not None and s.reclaim_s > limit]
    total = len(faulted)
    if not held and not late:
        worst = max(s.reclaim_s for s in faulted if s.reclaim_s is not None)
        return True, (
            f"{total} of {total} faulted sessions reclaimed within {format_seconds(limit)} s "
            f"(max {format_seconds(worst)} s)"
        )
    seen: list[str] = []
    if held:
        text = f"{_ids(held)} still held at the deadline"
        if deadline_s < limit:
            # Observation ended before the limit, but that is no evidence of a reclaim.
            text += f" (which ends observation before {format_seconds(limit)} s)"
        seen.append(text)
    seen.extend(f"session {s.id} reclaimed {_at(s)}" for s in late[:_MAX_LISTED])
    if len(late) > _MAX_LISTED:
        seen.append(f"{len(late) - _MAX_LISTED} more reclaimed late")
    return False, (
        f"{len(held) + len(late)} of {total} faulted sessions not reclaimed within "
        f"{format_seconds(limit)} s (deadline {format_seconds(deadline_s)} s): "
        f"{', '.join(seen)}{_predicted(prediction)}"
    )


def _still_held_after(
    limit: float, faulted: Sequence[SessionRecord], deadline_s: float
) -> tuple[bool, str]:
    early = [
        s for s in faulted if s.reclaimed and (s.reclaim_s is None or s.reclaim_s <= limit)
    ]
    unproven = [s for s in faulted if not s.reclaimed] if deadline_s < limit else []
    total = len(faulted)
    problems: list[str] = []
    if len(early) == 1:
        problems.append(
            f"session {early[0].id} reclaimed {_at(early[0])}, before still_held_after "
            f"{format_seconds(limit)} s"
        )
    elif early:
        listed = ", ".join(f"session {s.id} {_at(s)}" for s in early[:_MAX_LISTED])
        more = f", +{len(early) - _MAX_LISTED} more" if len(early) > _MAX_LISTED else ""
        problems.append(
            f"{len(early)} of {total} faulted sessions reclaimed before still_held_after "
            f"{format_seconds(limit)} s ({listed}{more})"
        )
    if unproven:
        problems.append(
            f"{len(unproven)} of {total} faulted sessions were still held when observation "
            f"stopped at the deadline {format_seconds(deadline_s)} s, before still_held_after "
            f"{format_seconds(limit)} s: nothing shows they were held past it"
        )
    if problems:
        return False, "; ".join(problems)
    later = [s.reclaim_s for s in faulted if s.reclaimed and s.reclaim_s is not None]
    if later:
        tail = f"{len(later)} reclaimed later, the first at {format_seconds(min(later))} s"
    else:
        tail = f"none reclaimed by the deadline {format_seconds(deadline_s)} s"
    return True, (
        f"{total} of {total} faulted sessions still held after {format_seconds(limit)} s "
        f"({tail})"
    )


def _survivors_untouched(survivors: Sequence[SessionRecord]) -> tuple[bool, str]:
    if not survivors:
        return True, "no survivors to check: every session was faulted"
    killed = [s for s in survivors if s.survivor_killed]
    unchecked = [s for s in survivors if not s.survivor_killed and s.alive_at_end is None]
    total = len(survivors)
    problems: list[str] = []
    if killed:
        how = ", ".join(
            f"session {s.id} reclaimed {_at(s)}"
            if s.reclaimed
            else f"session {s.id} failed its final query"
            for s in killed[:_MAX_LISTED]
        )
        problems.append(f"{len(killed)} of {total} survivors killed ({_ids(killed)}): {how}")
    if unchecked:
        problems.append(
            f"{len(unchecked)} of {total} survivors never checked at the end ({_ids(unchecked)}): "
            "survivors_untouched needs each to answer a final query"
        )
    if problems:
        return False, "; ".join(problems)
    return True, f"{total} of {total} survivors untouched (all answered a final query)"


def _mechanism(
    expected: str, faulted: Sequence[SessionRecord], prediction: Prediction | None
) -> tuple[bool, str]:
    reclaimed = [s for s in faulted if s.reclaimed]
    if not reclaimed:
        return False, (
            f"expected mechanism {expected}, but no faulted session was reclaimed, so "
            f"none showed it{_predicted(prediction)}"
        )
    wrong = [s for s in reclaimed if s.mechanism != expected]
    total = len(reclaimed)
    if not wrong:
        return True, f"{total} of {total} reclaimed faulted sessions reclaimed by {expected}"
    groups: dict[str, list[SessionRecord]] = {}
    for s in wrong:
        groups.setdefault(s.mechanism or "unknown", []).append(s)
    seen = ", ".join(f"{_ids(group)} by {name}" for name, group in groups.items())
    return False, (
        f"{len(wrong)} of {total} reclaimed faulted sessions not reclaimed by {expected}: "
        f"{seen}{_predicted(prediction)}"
    )


def _leg_seen(s: SessionRecord) -> str:
    leg = s.upstream
    if leg is None:
        return "no upstream leg"
    if leg.outcome == "closed" and leg.closed_s is not None:
        return f"closed at {format_seconds(leg.closed_s)} s"
    if leg.outcome == "pooled" and leg.pooled_s is not None:
        return f"pooled at {format_seconds(leg.pooled_s)} s"
    return leg.outcome


def _upstream(expected: str, faulted: Sequence[SessionRecord]) -> tuple[bool, str]:
    wrong = [s for s in faulted if s.upstream is None or s.upstream.outcome != expected]
    total = len(faulted)
    if not wrong:
        return True, f"{total} of {total} faulted sessions' upstream legs {expected}"
    seen = ", ".join(f"session {s.id} {_leg_seen(s)}" for s in wrong[:_MAX_LISTED])
    more = f", ... (+{len(wrong) - _MAX_LISTED} more)" if len(wrong) > _MAX_LISTED else ""
    why = next((s.upstream.formula for s in wrong if s.upstream is not None and s.upstream.formula), None)
    return False, (f"{len(wrong)} of {total} faulted sessions' upstream legs not {expected}: {seen}{more}"
                   + (f"; predicted: {why}" if why else ""))


# Kernel timers fire late, never early; this covers the observer's sampling and clock reads.
EARLY_TOLERANCE_S = 0.05


def _within_bound(bound: LossBound, faulted: Sequence[SessionRecord], deadline_s: float) -> tuple[bool, str]:
    """Random loss: no session reclaimed before its earliest possible time, and the count
    reclaimed by the deadline inside the binomial range the chance of a reclaim allows."""
    problems: list[str] = []
    early = [s for s in faulted if s.reclaimed and s.reclaim_s is not None and s.predicted_s is not None
             and s.reclaim_s < s.predicted_s - EARLY_TOLERANCE_S]
    if early:
        listed = ", ".join(f"session {s.id} {_at(s)} (earliest {format_seconds(s.predicted_s or 0)} s)"
                           for s in early[:_MAX_LISTED])
        problems.append(f"{len(early)} of {len(faulted)} faulted sessions reclaimed before the earliest"
                        f" possible time under {bound.loss:.0%} loss: {listed}")
    by = sum(1 for s in faulted if s.reclaimed and s.reclaim_s is not None and s.reclaim_s <= deadline_s)
    p = bound.p_by(deadline_s)
    if p is None:
        share = f"{by} of {len(faulted)} reclaimed by the deadline (their chance is not modelled)"
    else:
        lo, hi = binomial_range(len(faulted), p)
        if bound.kind != "distribution":
            hi = len(faulted)
        word = "P" if bound.kind == "distribution" else "P >="
        share = (f"{by} of {len(faulted)} reclaimed by the deadline {format_seconds(deadline_s)} s,"
                 f" {word} {p:.3f} each: the binomial 99.9% range is {lo} to {hi}")
        if not lo <= by <= hi:
            problems.append(f"{share}: outside it")
    if problems:
        return False, "; ".join(problems)
    first = min((s.reclaim_s for s in faulted if s.reclaimed and s.reclaim_s is not None), default=None)
    seen = "none reclaimed" if first is None else f"the first at {format_seconds(first)} s"
    return True, (f"within the bound (not a point): none reclaimed before the earliest possible"
                  f" {format_seconds(bound.earliest_s or 0)} s ({seen}); {share}")


def _reconnect_within(limit: float, faulted: Sequence[SessionRecord]) -> tuple[bool, str]:
    tried = [s for s in faulted if s.reconnect_outcome is not None]
    if not tried:
        return False, "reconnect_within: no faulted session made a reconnect attempt"
    late = [s for s in tried if s.reconnect_s is None or s.reconnect_s > limit]
    if late:
        seen = ", ".join(f"session {s.id} {s.reconnect_outcome} after {format_seconds(s.reconnect_s or 0)} s"
                         for s in late[:_MAX_LISTED])
        return False, (f"{len(late)} of {len(tried)} reconnect attempts not ended within"
                       f" {format_seconds(limit)} s: {seen}")
    worst = max(s.reconnect_s or 0.0 for s in tried)
    outcomes = ", ".join(sorted({s.reconnect_outcome or "" for s in tried}))
    return True, (f"{len(tried)} of {len(tried)} reconnect attempts ended within {format_seconds(limit)} s"
                  f" ({outcomes}; max {format_seconds(worst)} s)")


def judge(
    exp: Expectations,
    sessions: Sequence[SessionRecord],
    *,
    deadline_s: float,
    prediction: Prediction | None = None,
) -> Verdict:
    """Judge a scenario's sessions against its expectations.

    ``deadline_s`` is when observation stopped; ``prediction`` (when known) is quoted in
    failures so that they say why the result was to be expected.
    """
    faulted = [s for s in sessions if s.faulted]
    if not faulted:
        return Verdict("fail", ("no session was faulted: nothing to judge",))
    results: list[tuple[bool, str]] = []
    if exp.reclaimed_within is not None:
        results.append(_reclaimed_within(exp.reclaimed_within, faulted, deadline_s, prediction))
    if exp.still_held_after is not None:
        results.append(_still_held_after(exp.still_held_after, faulted, deadline_s))
    if exp.survivors_untouched:
        results.append(_survivors_untouched([s for s in sessions if not s.faulted]))
    if exp.mechanism is not None:
        results.append(_mechanism(exp.mechanism, faulted, prediction))
    if exp.upstream is not None:
        results.append(_upstream(exp.upstream, faulted))
    if exp.reconnect_within is not None:
        results.append(_reconnect_within(exp.reconnect_within, faulted))
    if prediction is not None and prediction.bound is not None:
        results.append(_within_bound(prediction.bound, faulted, deadline_s))
    if not results:
        count = sum(1 for s in faulted if s.reclaimed)
        return Verdict(
            "pass",
            (f"no expectations set; {count} of {len(faulted)} faulted sessions reclaimed",),
        )
    failures = tuple(text for ok, text in results if not ok)
    if failures:
        return Verdict("fail", failures)
    return Verdict("pass", tuple(text for _, text in results))


# The exit codes of a run (DESIGN.md): 2, a scenario file is wrong, is ScenarioError's.
EXIT_PASSED, EXIT_FAILED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 3, 130


def exit_code(verdicts: Iterable[str], regressions: int = 0, interrupted: bool = False) -> int:
    """A run's exit code from its scenarios' verdicts and the baseline's regressions:
    130 interrupted (Ctrl-C, the shell's code for SIGINT), 3 a scenario could not be run
    (``error``), 1 an expectation failed or the baseline found a regression, 0 otherwise."""
    if interrupted:
        return EXIT_INTERRUPTED
    seen = set(verdicts)
    if "error" in seen:
        return EXIT_ERROR
    return EXIT_FAILED if "fail" in seen or regressions else EXIT_PASSED
