"""The text of a failed scenario, for every report that has room for one.

A CI page shows a failure to someone who did not write the scenario, so the text says what
was expected, what was seen, and why that was to be expected: the prediction, its formula,
and the settings that produced it, naming each one the OS filled in
("tcp_keepalives_idle=0 uses the OS default 7200 s"). It works from a results.json entry
alone (no target code), so it renders the same for a fresh run and an old file.
"""

from __future__ import annotations

import re
from typing import Any

from harness.core.prediction import format_seconds

# The keepalive values a prediction formula flags as "(OS default)", with the sysctl that
# supplies each and how to find the service's own setting for it (``tcp_keepalives_idle``
# in PostgreSQL, ``tcp_keepalive_idle`` for a service of the user's own).
_ROLES = (
    ("idle", re.compile(r"idle [\d.]+ s \(OS default\)"), "tcp_keepalive_time", " s"),
    ("interval", re.compile(r"interval [\d.]+ s \(OS default\)"), "tcp_keepalive_intvl", " s"),
    ("count", re.compile(r"\d+ \(OS default\) ×"), "tcp_keepalive_probes", " probes"),
)


def _s(value: Any) -> str:
    """Seconds as the rest of connchaos writes them: ``4.1 s``, ``7874.04 s``."""
    return "-" if value is None else f"{format_seconds(float(value))} s"


def expected(entry: dict[str, Any]) -> str:
    """The scenario's gate in words."""
    exp = entry.get("expect") or {}
    parts = []
    if "reclaimed_within" in exp:
        parts.append(f"every faulted session reclaimed within {_dur(exp['reclaimed_within'])}")
    if "still_held_after" in exp:
        parts.append(f"every faulted session still held after {_dur(exp['still_held_after'])}")
    if exp.get("mechanism"):
        parts.append(f"reclaimed by {exp['mechanism']}")
    if exp.get("survivors_untouched"):
        parts.append("the sessions not faulted untouched")
    return "; ".join(parts) or "no expectations"


def _dur(text: Any) -> str:
    """``8s`` (as the scenario wrote it) → ``8 s``."""
    m = re.fullmatch(r"([\d.]+)\s*(ms|s|m|h)", str(text))
    return f"{m.group(1)} {m.group(2)}" if m else str(text)


def seen(entry: dict[str, Any]) -> str:
    """What the sessions did: the counts and reclaim times of the summary."""
    summ = entry.get("summary") or {}
    faulted = summ.get("faulted", 0)
    text = f"{summ.get('reclaimed', 0)} of {faulted} faulted sessions reclaimed"
    if summ.get("max_s") is not None:
        text += f" (p50 {_s(summ.get('p50_s'))}, p95 {_s(summ.get('p95_s'))}, max {_s(summ.get('max_s'))})"
    if entry.get("deadline_s") is not None:
        text += f" by the deadline {_s(entry['deadline_s'])}"
    survivors = summ.get("sessions", 0) - faulted
    if survivors:
        text += f"; {summ.get('survivors_killed', 0)} of {survivors} survivors killed"
    return text


def _reason_without_prediction(entry: dict[str, Any]) -> str:
    """The verdict's reason, minus the prediction it quotes (the message has its own line)."""
    reason = str(entry.get("reason", ""))
    pred = entry.get("prediction")
    if pred:
        when = "never" if pred.get("reclaim_s") is None else _s(pred["reclaim_s"])
        reason = reason.replace(f"; predicted {when} ({pred.get('mechanism')}): {pred.get('formula')}", "")
    return reason


def settings_explained(entry: dict[str, Any]) -> list[str]:
    """Each keepalive value the OS supplied, named by the service's setting for it."""
    pred = entry.get("prediction") or {}
    formula = str(pred.get("formula", ""))
    target = entry.get("target") or {}
    settings: dict[str, Any] = target.get("settings") or {}
    kernel: dict[str, Any] = entry.get("kernel") or {}
    out = []
    for role, flagged, sysctl, unit in _ROLES:
        if not flagged.search(formula):
            continue
        value = kernel.get(sysctl)
        shown = "" if value is None else f" {format_seconds(float(value))}{unit}"
        own = [k for k in settings if "keepalive" in k.lower() and k.lower().endswith(role)]
        if own:
            out.append(f"{own[0]}={settings[own[0]]} uses the OS default{shown} (net.ipv4.{sysctl})")
        else:
            out.append(f"{target.get('service', 'the service')} sets no keepalive {role}:"
                       f" the OS default{shown} (net.ipv4.{sysctl}) applies")
    return out


def why(entry: dict[str, Any]) -> str:
    """The prediction, with the settings it came from."""
    pred = entry.get("prediction")
    if not pred:
        return "no prediction was made"
    when = "never" if pred.get("reclaim_s") is None else _s(pred["reclaim_s"])
    service = (entry.get("target") or {}).get("service")
    text = f"predicted {when} by {pred.get('mechanism')}"
    explained = settings_explained(entry)
    if explained:
        text += f" from the {service} settings: " + ", ".join(explained)
    elif service:
        settings = (entry.get("target") or {}).get("settings") or {}
        shown = ", ".join(f"{k}={v}" for k, v in settings.items())
        text += f" from the {service} settings{': ' + shown if shown else ''}"
    return f"{text}; {pred.get('formula')}"


def headline(entry: dict[str, Any]) -> str:
    """One line: what failed and the prediction's why, for a JUnit message attribute."""
    if entry.get("verdict") == "error":
        return f"could not run: {entry.get('reason', '')}"
    first = _reason_without_prediction(entry).split("; ")[0]
    first = re.sub(r": sessions? [^;]*$", "", first)  # the session ids are in the body
    pred = entry.get("prediction")
    if not pred:
        return first
    when = "never" if pred.get("reclaim_s") is None else _s(pred["reclaim_s"])
    explained = settings_explained(entry)
    tail = f" from the {(entry.get('target') or {}).get('service')} settings: {explained[0]}" if explained else ""
    return f"{first}; predicted {when} by {pred.get('mechanism')}{tail}"


def failure_message(scenario_entry: dict[str, Any]) -> str:
    """Expected / seen / why of one results.json scenario entry, as a few lines of text.

    The first line stands alone (a JUnit failure's ``message``); the others give the
    detail. For a scenario that passed it says so, with its reason.
    """
    entry = scenario_entry
    if entry.get("verdict") == "pass":
        return f"passed: {entry.get('reason', '')}"
    if entry.get("verdict") == "error":
        return (f"{headline(entry)}\n"
                f"expected: {expected(entry)}\n"
                f"seen: the scenario could not be run, so nothing was measured")
    return (f"{headline(entry)}\n"
            f"expected: {expected(entry)}\n"
            f"seen: {_reason_without_prediction(entry)}\n"
            f"      ({seen(entry)})\n"
            f"why: {why(entry)}")
