"""The typed records read and write results.json without losing or changing anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.core.records import SCHEMA, RunRecord, ScenarioRecord, SessionRecord
from harness.report.results import validate

DATA = Path(__file__).resolve().parent.parent / "report" / "data"


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.json")))
def test_a_results_file_round_trips(name: str) -> None:
    data = json.loads((DATA / name).read_text())
    record = RunRecord.from_json(data)
    assert record.to_json() == data
    assert RunRecord.from_json(record.to_json()) == record
    validate(record.to_json(), name)


def test_records_are_typed_and_frozen() -> None:
    data = json.loads((DATA / "results.json").read_text())
    run = RunRecord.from_json(data)
    assert run.schema == SCHEMA
    scenario = run.scenarios[0]
    assert isinstance(scenario, ScenarioRecord) and isinstance(scenario.sessions[0], SessionRecord)
    assert scenario.summary.sessions == len(data["scenarios"][0]["sessions"]) or scenario.load is not None
    with pytest.raises(AttributeError):
        scenario.verdict = "pass"  # type: ignore[misc]


def test_unknown_keys_are_kept() -> None:
    data = json.loads((DATA / "results.json").read_text())
    data["from_a_later_version"] = {"x": 1}
    data["scenarios"][0]["sessions"][0]["new_field"] = [1, 2]
    again = RunRecord.from_json(data).to_json()
    assert again["from_a_later_version"] == {"x": 1}
    assert again["scenarios"][0]["sessions"][0]["new_field"] == [1, 2]


def test_an_error_entry_round_trips() -> None:
    entry = {"name": "x", "file": "x.yaml", "about": "", "verdict": "error", "reason": "interrupted",
             "backend": "local", "layer": "packet", "fault": "blackhole", "prediction": None,
             "sessions": [], "summary": {"sessions": 0, "faulted": 0, "reclaimed": 0, "p50_s": None,
                                         "p95_s": None, "max_s": None, "survivors_killed": 0}}
    assert ScenarioRecord.from_json(entry).to_json() == entry


def test_a_load_block_round_trips_and_leaves_out_what_is_unknown() -> None:
    from harness.core.records import LoadRecord

    load = {"users": 20, "workers": 0, "spawn_rate": 10.0, "held": 20, "faulted": 5, "open_failed": 0,
            "survivors_checked_ok": 15, "survivors_broken_at_client": 0,
            "sessions_listed": "faulted sessions and killed survivors; untouched survivors are counted only",
            "locust": {"stats": [], "failures": [], "files": []}, "usage": {"harness": {"cpu_s": 1.0}},
            "resources": {"interval_s": 1.0, "series": []}}
    record = LoadRecord.from_json(load)
    assert record.open_failed_first is None and record.to_json() == load
    failed = {**load, "open_failed": 1, "open_failed_first": "refused"}
    assert LoadRecord.from_json(failed).to_json() == failed
