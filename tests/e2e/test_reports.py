"""A real run writes every report; a baseline it regresses against fails it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from junitparser import JUnitXml

from harness.testing import REPO, run_cli

pytestmark = pytest.mark.lab   # runs the CLI in a process of its own

SAMPLE = REPO / "tests" / "report" / "data" / "catalogue.json"


@pytest.mark.slow   # a run, then every report rendered twice
@pytest.mark.usefixtures("no_leftovers")
def test_a_run_writes_every_format_and_gates_on_its_baseline(tmp_path: Path) -> None:
    # The baseline: the catalogue run, with a p95 for postgres-client-vanishes that this run
    # cannot match (keepalive 2 + 3 x 1 s reclaims at about 4.1 s).
    old = json.loads(SAMPLE.read_text())
    for sc in old["scenarios"]:
        if sc["name"] == "postgres-client-vanishes":
            sc["summary"]["p95_s"] = 1.0
    (tmp_path / "old.json").write_text(json.dumps(old))
    step = tmp_path / "step-summary.md"
    proc = run_cli("run", "--quiet", "--report-dir", str(tmp_path / "r"), "--junit", str(tmp_path / "junit.xml"),
                   "--baseline", str(tmp_path / "old.json"), "scenarios/postgres-client-vanishes.yaml",
                   env={"GITHUB_STEP_SUMMARY": str(step)})
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the verdict passed; the baseline did not
    (folder,) = (tmp_path / "r").iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["junit.xml", "report.html", "results.json", "summary.md"]
    data = json.loads((folder / "results.json").read_text())
    (entry,) = data["scenarios"]
    assert entry["verdict"] == "pass"
    (regression,) = data["baseline"]["regressions"]
    assert (regression["scenario"], regression["what"], regression["was"]) == ("postgres-client-vanishes", "p95", "1 s")
    assert f"regression {regression['text']}" in proc.stdout
    assert len(data["baseline"]["notes"]) == 16  # the rest of the catalogue did not run: notes only

    suite = next(iter(JUnitXml.fromfile(str(tmp_path / "junit.xml"))))
    assert (suite.tests, suite.failures, suite.errors) == (2, 1, 0)
    case, baseline = list(suite)
    assert (case.classname, case.name, case.is_passed) == ("scenarios/postgres-client-vanishes.yaml",
                                                          "postgres-client-vanishes", True)
    assert baseline.classname == "connchaos.baseline" and not baseline.is_passed
    assert (folder / "junit.xml").read_text() == (tmp_path / "junit.xml").read_text()
    assert step.read_text() == (folder / "summary.md").read_text() + "\n"
    assert "| `postgres-client-vanishes` | ✅ pass | packet | client-vanish | 20/20 |" in step.read_text()

    # `connchaos report` re-renders the same files from the results alone
    rendered = tmp_path / "again"
    again = run_cli("report", str(folder / "results.json"), "--out", str(rendered))
    assert again.returncode == 1  # the stored comparison still has its regression
    for name in ("junit.xml", "summary.md", "results.json"):
        assert (rendered / name).read_text() == (folder / name).read_text(), name


@pytest.mark.invalid_results
def test_a_bad_baseline_is_exit_2_before_anything_starts(tmp_path: Path) -> None:
    (tmp_path / "old.json").write_text('{"schema": "connchaos.results/1"}')
    proc = run_cli("run", "--report-dir", str(tmp_path / "r"), "--baseline", str(tmp_path / "old.json"),
                   "scenarios/postgres-client-vanishes.yaml")
    assert proc.returncode == 2
    assert f"{tmp_path / 'old.json'}: $: 'run_id' is a required property" in proc.stderr
    assert not (tmp_path / "r").exists()
