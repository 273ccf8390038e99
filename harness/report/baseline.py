"""Baselines: this run against an earlier one, for a release gate that must not get worse.

Pure: two runs' records in, the ``baseline`` block of results.json (a ``BaselineRecord``) out.
A regression is a verdict that got worse (pass → fail → error), a p95 reclaim time grown
beyond the tolerance (or gone: sessions that were reclaimed no longer are), or more survivors
killed. A scenario of the baseline missing
from this run is a note, not a regression: runs often cover a subset of the catalogue.

The tolerance is a percentage, a duration, or both (``20%``, ``500ms``, ``20%,100ms``); p95
counts as grown only past every bound given. The default, ``20%,100ms``, keeps the
millisecond jitter of a fast reclaim (a proxy reset's 3 ms becoming 5 ms is +66 %) from
failing a release while still catching a keepalive that doubled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.core.prediction import format_seconds
from harness.core.records import BaselineRecord, RegressionRecord, RunRecord, ScenarioRecord
from harness.scenario.durations import parse_duration

DEFAULT_TOLERANCE = "20%,100ms"
_RANK = {"pass": 0, "fail": 1, "error": 2}


@dataclass(frozen=True)
class Tolerance:
    """How much p95 may grow: a fraction of the old value, seconds, or both (None = unbounded)."""

    fraction: float | None = None
    seconds: float | None = None

    @classmethod
    def parse(cls, text: str) -> Tolerance:
        """``20%``, ``0.5s``, ``500ms``, ``20%,100ms``; ValueError with what was expected."""
        fraction = seconds = None
        for part in (p.strip() for p in text.split(",")):
            pct = re.fullmatch(r"(\d+(?:\.\d+)?)\s*%", part)
            if pct and fraction is None:
                fraction = float(pct.group(1)) / 100
                continue
            if not pct and seconds is None:
                try:
                    seconds = parse_duration(part)
                    continue
                except ValueError:
                    pass
            raise ValueError(f"expected a percentage like 20%, a duration like 500ms, or both as"
                             f" 20%,100ms; got {text!r}")
        return cls(fraction, seconds)

    def exceeded(self, old: float, new: float) -> bool:
        """True when ``new`` is past every bound above ``old``."""
        if new <= old:
            return False
        bounds = []
        if self.fraction is not None:
            bounds.append(old * (1 + self.fraction))
        if self.seconds is not None:
            bounds.append(old + self.seconds)
        return all(new > bound + 1e-9 for bound in bounds)

    def __str__(self) -> str:
        parts = []
        if self.fraction is not None:
            parts.append(f"{format_seconds(self.fraction * 100)}%")
        if self.seconds is not None:
            parts.append(f"{format_seconds(self.seconds)} s")
        return " and ".join(parts) or "none"


def regression(scenario: str, what: str, was: str, now: str, detail: str = "") -> RegressionRecord:
    """One way ``scenario`` got worse (``what``: verdict, p95 or survivors_killed), with its
    one-line text."""
    extra = f" ({detail})" if detail else ""
    return RegressionRecord(scenario, what, was, now, text=f"{scenario}: {what} {was} -> {now}{extra}")


def _s(value: float | None) -> str:
    return "none" if value is None else f"{format_seconds(value)} s"


def _scenario(name: str, old: ScenarioRecord, new: ScenarioRecord, tol: Tolerance) -> list[RegressionRecord]:
    found = []
    if _RANK.get(new.verdict, 2) > _RANK.get(old.verdict, 2):
        found.append(regression(name, "verdict", old.verdict, new.verdict, new.reason))
    if new.verdict == "error":
        return found  # nothing was measured: the verdict says it all
    o, n = old.summary, new.summary
    op, np_ = o.p95_s, n.p95_s
    if op is not None and np_ is not None and tol.exceeded(op, np_):
        found.append(regression(name, "p95", _s(op), _s(np_),
                                f"+{format_seconds(np_ - op)} s, beyond the tolerance {tol}"))
    elif op is not None and np_ is None and n.faulted:
        found.append(regression(name, "p95", _s(op), "none",
                                f"no faulted session reclaimed; {o.reclaimed} were"))
    ok, nk = o.survivors_killed or 0, n.survivors_killed or 0
    if nk > ok:
        found.append(regression(name, "survivors_killed", str(ok), str(nk)))
    return found


def compare(old: RunRecord, new: RunRecord, tolerance: Tolerance,
            baseline: str = "baseline") -> BaselineRecord:
    """Compare run ``new`` with the earlier run ``old``, scenario by scenario (by name): the
    ``baseline`` block of results.json, so a re-rendered report shows it too."""
    before = {s.name: s for s in old.scenarios}
    now = {s.name: s for s in new.scenarios}
    regressions = [r for name, sc in now.items() if name in before
                   for r in _scenario(name, before[name], sc, tolerance)]
    notes = [f"{name}: in the baseline, not in this run" for name in before if name not in now]
    notes += [f"{name}: new, not in the baseline" for name in now if name not in before]
    return BaselineRecord(file=baseline, run_id=old.run_id, p95_tolerance=str(tolerance),
                          regressions=tuple(regressions), notes=tuple(notes))
