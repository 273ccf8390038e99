"""results.schema.json: the real results validate; what is not a results file is named where."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from harness.core.records import SCHEMA
from harness.errors import ScenarioError
from harness.report import results


def test_the_schema_is_a_valid_draft_2020_12_schema_naming_its_version() -> None:
    schema = results.schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert "connchaos.results/1" in schema["$id"]
    assert schema["properties"]["schema"] == {"const": SCHEMA}


def test_the_schema_ships_with_the_package() -> None:
    from importlib import resources
    assert resources.files("harness.report").joinpath("results.schema.json").is_file()


def test_real_results_validate(catalogue_path: Path, failing_path: Path, error_entry: dict[str, Any]) -> None:
    for path in (catalogue_path, failing_path):
        assert results.problems(json.loads(path.read_text()), str(path)) == []
    data = json.loads(failing_path.read_text())
    data["scenarios"].append(error_entry)
    assert results.problems(data, "x") == []


@pytest.mark.parametrize(("change", "where", "words"), [
    (lambda d: d["scenarios"][1].update(verdict="passed"), "$.scenarios[1].verdict", "is not one of"),
    (lambda d: d["scenarios"][0]["summary"].pop("p95_s"), "$.scenarios[0].summary", "'p95_s' is a required"),
    (lambda d: d["scenarios"][0]["sessions"][2].update(reclaim_s="4s"), "$.scenarios[0].sessions[2].reclaim_s",
     "is not of type"),
    (lambda d: d["scenarios"][0]["sessions"][0]["events"][0].pop("t"), "$.scenarios[0].sessions[0].events[0]",
     "'t' is a required"),
    (lambda d: d.pop("run_id"), "$", "'run_id' is a required"),
])
def test_a_departure_is_reported_at_its_json_path(failing: dict[str, Any], change: Any, where: str,
                                                  words: str) -> None:
    data = copy.deepcopy(failing)
    change(data)
    (problem,) = results.problems(data, "old.json")
    assert (problem.path, problem.field) == ("old.json", where)
    assert words in problem.message


def test_another_schema_version_is_named(failing: dict[str, Any]) -> None:
    failing["schema"] = "connchaos.results/2"
    (problem,) = results.problems(failing, "new.json")
    assert problem.field == "$.schema"
    assert "'connchaos.results/2'" in problem.message and "connchaos.results/1" in problem.message


@pytest.mark.invalid_results
def test_read_refuses_a_file_that_is_not_json_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text('{"schema": "connchaos.results/1",\n "run_id": oops}\n')
    with pytest.raises(ScenarioError) as caught:
        results.read(str(path))
    (problem,) = caught.value.problems
    assert (problem.path, problem.line) == (str(path), 2)
    assert caught.value.exit_code == 2


@pytest.mark.invalid_results
def test_read_lists_a_broken_files_problems_cut_short(tmp_path: Path, catalogue: dict[str, Any]) -> None:
    for sc in catalogue["scenarios"]:
        sc["verdict"] = "ok"
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(catalogue))
    with pytest.raises(ScenarioError) as caught:
        results.read(str(path))
    problems = caught.value.problems
    assert len(problems) == 11  # ten, then how many more
    assert problems[-1].message == f"... and {len(catalogue['scenarios']) - 10} more problems"
    assert str(problems[0]).startswith(f"{path}: $.scenarios[0].verdict: 'ok' is not one of")


def test_the_suite_checks_every_results_file_it_leaves(tmp_path: Path, failing: dict[str, Any]) -> None:
    """The conftest hook that validates each test's results files finds a broken one."""
    from harness.testing import results_files_invalid

    (tmp_path / "r" / "run").mkdir(parents=True)
    (tmp_path / "r" / "run" / "results.json").write_text(json.dumps(failing))
    assert results_files_invalid(tmp_path) == []
    failing["scenarios"][0]["summary"]["reclaimed"] = -1
    (tmp_path / "copy.json").write_text(json.dumps(failing))
    (bad,) = results_files_invalid(tmp_path)
    assert "copy.json: $.scenarios[0].summary.reclaimed: -1 is less than the minimum of 0" in bad
    (tmp_path / "copy.json").unlink()
