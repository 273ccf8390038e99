"""Baselines: this run against an earlier one, for a release gate that must not get worse.

Pure: two results dicts in, a ``Comparison`` out. A regression is a verdict that got worse
(pass → fail → error), a p95 reclaim time grown beyond the tolerance (or gone: sessions that
were reclaimed no longer are), or more survivors killed. A scenario of the baseline missing
from this run is a note, not a regression: runs often cover a subset of the catalogue.

The tolerance is a percentage, a duration, or both (``20%``, ``500ms``, ``20%,100ms``); p95
counts as grown only past every bound given. The default, ``20%,100ms``, keeps the
millisecond jitter of a fast reclaim (a proxy reset's 3 ms becoming 5 ms is +66 %) from
failing a release while still catching a keepalive that doubled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from harness.core.prediction import format_seconds
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


@dataclass(frozen=True)
class Regression:
    """One way a scenario got worse than in the baseline."""

    scenario: str
    what: str  # verdict | p95 | survivors_killed
    was: str
    now: str
    detail: str = ""

    @property
    def text(self) -> str:
        extra = f" ({self.detail})" if self.detail else ""
        return f"{self.scenario}: {self.what} {self.was} -> {self.now}{extra}"


@dataclass(frozen=True)
class Comparison:
    """The regressions found, and notes that are not regressions (missing or new scenarios)."""

    baseline: str
    baseline_run: str
    tolerance: Tolerance
    regressions: tuple[Regression, ...]
    notes: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        """The ``baseline`` block of results.json, so a re-rendered report shows it too."""
        return {"file": self.baseline, "run_id": self.baseline_run,
                "p95_tolerance": str(self.tolerance),
                "regressions": [{"scenario": r.scenario, "what": r.what, "was": r.was, "now": r.now,
                                 "text": r.text} for r in self.regressions],
                "notes": list(self.notes)}


def _s(value: float | None) -> str:
    return "none" if value is None else f"{format_seconds(value)} s"


def _scenario(name: str, old: dict[str, Any], new: dict[str, Any], tol: Tolerance) -> list[Regression]:
    found = []
    if _RANK.get(new["verdict"], 2) > _RANK.get(old["verdict"], 2):
        found.append(Regression(name, "verdict", old["verdict"], new["verdict"], new.get("reason", "")))
    if new["verdict"] == "error":
        return found  # nothing was measured: the verdict says it all
    o, n = old.get("summary") or {}, new.get("summary") or {}
    op, np_ = o.get("p95_s"), n.get("p95_s")
    if op is not None and np_ is not None and tol.exceeded(op, np_):
        found.append(Regression(name, "p95", _s(op), _s(np_),
                                f"+{format_seconds(np_ - op)} s, beyond the tolerance {tol}"))
    elif op is not None and np_ is None and n.get("faulted", 0):
        found.append(Regression(name, "p95", _s(op), "none",
                                f"no faulted session reclaimed; {o.get('reclaimed')} were"))
    ok, nk = o.get("survivors_killed") or 0, n.get("survivors_killed") or 0
    if nk > ok:
        found.append(Regression(name, "survivors_killed", str(ok), str(nk)))
    return found


def compare(old: dict[str, Any], new: dict[str, Any], tolerance: Tolerance,
            baseline: str = "baseline") -> Comparison:
    """Compare run ``new`` with the earlier run ``old``, scenario by scenario (by name)."""
    before = {s["name"]: s for s in old["scenarios"]}
    now = {s["name"]: s for s in new["scenarios"]}
    regressions = [r for name, entry in now.items() if name in before
                   for r in _scenario(name, before[name], entry, tolerance)]
    notes = [f"{name}: in the baseline, not in this run" for name in before if name not in now]
    notes += [f"{name}: new, not in the baseline" for name in now if name not in before]
    return Comparison(baseline, str(old.get("run_id", "")), tolerance, tuple(regressions), tuple(notes))
