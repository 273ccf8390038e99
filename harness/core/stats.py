"""Statistics over a scenario's sessions: the ``summary`` block of results.json."""

from __future__ import annotations

import math
from collections.abc import Sequence

from harness.core.records import SessionRecord, SummaryRecord


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) by linear interpolation, as numpy's default does.

    Returns None for no values: a percentile of nothing is not zero.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"q must be between 0 and 100, got {q}")
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def summarize(sessions: Sequence[SessionRecord]) -> SummaryRecord:
    """The results.json summary: counts, and reclaim percentiles over faulted sessions.

    ``reclaimed`` counts faulted sessions only; an unfaulted session that was reclaimed is
    a killed survivor instead.
    """
    faulted = [s for s in sessions if s.faulted]
    times = [s.reclaim_s for s in faulted if s.reclaimed and s.reclaim_s is not None]
    return SummaryRecord(
        sessions=len(sessions),
        faulted=len(faulted),
        reclaimed=sum(1 for s in faulted if s.reclaimed),
        p50_s=_rounded(percentile(times, 50)),
        p95_s=_rounded(percentile(times, 95)),
        max_s=_rounded(max(times)) if times else None,
        survivors_killed=sum(1 for s in sessions if s.survivor_killed),
    )
