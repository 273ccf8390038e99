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

from harness.core.prediction import format_seconds
from harness.core.records import BaselineRecord, RunRecord, ScenarioRecord, SessionRecord
from harness.report.messages import bound_line, failure_message, headline, predicted_text, reconnect_lines


def _s(value: float | None) -> str:
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


def _scenario_properties(sc: ScenarioRecord) -> dict[str, str]:
    summ = sc.summary
    pred = sc.prediction
    return {
        "verdict": sc.verdict,
        "layer": "-" if sc.layer is None else sc.layer,
        "backend": sc.backend,
        "fault": sc.fault,
        "service": "-" if sc.service is None else sc.service,
        "predicted_reclaim_s": ("-" if pred is None else "never" if pred.reclaim_s is None
                                else _s(pred.reclaim_s)),
        "predicted_mechanism": "-" if pred is None else pred.mechanism,
        "mechanism": ", ".join(sc.mechanisms) or "-",
        "sessions": str(summ.sessions),
        "faulted": str(summ.faulted),
        "reclaimed": str(summ.reclaimed),
        "p50_s": _s(summ.p50_s),
        "p95_s": _s(summ.p95_s),
        "max_s": _s(summ.max_s),
        "survivors_killed": str(summ.survivors_killed),
        **_loss_and_reconnect(sc),
    }


def _loss_and_reconnect(sc: ScenarioRecord) -> dict[str, str]:
    """packet-loss: the prediction is a bound; syn-blackhole: the reconnect's figures."""
    out = {}
    pred = sc.prediction
    if pred is not None and pred.bound is not None:
        out["prediction_kind"] = f"bound ({pred.bound.get('kind')}), not a point"
        out["predicted"] = predicted_text(pred)
        out["bound"] = bound_line(sc)
    predicted, measured = reconnect_lines(sc)
    if predicted or measured:
        out["predicted_reconnect"] = predicted or "-"
        out["reconnect"] = measured or "-"
    return out


def session_line(s: SessionRecord) -> str:
    """One session in words: what happened to it, against its prediction when it was faulted."""
    client = s.client or "-"
    if s.reclaimed:
        what = f"reclaimed at {_s(s.reclaim_s)} s by {s.mechanism or 'unknown'}"
    else:
        what = "still held at the end"
    if s.faulted:
        pred = "never" if s.predicted_s is None else f"{_s(s.predicted_s)} s"
        again = ""
        if s.reconnect_outcome is not None:
            expected = "-" if s.predicted_reconnect_s is None else f"{_s(s.predicted_reconnect_s)} s"
            again = f"; reconnect {s.reconnect_outcome} after {_s(s.reconnect_s)} s (predicted {expected})"
        return f"session {s.id:>3} faulted {client:<21} {what} (predicted {pred}){again}"
    alive = s.alive_at_end
    answered = "" if alive is None else "; answered a final query" if alive else "; FAILED its final query"
    return f"session {s.id:>3} spared  {client:<21} {what}{answered}"


def _testcase(suite: ET.Element, sc: ScenarioRecord) -> None:
    case = ET.SubElement(suite, "testcase", classname=sc.file or sc.name, name=sc.name,
                         time=f"{float(sc.duration_s or 0):.3f}")
    _properties(case, _scenario_properties(sc))
    if sc.verdict == "fail":
        ET.SubElement(case, "failure", message=headline(sc), type="expectation").text = failure_message(sc)
    elif sc.verdict == "error":
        ET.SubElement(case, "error", message=headline(sc), type="lab").text = failure_message(sc)
    lines = [f"{sc.verdict}: {sc.reason}"]
    lines += [session_line(s) for s in sc.sessions]
    ET.SubElement(case, "system-out").text = "\n".join(lines) + "\n"


def _baseline_case(suite: ET.Element, base: BaselineRecord) -> None:
    case = ET.SubElement(suite, "testcase", classname="connchaos.baseline",
                         name=f"no regression against {base.file}", time="0")
    _properties(case, {"baseline_run": base.run_id, "p95_tolerance": base.p95_tolerance,
                       "regressions": str(len(base.regressions))})
    regressions = [r.text for r in base.regressions]
    if regressions:
        message = f"{len(regressions)} regression(s) against the baseline run {base.run_id}"
        ET.SubElement(case, "failure", message=message, type="regression").text = "\n".join(regressions)
    if base.notes:
        ET.SubElement(case, "system-out").text = "\n".join(base.notes) + "\n"


def render(run: RunRecord) -> str:
    """The run as JUnit XML (a whole document, with the XML declaration)."""
    scenarios = run.scenarios
    base = run.baseline
    tests = len(scenarios) + (0 if base is None else 1)
    failures = (sum(1 for s in scenarios if s.verdict == "fail")
                + (1 if base is not None and base.regressions else 0))
    errors = sum(1 for s in scenarios if s.verdict == "error")
    total = sum(float(s.duration_s or 0) for s in scenarios)
    counts = {"tests": str(tests), "failures": str(failures), "errors": str(errors), "time": f"{total:.3f}"}
    root = ET.Element("testsuites", {"name": "connchaos", **counts})
    suite = ET.SubElement(root, "testsuite", {"name": "connchaos", **counts, "skipped": "0",
                                              "timestamp": _timestamp(run.started_at),
                                              "hostname": "localhost" if run.host is None else run.host,
                                              "id": "0"})
    _properties(suite, {"run_id": run.run_id, "connchaos": "" if run.connchaos is None else run.connchaos,
                        "kernel": "" if run.kernel is None else run.kernel,
                        "interrupted": str(run.interrupted).lower()})
    for sc in scenarios:
        _testcase(suite, sc)
    if base is not None:
        _baseline_case(suite, base)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
