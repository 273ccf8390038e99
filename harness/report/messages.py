"""The text of a failed scenario, for every report that has room for one.

A CI page shows a failure to someone who did not write the scenario, so the text says what
was expected, what was seen, and why that was to be expected: the prediction, its formula,
and the settings that produced it, naming each one the OS filled in
("tcp_keepalives_idle=0 uses the OS default 7200 s"). It works from a scenario's record
alone (no target code), so it renders the same for a fresh run and an old file.
"""

from __future__ import annotations

import re

from harness.core.prediction import format_seconds
from harness.core.records import PredictionRecord, ScenarioRecord

# The keepalive values a prediction formula flags as "(OS default)", with the sysctl that
# supplies each and how to find the service's own setting for it (``tcp_keepalives_idle``
# in PostgreSQL, ``tcp_keepalive_idle`` for a service of the user's own).
_ROLES = (
    ("idle", re.compile(r"idle [\d.]+ s \(OS default\)"), "tcp_keepalive_time", " s"),
    ("interval", re.compile(r"interval [\d.]+ s \(OS default\)"), "tcp_keepalive_intvl", " s"),
    ("count", re.compile(r"\d+ \(OS default\) ×"), "tcp_keepalive_probes", " probes"),
)


def _s(value: float | None) -> str:
    """Seconds as the rest of connchaos writes them: ``4.1 s``, ``7874.04 s``."""
    return "-" if value is None else f"{format_seconds(float(value))} s"


def _when(pred: PredictionRecord) -> str:
    return "never" if pred.reclaim_s is None else _s(pred.reclaim_s)


def expected(sc: ScenarioRecord) -> str:
    """The scenario's gate in words."""
    exp = sc.expect
    parts = []
    if "reclaimed_within" in exp:
        parts.append(f"every faulted session reclaimed within {_dur(exp['reclaimed_within'])}")
    if "still_held_after" in exp:
        parts.append(f"every faulted session still held after {_dur(exp['still_held_after'])}")
    if exp.get("mechanism"):
        parts.append(f"reclaimed by {exp['mechanism']}")
    if exp.get("upstream"):
        parts.append(f"their upstream legs {exp['upstream']}")
    if exp.get("survivors_untouched"):
        parts.append("the sessions not faulted untouched")
    return "; ".join(parts) or "no expectations"


def upstream_lines(sc: ScenarioRecord) -> tuple[str, str]:
    """A tier's faulted sessions' upstream legs: (what was predicted, what became of them);
    ("", "") when the target has no upstream legs."""
    legs = [s.upstream for s in sc.faulted if s.upstream is not None]
    if not legs:
        return "", ""
    counts = {k: [leg for leg in legs if leg.outcome == k] for k in ("closed", "pooled", "held")}
    parts = []
    for what, group in counts.items():
        if not group:
            continue
        times = [t for t in ((g.closed_s if what == "closed" else g.pooled_s) for g in group)
                 if t is not None]
        when = f" (max {_s(max(times))})" if times else ""
        parts.append(f"{len(group)} {what}{when}")
    measured = f"{len(legs)} upstream legs: " + ", ".join(parts)
    latest = max((g for g in legs if g.predicted_outcome is not None),
                 key=lambda g: float("inf") if g.predicted_s is None else g.predicted_s, default=None)
    if latest is None:
        return "-", measured
    at = "" if latest.predicted_s is None else f" at {_s(latest.predicted_s)}"
    return f"{latest.predicted_outcome}{at} ({latest.mechanism})", measured


def _dur(text: object) -> str:
    """``8s`` (as the scenario wrote it) → ``8 s``."""
    m = re.fullmatch(r"([\d.]+)\s*(ms|s|m|h)", str(text))
    return f"{m.group(1)} {m.group(2)}" if m else str(text)


def seen(sc: ScenarioRecord) -> str:
    """What the sessions did: the counts and reclaim times of the summary."""
    summ = sc.summary
    text = f"{summ.reclaimed} of {summ.faulted} faulted sessions reclaimed"
    if summ.max_s is not None:
        text += f" (p50 {_s(summ.p50_s)}, p95 {_s(summ.p95_s)}, max {_s(summ.max_s)})"
    if sc.deadline_s is not None:
        text += f" by the deadline {_s(sc.deadline_s)}"
    survivors = summ.sessions - summ.faulted
    if survivors:
        text += f"; {summ.survivors_killed} of {survivors} survivors killed"
    predicted, legs = upstream_lines(sc)
    if legs:
        text += f"; {legs} (predicted {predicted})"
    return text


def _reason_without_prediction(sc: ScenarioRecord) -> str:
    """The verdict's reason, minus the prediction it quotes (the message has its own line)."""
    reason = sc.reason
    pred = sc.prediction
    if pred is not None:
        reason = reason.replace(f"; predicted {_when(pred)} ({pred.mechanism}): {pred.formula}", "")
    return reason


