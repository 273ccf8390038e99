"""Every report rendered from records is the one the results dicts gave before the records
existed: JUnit XML, Markdown, the HTML page (its text; the plots are matplotlib's and vary
with its version) and the baseline block, for the shipped data files, an error and an
interrupted run, and a run compared with a baseline.

The expected files in ``data/rendered`` were written by the dict-based reports (as of
commit 843daf2, before the records). Regenerate them only for an intended change of output:
``python tests/report/test_rendered.py``.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from harness.core.records import RunRecord
from harness.report import html, junit, markdown
from harness.report.baseline import Tolerance, compare

DATA = Path(__file__).resolve().parent / "data"
EXPECTED = DATA / "rendered"
ERROR_ENTRY = {"name": "postgres-broken", "file": "scenarios/postgres-broken.yaml", "about": "",
               "verdict": "error", "reason": "start postgres: initdb failed: no space left on device",
               "backend": "local", "layer": "packet", "fault": "blackhole", "prediction": None,
               "sessions": [], "summary": {"sessions": 0, "faulted": 0, "reclaimed": 0, "p50_s": None,
                                           "p95_s": None, "max_s": None, "survivors_killed": 0}}


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return data


def _mixed() -> dict[str, Any]:
    """failing.json with a scenario that could not run, interrupted."""
    data = _load("failing")
    data["scenarios"].append(copy.deepcopy(ERROR_ENTRY))
    data["interrupted"] = True
    return data


def _baselined() -> tuple[RunRecord, RunRecord]:
    """The catalogue run again with every kind of regression and a missing and a new scenario,
    and the catalogue run as its baseline."""
    old, new = _load("catalogue"), _load("catalogue")
    for sc in new["scenarios"][:3]:
        if sc["summary"]["p95_s"] is not None:
            sc["summary"]["p95_s"] = sc["summary"]["p95_s"] * 2 + 1
    new["scenarios"][3].update(verdict="fail", reason="made up")
    new["scenarios"][4]["summary"]["survivors_killed"] = 3
    new["scenarios"][5]["summary"]["p95_s"] = None
    del new["scenarios"][6]
    new["scenarios"].append(_load("failing")["scenarios"][0])
    return RunRecord.from_json(old), RunRecord.from_json(new)


def runs() -> dict[str, RunRecord]:
    out = {name: RunRecord.from_json(_load(name)) for name in ("catalogue", "failing", "results")}
    out["mixed"] = RunRecord.from_json(_mixed())
    old, new = _baselined()
    out["baselined"] = replace(new, baseline=compare(old, new, Tolerance.parse("20%,100ms"), "old.json"))
    return out


def html_text(page: str) -> str:
    """The page with each plot reduced to its label."""
    return re.sub(r'<svg role="img" aria-label="([^"]*)".*?</svg>', r'<svg aria-label="\1"/>', page,
                  flags=re.DOTALL)


def rendered(run: RunRecord) -> dict[str, str]:
    """Each output of ``run`` by the name of its expected file (the HTML page shows no baseline)."""
    out = {"junit.xml": junit.render(run), "md": markdown.render(run)}
    if run.baseline is None:
        out["html"] = html_text(html.render(run))
    else:
        out["baseline.json"] = json.dumps(run.baseline.to_json(), indent=1) + "\n"
    return out


CASES = [(name, kind) for name in ("catalogue", "failing", "results", "mixed")
         for kind in ("junit.xml", "md", "html")]
CASES += [("baselined", kind) for kind in ("junit.xml", "md", "baseline.json")]


@pytest.fixture(scope="module")
def outputs() -> dict[str, dict[str, str]]:
    return {name: rendered(run) for name, run in runs().items()}


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_the_report_is_what_it_was(outputs: dict[str, dict[str, str]], name: str, kind: str) -> None:
    expected = (EXPECTED / f"{name}.{kind}").read_text(encoding="utf-8")
    assert outputs[name][kind] == expected


def test_a_record_written_back_is_the_file_it_was_read_from(tmp_path: Path) -> None:
    from harness.report import results

    for name in ("catalogue", "failing", "results"):
        run = results.read(str(DATA / f"{name}.json"))
        written = Path(results.write(run, str(tmp_path), f"{name}.json"))
        assert written.read_text() == json.dumps(_load(name), indent=1) + "\n"


if __name__ == "__main__":  # pragma: no cover
    for run_name, files in {name: rendered(run) for name, run in runs().items()}.items():
        for file_kind, text in files.items():
            (EXPECTED / f"{run_name}.{file_kind}").write_text(text, encoding="utf-8")
    sys.exit(0)
