"""``connchaos report``: every format re-rendered from a results file, and the exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from junitparser import JUnitXml

from harness.testing import run_cli

pytestmark = pytest.mark.lab   # runs the CLI in a process of its own


def test_report_renders_every_format_next_to_the_results(tmp_path: Path, failing_path: Path) -> None:
    shutil.copy(failing_path, tmp_path / "results.json")
    summary = tmp_path / "step-summary.md"
    summary.write_text("earlier step\n")
    proc = run_cli("report", str(tmp_path / "results.json"), "--junit", str(tmp_path / "ci" / "junit.xml"),
                   env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert proc.returncode == 1, proc.stderr  # the run had a failing scenario
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ci", "junit.xml", "report.html", "results.json",
                                                         "step-summary.md", "summary.md"]
    assert (tmp_path / "ci" / "junit.xml").read_text() == (tmp_path / "junit.xml").read_text()
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads(failing_path.read_text())
    assert summary.read_text() == "earlier step\n" + (tmp_path / "summary.md").read_text() + "\n"
    assert "postgres-defaults-gate" in proc.stdout and "reports: " in proc.stdout
    assert JUnitXml.fromfile(str(tmp_path / "junit.xml")).failures == 1


@pytest.mark.slow   # renders the whole catalogue's report (20-30 s)
def test_report_into_another_folder_and_a_passing_run(tmp_path: Path, catalogue_path: Path) -> None:
    proc = run_cli("report", str(catalogue_path), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["junit.xml", "report.html", "results.json", "summary.md"]
    assert not (catalogue_path.parent / "junit.xml").exists()


@pytest.mark.slow   # renders the whole catalogue's report (20-30 s)
def test_a_baseline_regression_fails_a_passing_run(tmp_path: Path, catalogue: dict[str, Any]) -> None:
    old = json.loads(json.dumps(catalogue))
    for sc in old["scenarios"]:
        if sc["name"] == "websocket-tuned-ping":
            sc["summary"]["p95_s"] = 2.5
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "results.json").write_text(json.dumps(catalogue))
    new = str(tmp_path / "new" / "results.json")
    proc = run_cli("report", new, "--baseline", str(tmp_path / "old.json"))
    assert proc.returncode == 1
    assert "regression websocket-tuned-ping: p95 2.5 s -> 4 s (+1.5 s, beyond the tolerance 20% and 0.1 s)" \
        in proc.stdout
    written = json.loads(Path(new).read_text())
    assert written["baseline"]["regressions"][0]["scenario"] == "websocket-tuned-ping"
    assert "### Regressions against the baseline" in (tmp_path / "new" / "summary.md").read_text()
    # a wider tolerance lets it through; the stored comparison is replaced by the new one
    proc = run_cli("report", new, "--baseline", str(tmp_path / "old.json"), "--p95-tolerance", "2s")
    assert proc.returncode == 0, proc.stdout
    assert json.loads(Path(new).read_text())["baseline"]["regressions"] == []


@pytest.mark.invalid_results
def test_a_file_that_is_not_a_results_file_is_exit_2_naming_where(tmp_path: Path, failing: dict[str, Any]) -> None:
    failing["scenarios"][0]["summary"]["p95_s"] = "fast"
    bad = tmp_path / "results.json"
    bad.write_text(json.dumps(failing))
    proc = run_cli("report", str(bad))
    assert proc.returncode == 2
    assert f"{bad}: $.scenarios[0].summary.p95_s: 'fast' is not of type 'number', 'null'" in proc.stderr
    assert not (tmp_path / "junit.xml").exists()
    proc = run_cli("report", str(tmp_path / "missing.json"))
    assert proc.returncode == 2 and "missing.json: cannot read it: No such file or directory" in proc.stderr


def test_a_bad_tolerance_is_exit_2(catalogue_path: Path) -> None:
    proc = run_cli("report", str(catalogue_path), "--p95-tolerance", "lots")
    assert proc.returncode == 2
    assert "--p95-tolerance: expected a percentage like 20%" in proc.stderr


@pytest.mark.parametrize("command", ["run", "report"])
def test_help_lists_the_report_options(command: str) -> None:
    proc = run_cli(command, "--help")
    assert proc.returncode == 0, proc.stderr
    for option in ("--junit", "--baseline", "--p95-tolerance"):
        assert option in proc.stdout
    assert "(default 20%,100ms)" in " ".join(proc.stdout.split())
