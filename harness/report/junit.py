"""JUnit XML: the format every CI system can show, one test case per scenario.

The shape is the one Jenkins, GitLab, GitHub's test-report actions and junitparser read:
``<testsuites>`` around one ``<testsuite name="connchaos">``; each scenario is a
``<testcase classname="<scenario file>" name="<scenario name>" time="<duration>">`` whose
properties carry the measured and predicted figures, with a ``<failure>`` (an expectation
failed) or ``<error>`` (it could not be run) whose text says expected / seen / why. Baseline
regressions are one more test case, classname ``connchaos.baseline``, that fails.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

from harness.core.prediction import format_seconds
from harness.report.messages import failure_message, headline


def _s(value: Any) -> str:
    return "-" if value is None else format_seconds(float(value))


def _timestamp(iso: str) -> str:
    """JUnit's schema wants a timestamp without a zone: the run's start in UTC."""
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="seconds")


def _properties(parent: ET.Element, values: dict[str, str]) -> None:
    props = ET.SubElement(parent, "properties")
    for name, value in values.items():
        ET.SubElement(props, "property", name=name, value=value)


def _scenario_properties(sc: dict[str, Any]) -> dict[str, str]:
    summ = sc.get("summary") or {}
    pred = sc.get("prediction")
    mechs = sorted({s["mechanism"] for s in sc.get("sessions", []) if s["faulted"] and s.get("mechanism")})
    return {
        "verdict": sc["verdict"],
        "layer": sc["layer"],
        "backend": sc["backend"],
        "fault": sc["fault"],
        "service": str((sc.get("target") or {}).get("service", "-")),
        "predicted_reclaim_s": "-" if not pred else ("never" if pred["reclaim_s"] is None else _s(pred["reclaim_s"])),
        "predicted_mechanism": "-" if not pred else str(pred["mechanism"]),
        "mechanism": ", ".join(mechs) or "-",
        "sessions": str(summ.get("sessions", 0)),
        "faulted": str(summ.get("faulted", 0)),
        "reclaimed": str(summ.get("reclaimed", 0)),
        "p50_s": _s(summ.get("p50_s")),
        "p95_s": _s(summ.get("p95_s")),
        "max_s": _s(summ.get("max_s")),
        "survivors_killed": str(summ.get("survivors_killed", 0)),
    }


def session_line(s: dict[str, Any]) -> str:
    """One session in words: what happened to it, against its prediction when it was faulted."""
    client = s.get("client") or "-"
    if s["reclaimed"]:
        what = f"reclaimed at {_s(s.get('reclaim_s'))} s by {s.get('mechanism') or 'unknown'}"
    else:
        what = "still held at the end"
    if s["faulted"]:
        pred = "never" if s.get("predicted_s") is None else f"{_s(s['predicted_s'])} s"
        return f"session {s['id']:>3} faulted {client:<21} {what} (predicted {pred})"
    alive = s.get("alive_at_end")
    answered = "" if alive is None else "; answered a final query" if alive else "; FAILED its final query"
    return f"session {s['id']:>3} spared  {client:<21} {what}{answered}"


def _testcase(suite: ET.Element, sc: dict[str, Any]) -> None:
    case = ET.SubElement(suite, "testcase", classname=sc.get("file") or sc["name"], name=sc["name"],
                         time=f"{float(sc.get('duration_s') or 0):.3f}")
    _properties(case, _scenario_properties(sc))
    if sc["verdict"] == "fail":
        ET.SubElement(case, "failure", message=headline(sc), type="expectation").text = failure_message(sc)
    elif sc["verdict"] == "error":
        ET.SubElement(case, "error", message=headline(sc), type="lab").text = failure_message(sc)
    lines = [f"{sc['verdict']}: {sc.get('reason', '')}"]
    lines += [session_line(s) for s in sc.get("sessions", [])]
    ET.SubElement(case, "system-out").text = "\n".join(lines) + "\n"


def _baseline_case(suite: ET.Element, base: dict[str, Any]) -> None:
    case = ET.SubElement(suite, "testcase", classname="connchaos.baseline",
                         name=f"no regression against {base.get('file')}", time="0")
    _properties(case, {"baseline_run": str(base.get("run_id", "")),
                       "p95_tolerance": str(base.get("p95_tolerance", "")),
                       "regressions": str(len(base.get("regressions", [])))})
    regressions = [r["text"] for r in base.get("regressions", [])]
    if regressions:
        message = f"{len(regressions)} regression(s) against the baseline run {base.get('run_id')}"
        ET.SubElement(case, "failure", message=message, type="regression").text = "\n".join(regressions)
    notes = base.get("notes") or []
    if notes:
        ET.SubElement(case, "system-out").text = "\n".join(notes) + "\n"


def render(results: dict[str, Any]) -> str:
    """The run as JUnit XML (a whole document, with the XML declaration)."""
    scenarios = results["scenarios"]
    base = results.get("baseline")
    tests = len(scenarios) + (1 if base else 0)
    failures = sum(1 for s in scenarios if s["verdict"] == "fail") + (1 if base and base.get("regressions") else 0)
    errors = sum(1 for s in scenarios if s["verdict"] == "error")
    total = sum(float(s.get("duration_s") or 0) for s in scenarios)
    counts = {"tests": str(tests), "failures": str(failures), "errors": str(errors), "time": f"{total:.3f}"}
    root = ET.Element("testsuites", {"name": "connchaos", **counts})
    suite = ET.SubElement(root, "testsuite", {"name": "connchaos", **counts, "skipped": "0",
                                              "timestamp": _timestamp(results["started_at"]),
                                              "hostname": str(results.get("host", "localhost")),
                                              "id": "0"})
    _properties(suite, {"run_id": results["run_id"], "connchaos": str(results.get("connchaos", "")),
                        "kernel": str(results.get("kernel", "")),
                        "interrupted": str(bool(results.get("interrupted", False))).lower()})
    for sc in scenarios:
        _testcase(suite, sc)
    if base:
        _baseline_case(suite, base)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