def settings_explained(sc: ScenarioRecord) -> list[str]:
    """Each keepalive value the OS supplied, named by the service's setting for it."""
    formula = "" if sc.prediction is None else sc.prediction.formula
    settings = {} if sc.target is None else sc.target.settings
    out = []
    for role, flagged, sysctl, unit in _ROLES:
        if not flagged.search(formula):
            continue
        value = None if sc.kernel is None else getattr(sc.kernel, sysctl)
        shown = "" if value is None else f" {format_seconds(float(value))}{unit}"
        own = [k for k in settings if "keepalive" in k.lower() and k.lower().endswith(role)]
        if own:
            out.append(f"{own[0]}={settings[own[0]]} uses the OS default{shown} (net.ipv4.{sysctl})")
        else:
            out.append(f"{'the service' if sc.service is None else sc.service} sets no keepalive {role}:"
                       f" the OS default{shown} (net.ipv4.{sysctl}) applies")
    return out


def why(sc: ScenarioRecord) -> str:
    """The prediction, with the settings it came from."""
    pred = sc.prediction
    if pred is None:
        return "no prediction was made"
    service = sc.service
    text = f"predicted {_when(pred)} by {pred.mechanism}"
    explained = settings_explained(sc)
    if explained:
        text += f" from the {service} settings: " + ", ".join(explained)
    elif service:
        settings = {} if sc.target is None else sc.target.settings
        shown = ", ".join(f"{k}={v}" for k, v in settings.items())
        text += f" from the {service} settings{': ' + shown if shown else ''}"
    return f"{text}; {pred.formula}"


def headline(sc: ScenarioRecord) -> str:
    """One line: what failed and the prediction's why, for a JUnit message attribute."""
    if sc.verdict == "error":
        return f"could not run: {sc.reason}"
    first = _reason_without_prediction(sc).split("; ")[0]
    first = re.sub(r": sessions? [^;]*$", "", first)  # the session ids are in the body
    pred = sc.prediction
    if pred is None:
        return first
    explained = settings_explained(sc)
    tail = f" from the {sc.service} settings: {explained[0]}" if explained else ""
    return f"{first}; predicted {_when(pred)} by {pred.mechanism}{tail}"


def failure_message(sc: ScenarioRecord) -> str:
    """Expected / seen / why of one scenario, as a few lines of text.

    The first line stands alone (a JUnit failure's ``message``); the others give the
    detail. For a scenario that passed it says so, with its reason.
    """
    if sc.verdict == "pass":
        return f"passed: {sc.reason}"
    if sc.verdict == "error":
        return (f"{headline(sc)}\n"
                f"expected: {expected(sc)}\n"
                f"seen: the scenario could not be run, so nothing was measured")
    return (f"{headline(sc)}\n"
            f"expected: {expected(sc)}\n"
            f"seen: {_reason_without_prediction(sc)}\n"
            f"      ({seen(sc)})\n"
            f"why: {why(sc)}")


def predicted_text(pred: PredictionRecord | None) -> str:
    """The headline prediction in a table cell: a point (``4 s``), ``never``, or under random
    loss a bound (``>= 2 s, P 0.95 by 6 s``), never passed off as a point."""
    if pred is None:
        return "-"
    if pred.bound is None:
        return _when(pred)
    earliest = pred.bound.get("earliest_s")
    text = "never" if earliest is None else f">= {_s(float(str(earliest)))} (bound)"
    p, by = pred.bound.get("p_by_deadline"), pred.bound.get("deadline_s")
    if p is not None and by is not None:
        word = "P" if pred.bound.get("kind") == "distribution" else "P >="
        text += f", {word} {float(str(p)):.2f} by {_s(float(str(by)))}"
    return text


def bound_line(sc: ScenarioRecord) -> str:
    """Under random loss: what the prediction is (a bound, a distribution) and what it allows."""
    pred = sc.prediction
    if pred is None or pred.bound is None:
        return ""
    text = str(pred.bound.get("text") or "a bound, not a point")
    span = pred.bound.get("binomial_range")
    if isinstance(span, list) and len(span) == 2:
        text += (f"; of {pred.bound.get('faulted')} faulted sessions about"
                 f" {pred.bound.get('expected_by_deadline')} reclaimed by the deadline, {span[0]} to"
                 f" {span[1]} allowed (binomial 99.9%)")
    return text


def reconnect_lines(sc: ScenarioRecord) -> tuple[str, str]:
    """syn-blackhole: the clients' reconnect attempts, (predicted, measured); empty without."""
    tried = [s for s in sc.faulted if s.reconnect_outcome is not None]
    pred = None if sc.prediction is None else sc.prediction.reconnect
    if not tried and pred is None:
        return "", ""
    predicted = "" if pred is None else (
        f"{pred.get('outcome')} after {_s(float(str(pred.get('at_s'))))} ({pred.get('mechanism')})")
    outcomes: dict[str, list[float]] = {}
    for s in tried:
        outcomes.setdefault(s.reconnect_outcome or "", []).append(s.reconnect_s or 0.0)
    measured = "; ".join(f"{len(ts)} {how} after {_s(min(ts))}"
                         + ("" if len(ts) == 1 else f" to {_s(max(ts))}")
                         for how, ts in sorted(outcomes.items()))
    return predicted, measured
