"""JUnit XML, read back by junitparser (an independent reader that CI tools resemble)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from junitparser import Error, Failure, JUnitXml, Properties, Property

from harness.core.records import RunRecord, ScenarioRecord
from harness.report import junit
from harness.report.baseline import Tolerance, compare
from harness.report.messages import failure_message


def _read(tmp_path: Path, results: dict[str, Any]) -> JUnitXml:
    path = tmp_path / "junit.xml"
    path.write_text(junit.render(RunRecord.from_json(results)))
    return JUnitXml.fromfile(str(path))


def _props(case: Any) -> dict[str, str]:
    """junitparser reads test-case properties as plain children (only suites have an accessor)."""
    (props,) = list(case.iterchildren(Properties))
    return {p.name: p.value for p in props.iterchildren(Property)}


def test_one_testcase_per_scenario_with_its_figures(tmp_path: Path, catalogue: dict[str, Any]) -> None:
    (suite,) = list(_read(tmp_path, catalogue))
    assert suite.name == "connchaos"
    assert (suite.tests, suite.failures, suite.errors) == (17, 0, 0)
    assert suite.timestamp == "2026-11-26T12:39:56"
    assert abs(suite.time - sum(s["duration_s"] for s in catalogue["scenarios"])) < 0.01
    cases = list(suite)
    assert [c.name for c in cases] == [s["name"] for s in catalogue["scenarios"]]
    assert [c.classname for c in cases] == [s["file"] for s in catalogue["scenarios"]]
    assert all(c.is_passed for c in cases)
    first = _props(cases[0])
    assert first == {"verdict": "pass", "layer": "packet", "backend": "local", "fault": "blackhole",
                     "service": "postgres", "predicted_reclaim_s": "4.036", "predicted_mechanism": "keepalive",
                     "mechanism": "keepalive", "sessions": "10", "faulted": "10", "reclaimed": "10",
                     "p50_s": "4.104", "p95_s": "4.109", "max_s": "4.109", "survivors_killed": "0"}
    assert cases[0].time == 6.043
    never = _props(cases[1])  # layers-proxy-stall
    assert (never["predicted_reclaim_s"], never["p95_s"], never["layer"]) == ("never", "-", "proxy")
    out = cases[0].system_out
    assert "session   0 faulted 10.77.0.2:38182       reclaimed at 4.109 s by keepalive (predicted 4.032 s)" in out


def test_a_failure_says_expected_seen_and_why(tmp_path: Path, failing: dict[str, Any]) -> None:
    (suite,) = list(_read(tmp_path, failing))
    assert (suite.tests, suite.failures, suite.errors) == (2, 1, 0)
    bad, good = list(suite)
    (failure,) = bad.result
    assert isinstance(failure, Failure)
    assert failure.type == "expectation"
    assert failure.message.startswith("3 of 3 faulted sessions not reclaimed within 8 s (deadline 8 s);"
                                      " predicted 7874.025 s by keepalive")
    assert "tcp_keepalives_idle=0 uses the OS default 7200 s" in failure.message
    assert failure.text == failure_message(ScenarioRecord.from_json(failing["scenarios"][0]))
    assert "session   1 spared  10.77.0.2:37734       still held at the end; answered a final query" \
        in bad.system_out
    assert good.is_passed


def test_an_error_is_a_junit_error(tmp_path: Path, failing: dict[str, Any], error_entry: dict[str, Any]) -> None:
    failing["scenarios"].append(error_entry)
    (suite,) = list(_read(tmp_path, failing))
    assert (suite.tests, suite.failures, suite.errors) == (3, 1, 1)
    (err,) = list(suite)[2].result
    assert isinstance(err, Error)
    assert err.message == "could not run: start postgres: initdb failed: no space left on device"


def test_baseline_regressions_are_one_failing_testcase(tmp_path: Path, catalogue: dict[str, Any],
                                                      failing: dict[str, Any]) -> None:
    old = {**catalogue, "scenarios": [dict(s) for s in catalogue["scenarios"]]}
    for s in old["scenarios"]:
        if s["name"] == "postgres-client-vanishes":
            s["summary"] = {**s["summary"], "p95_s": 2.0}
    block = compare(RunRecord.from_json(old), RunRecord.from_json(failing), Tolerance(0.2, None),
                    "old/results.json")
    failing["baseline"] = block.to_json()
    (suite,) = list(_read(tmp_path, failing))
    assert (suite.tests, suite.failures) == (3, 2)
    case = list(suite)[-1]
    assert (case.classname, case.name) == ("connchaos.baseline", "no regression against old/results.json")
    (failure,) = case.result
    assert failure.message == "1 regression(s) against the baseline run 20261126-123956-163ae8"
    assert failure.text == ("postgres-client-vanishes: p95 2 s -> 4.121 s (+2.121 s, beyond the tolerance 20%)")
    assert "layers-packet-blackhole: in the baseline, not in this run" in case.system_out


def test_the_document_is_well_formed_junit(failing: dict[str, Any]) -> None:
    root = ET.fromstring(junit.render(RunRecord.from_json(failing)).encode())
    assert root.tag == "testsuites"
    (suite,) = root
    assert [child.tag for child in suite] == ["properties", "testcase", "testcase"]
    for case in suite.iter("testcase"):
        assert set(case.attrib) == {"classname", "name", "time"}
        assert [c.tag for c in case][0] == "properties"
        assert [c.tag for c in case][-1] == "system-out"
