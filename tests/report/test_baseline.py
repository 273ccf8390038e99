"""Baselines: what counts as a regression, and the tolerance on p95."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from harness.core.records import BaselineRecord, RunRecord
from harness.report.baseline import DEFAULT_TOLERANCE, Tolerance
from harness.report.baseline import compare as compare_records


@pytest.mark.parametrize(("text", "fraction", "seconds"), [
    ("20%", 0.2, None), ("0.5s", None, 0.5), ("500ms", None, 0.5), ("20%,100ms", 0.2, 0.1),
    (" 100ms , 5% ", 0.05, 0.1), ("0%", 0.0, None),
])
def test_tolerance_forms(text: str, fraction: float | None, seconds: float | None) -> None:
    assert Tolerance.parse(text) == Tolerance(fraction, seconds)


@pytest.mark.parametrize("text", ["20", "twenty%", "20%,30%", "1s,2s", "-1s", "", "20%,"])
def test_a_bad_tolerance_says_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match="expected a percentage like 20%, a duration like 500ms, or both"):
        Tolerance.parse(text)


def test_growth_must_pass_every_bound() -> None:
    both = Tolerance.parse(DEFAULT_TOLERANCE)
    assert not both.exceeded(0.003, 0.005)  # +66 %, but 2 ms: jitter
    assert not both.exceeded(4.1, 4.9)  # +0.8 s, but under 20 %
    assert both.exceeded(4.1, 5.0)  # +22 % and +0.9 s
    assert not both.exceeded(4.1, 3.0)
    assert Tolerance(0.2, None).exceeded(0.003, 0.005)
    assert not Tolerance(0.2, None).exceeded(10.0, 12.0)  # exactly at the bound is allowed
    assert Tolerance(None, 0.5).exceeded(1.0, 1.6) and not Tolerance(None, 0.5).exceeded(1.0, 1.5)
    assert str(both) == "20% and 0.1 s"


def compare(old: dict[str, Any], new: dict[str, Any], tolerance: Tolerance,
            baseline: str = "baseline") -> BaselineRecord:
    """``baseline.compare`` of two results files' contents."""
    return compare_records(RunRecord.from_json(old), RunRecord.from_json(new), tolerance, baseline)


def _run(results: dict[str, Any], **changes: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``results`` with some scenarios' fields (and summary fields) changed."""
    out = copy.deepcopy(results)
    for sc in out["scenarios"]:
        change = changes.get(sc["name"].replace("-", "_"), {})
        sc["summary"].update(change.pop("summary", {}))
        sc.update(change)
    return out


def test_the_same_run_has_no_regression(catalogue: dict[str, Any]) -> None:
    result = compare(catalogue, catalogue, Tolerance.parse("0%"))
    assert result.regressions == () and result.notes == ()


def test_each_kind_of_regression_is_listed(catalogue: dict[str, Any]) -> None:
    new = _run(catalogue,
               postgres_client_vanishes={"verdict": "fail", "reason": "1 of 20 not reclaimed within 8 s",
                                         "summary": {"p95_s": 9.0}},
               postgres_partial_blackhole={"summary": {"survivors_killed": 2}},
               ssh_client_alive={"verdict": "error", "reason": "sshd did not start", "summary": {"p95_s": None}},
               postgres_peer_reboot={"summary": {"p95_s": None, "reclaimed": 0}},
               websocket_tuned_ping={"summary": {"p95_s": 4.05}})  # within the tolerance
    result = compare(catalogue, new, Tolerance.parse("20%,100ms"), "old.json")
    assert [r.text for r in result.regressions] == [
        "postgres-client-vanishes: verdict pass -> fail (1 of 20 not reclaimed within 8 s)",
        "postgres-client-vanishes: p95 4.129 s -> 9 s (+4.871 s, beyond the tolerance 20% and 0.1 s)",
        "postgres-partial-blackhole: survivors_killed 0 -> 2",
        "postgres-peer-reboot: p95 2.076 s -> none (no faulted session reclaimed; 10 were)",
        "ssh-client-alive: verdict pass -> error (sshd did not start)",
    ]
    block = result.to_json()
    assert block["file"] == "old.json" and block["run_id"] == catalogue["run_id"]
    assert block["regressions"][2] == {"scenario": "postgres-partial-blackhole", "what": "survivors_killed",
                                       "was": "0", "now": "2",
                                       "text": "postgres-partial-blackhole: survivors_killed 0 -> 2"}


def test_a_better_run_is_no_regression(failing: dict[str, Any]) -> None:
    better = _run(failing, postgres_defaults_gate={"verdict": "pass"},
                  postgres_client_vanishes={"summary": {"p95_s": 2.0}})
    assert compare(failing, better, Tolerance(0.0, None)).regressions == ()


def test_missing_and_new_scenarios_are_notes(catalogue: dict[str, Any], failing: dict[str, Any]) -> None:
    result = compare(catalogue, failing, Tolerance.parse("20%"))
    assert result.regressions == ()
    assert "layers-proxy-stall: in the baseline, not in this run" in result.notes
    assert result.notes[-1] == "postgres-defaults-gate: new, not in the baseline"
    assert len(result.notes) == 17
