"""Percentiles and the results.json summary."""

from __future__ import annotations

import pytest

from harness.core.records import SessionRecord
from harness.core.stats import percentile, summarize


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),  # position 1.5
        ([1.0, 2.0, 3.0, 4.0], 95, 3.85),  # position 2.85: 3 + 0.85 * 1
        ([4.0, 1.0, 3.0, 2.0], 0, 1.0),  # unsorted input
        ([4.0, 1.0, 3.0, 2.0], 100, 4.0),
        ([10.0, 20.0, 30.0, 40.0, 50.0], 25, 20.0),  # position 1
        ([10.0, 20.0, 30.0, 40.0, 50.0], 90, 46.0),  # position 3.6: 40 + 0.6 * 10
        ([5.0], 95, 5.0),
    ],
)
def test_percentile_interpolates_linearly(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected)


def test_percentile_of_nothing_is_none() -> None:
    assert percentile([], 50) is None


def test_percentile_refuses_q_outside_0_100() -> None:
    with pytest.raises(ValueError):
        percentile([1.0], 101)
    with pytest.raises(ValueError):
        percentile([1.0], -1)


def session(
    id: int, faulted: bool, reclaimed: bool, reclaim_s: float | None,
    alive: bool | None = None,
) -> SessionRecord:
    return SessionRecord(id=id, faulted=faulted, reclaimed=reclaimed, reclaim_s=reclaim_s,
                         predicted_s=4.0, mechanism="keepalive" if reclaimed else None,
                         alive_at_end=alive)


def test_summarize_counts_and_percentiles_over_reclaimed_faulted_sessions() -> None:
    sessions = [
        session(0, True, True, 4.0),
        session(1, True, True, 4.1),
        session(2, True, True, 4.2),
        session(3, True, True, 4.3004),
        session(4, True, False, None),
        session(5, False, False, None, alive=True),
        session(6, False, True, 1.0, alive=False),  # a survivor killed: not in the times
        session(7, False, False, None, alive=False),
    ]
    summary = summarize(sessions)
    assert list(summary.to_json()) == ["sessions", "faulted", "reclaimed", "p50_s", "p95_s", "max_s",
                             "survivors_killed"]
    assert summary.sessions == 8
    assert summary.faulted == 5
    assert summary.reclaimed == 4
    assert summary.p50_s == 4.15
    # position 2.85 over 4.0, 4.1, 4.2, 4.3004: 4.2 + 0.85 * 0.1004 = 4.28534
    assert summary.p95_s == 4.285
    assert summary.max_s == 4.3
    assert summary.survivors_killed == 2


def test_summarize_with_nothing_reclaimed_has_no_times() -> None:
    summary = summarize([session(0, True, False, None)])
    assert (summary.p50_s, summary.p95_s, summary.max_s) == (None, None, None)
    assert summary.reclaimed == 0
    assert summary.survivors_killed == 0
