"""The GitHub Actions example: valid YAML, the steps the docs promise, options connchaos takes."""

from __future__ import annotations

import shlex
from typing import Any

import yaml

from harness.cli import _parser
from harness.testing import REPO

EXAMPLE = REPO / "docs" / "examples" / "connchaos.yml"


def _steps() -> list[dict[str, Any]]:
    workflow = yaml.safe_load(EXAMPLE.read_text())
    assert set(workflow[True]) == {"push", "pull_request"}  # YAML 1.1 reads the key `on` as true
    assert workflow["permissions"]["checks"] == "write"
    steps: list[dict[str, Any]] = workflow["jobs"]["chaos"]["steps"]
    return steps


def _uses(steps: list[dict[str, Any]], action: str) -> dict[str, Any]:
    (step,) = [s for s in steps if s.get("uses", "").startswith(action + "@")]
    return step


def test_the_example_has_every_step_in_order() -> None:
    steps = _steps()
    order = [s.get("uses", s.get("run", "")).split("@")[0].split()[0:2] for s in steps]
    assert order == [["actions/checkout"], ["sudo", "dev/setup"], ["sudo", "--preserve-env=GITHUB_STEP_SUMMARY"],
                     ["actions/upload-artifact"], ["mikepenz/action-junit-report"]]
    assert _uses(steps, "actions/upload-artifact")["with"]["path"] == "reports/"
    assert _uses(steps, "mikepenz/action-junit-report")["with"]["report_paths"] == "reports/junit.xml"
    for action in ("actions/upload-artifact", "mikepenz/action-junit-report"):
        assert _uses(steps, action)["if"] == "${{ !cancelled() }}"  # also after a failed run


def test_the_run_step_uses_options_connchaos_accepts() -> None:
    (run,) = [s["run"] for s in _steps() if "connchaos run" in s.get("run", "")]
    argv = shlex.split(run)
    args = _parser().parse_args(argv[argv.index("run"):])
    assert (args.paths, args.report_dir, args.junit) == (["scenarios/"], "reports", "reports/junit.xml")
    assert args.baseline == "baselines/results.json" and str(args.p95_tolerance) == "20% and 0.1 s"


def test_the_docs_show_the_same_workflow() -> None:
    doc = (REPO / "docs" / "github-actions.md").read_text()
    block = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert yaml.safe_load(block) == yaml.safe_load(EXAMPLE.read_text())
