"""``connchaos run``'s outputs (--report-dir, --json, --junit) are checked before anything
starts: one that cannot be written is exit 2 naming it, not a traceback or a failure after
the whole run (issue 16, item 9)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from harness import cli
from harness import run as run_module
from harness.errors import ScenarioError
from harness.testing import REPO

SCENARIO = str(REPO / "scenarios" / "websocket-pings-off.yaml")   # its checks ask no server


class _Started(Exception):
    """The run got past the checks to the machine's (the lab would be next)."""


@pytest.fixture(autouse=True)
def stop_at_the_machine_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    def started(*_: object, **__: object) -> None:
        raise _Started

    monkeypatch.setattr(run_module, "require_machine", started)


def run(*options: str) -> None:
    args = cli._parser().parse_args(["run", SCENARIO, *options])
    console = Console(file=io.StringIO())
    cli.cmd_run(args, console, console)


def problems(*options: str) -> list[str]:
    with pytest.raises(ScenarioError) as caught:
        run(*options)
    assert caught.value.exit_code == 2
    return [str(p) for p in caught.value.problems]


def test_a_report_dir_in_proc() -> None:
    assert problems("--report-dir", "/proc/foo") == [
        "--report-dir /proc/foo: cannot write in /proc (No such file or directory)"]


def test_a_report_dir_that_is_a_file(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("")
    assert problems("--report-dir", str(file)) == [f"--report-dir {file}: is a file, not a folder"]


def test_a_report_dir_below_a_file(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("")
    assert problems("--report-dir", f"{file}/reports") == [
        f"--report-dir {file}/reports: {file} is not a folder"]


def test_json_in_a_missing_folder(tmp_path: Path) -> None:
    # results.json is written with open(): its folder must be there
    target = tmp_path / "nope" / "r.json"
    assert problems("--report-dir", str(tmp_path), "--json", str(target)) == [
        f"--json {target}: no folder {tmp_path / 'nope'}"]


def test_json_onto_a_folder(tmp_path: Path) -> None:
    assert problems("--report-dir", str(tmp_path), "--json", str(tmp_path)) == [
        f"--json {tmp_path}: is a folder, not a file"]


def test_junit_in_proc_and_json_in_sys(tmp_path: Path) -> None:
    assert problems("--report-dir", str(tmp_path), "--junit", "/proc/x/j.xml", "--json", "/sys/r.json") == [
        "--junit /proc/x/j.xml: cannot write in /proc (No such file or directory)",
        "--json /sys/r.json: cannot write in /sys (Operation not permitted)",
    ]


def test_writable_outputs_pass_and_leave_nothing(tmp_path: Path) -> None:
    existing = tmp_path / "old.json"
    existing.write_text("kept")
    with pytest.raises(_Started):
        run("--report-dir", str(tmp_path / "new" / "reports"), "--junit", str(tmp_path / "j" / "j.xml"),
            "--json", str(existing))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.json"]
    assert existing.read_text() == "kept"


def test_json_to_stdout_is_not_a_path(tmp_path: Path) -> None:
    with pytest.raises(_Started):
        run("--report-dir", str(tmp_path), "--json", "-")
