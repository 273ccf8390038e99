"""``--tag`` and ``--skip-tag``: which scenarios of the given files run (or are explained)."""

from __future__ import annotations

from pathlib import Path

from harness.testing import run_cli, write_scenario

BODY = """name: {name}
tags: [{tags}]
target:
  service: postgres
sessions:
  count: 1
fault:
  type: blackhole
expect:
  reclaimed_within: 5s
"""


def _files(tmp_path: Path) -> Path:
    for name, tags in (("quick-one", "quick"), ("long-one", "long, nightly"), ("untagged", "")):
        write_scenario(tmp_path, name, BODY.format(name=name, tags=tags))
    return tmp_path


def _explained(proc_stdout: str) -> set[str]:
    return {line.split()[0] for line in proc_stdout.splitlines() if line and not line.startswith(" ")}


def test_tags_select_and_skip_tags_leave_out(tmp_path: Path) -> None:
    folder = str(_files(tmp_path))
    every = run_cli("explain", folder)
    assert every.returncode == 0, every.stderr
    assert _explained(every.stdout) == {"quick-one", "long-one", "untagged"}
    only = run_cli("explain", "--tag", "quick", "--tag", "nightly", folder)
    assert _explained(only.stdout) == {"quick-one", "long-one"}
    assert "1 of 3 scenarios left out by their tags" in only.stderr
    skipped = run_cli("explain", "--skip-tag", "long", folder)
    assert _explained(skipped.stdout) == {"quick-one", "untagged"}


def test_a_selection_of_nothing_is_bad_input_before_anything_runs(tmp_path: Path) -> None:
    folder = str(_files(tmp_path))
    proc = run_cli("run", "--tag", "no-such-tag", "--report-dir", str(tmp_path / "reports"), folder)
    assert proc.returncode == 2
    assert "no scenario of 3 is selected by --tag no-such-tag" in proc.stderr
    assert not (tmp_path / "reports").exists()
