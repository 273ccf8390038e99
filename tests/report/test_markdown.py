"""The Markdown summary for a CI job page."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from harness.core.records import RunRecord
from harness.report import markdown
from harness.report.baseline import Tolerance, compare


def test_a_passing_run_is_one_table(catalogue: dict[str, Any]) -> None:
    text = markdown.render(RunRecord.from_json(catalogue))
    lines = text.splitlines()
    assert lines[0] == "## connchaos run `20261126-123956-163ae8`: ✅ passed"
    assert lines[2].startswith("17 passed, 0 failed, 0 could not run (started 2026-11-26T12:39:56+00:00")
    rows = [line for line in lines if line.startswith("| `")]
    assert len(rows) == 17
    assert rows[0] == ("| `layers-packet-blackhole` | ✅ pass | packet | blackhole | 10/10 | 4.104 s | 4.109 s"
                       " | 4.109 s | 4.036 s (keepalive) | keepalive | 0 |")
    assert "| `layers-proxy-stall` | ✅ pass | proxy | proxy-stall | 0/10 | – | – | – | never (none) | – | 0 |" in rows
    assert all(row.count(" | ") == 10 for row in rows)
    assert "### Failures" not in text


def test_failures_carry_their_message(failing: dict[str, Any], error_entry: dict[str, Any]) -> None:
    failing["scenarios"].append(error_entry)
    text = markdown.render(RunRecord.from_json(failing))
    assert text.startswith("## connchaos run `20261126-133210-b23eb6`: ❌ failed\n\n1 passed, 1 failed, 1 could not run")
    assert "| `postgres-broken` | ⚠️ error | packet | blackhole | 0/0 | – | – | – | – | – | 0 |" in text
    assert "<details><summary><b>postgres-defaults-gate</b>: 3 of 3 faulted sessions not reclaimed" in text
    assert "why: predicted 7874.025 s by keepalive from the postgres settings: tcp_keepalives_idle=0" in text
    assert text.count("<details>") == 2 and text.count("</details>") == 2


def test_cells_are_escaped(failing: dict[str, Any]) -> None:
    failing["scenarios"][0]["fault"] = "a|b"
    lines = markdown.render(RunRecord.from_json(failing)).splitlines()
    row = next(line for line in lines if "postgres-defaults-gate` |" in line)
    assert "a\\|b" in row and row.count(" | ") == 10


def test_regressions_make_the_run_fail(catalogue: dict[str, Any]) -> None:
    new = {**catalogue, "scenarios": [dict(s, summary={**s["summary"], "survivors_killed": 1})
                                      if s["name"] == "tcp-raw-service" else s for s in catalogue["scenarios"]]}
    run = RunRecord.from_json(new)
    old = RunRecord.from_json(catalogue)
    run = replace(run, baseline=compare(old, run, Tolerance(0.2, None), "old.json"))
    text = markdown.render(run)
    assert text.startswith("## connchaos run `20261126-123956-163ae8`: ❌ failed")
    assert "17 passed, 0 failed, 0 could not run; 1 regression(s) against the baseline run" in text
    assert "### Regressions against the baseline (p95 tolerance 20%)\n\n- tcp-raw-service: survivors_killed 0 -> 1" in text
