"""The shipped catalogue passes as a whole when the harness works (the README's main job)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.testing import REPO, run_cli

pytestmark = pytest.mark.usefixtures("no_leftovers")


@pytest.mark.slow   # every scenario of the catalogue
def test_the_shipped_catalogue_passes(tmp_path: Path) -> None:
    proc = run_cli("run", "--quiet", "--report-dir", str(tmp_path), "scenarios", timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (results,) = tmp_path.glob("*/results.json")
    data = json.loads(results.read_text())
    shipped = {p.stem for p in (REPO / "scenarios").glob("*.yaml")}
    assert {s["name"] for s in data["scenarios"]} == shipped
    for sc in data["scenarios"]:
        assert sc["verdict"] == "pass", (sc["name"], sc["reason"])
        assert sc["about"], sc["name"]
