"""Progress while a run goes: the live bar on a terminal, plain lines elsewhere, -q and -v."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from harness import run as runner
from harness.core.records import ScenarioRecord
from harness.report.progress import RunProgress
from harness.testing import run_cli, write_scenario

QUICK = """name: quick
target:
  service: postgres
  settings: {tcp_keepalives_idle: 1, tcp_keepalives_interval: 1, tcp_keepalives_count: 1}
sessions: {count: 2, hold: 500ms}
fault: {type: blackhole}
expect: {reclaimed_within: 5s}
"""
ANSI = re.compile(r"\x1b\[")


def _scenario(fields: dict[str, Any]) -> ScenarioRecord:
    """A scenario named pg-demo that ran, with ``fields`` (sessions give only what they need)."""
    sessions = [{"predicted_s": None, **s} for s in fields.pop("sessions")]
    return ScenarioRecord.from_json({"name": "pg-demo", "verdict": "pass", "reason": "", "backend": "local",
                                     "layer": "packet", "fault": "blackhole", "prediction": None,
                                     "sessions": sessions, "summary": {}, **fields})


def _terminal() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=True, width=120), buf


def test_live_view_shows_reclaimed_so_far_against_the_deadline() -> None:
    console, buf = _terminal()
    with RunProgress(console) as view:
        assert view.live
        view.line("pg-demo: 10 sessions open; holding 1 s")
        view.observe(3, 10, 4.04, 15.0)
        assert view._bar is not None
        view._bar.refresh()
        shown = buf.getvalue()
    assert "pg-demo" in shown
    assert "reclaimed 3/10" in shown
    assert "4.0 s / 15.0 s" in shown
    assert ANSI.search(shown), "a terminal gets a drawn bar"


def test_no_terminal_means_plain_lines_and_no_bar() -> None:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=120)
    with RunProgress(console) as view:
        assert not view.live
        view.line("pg-demo: starting (x.yaml)")
        view.observe(3, 10, 4.04, 15.0)
        view.event(1, 2.5, "probe", "1")  # not verbose: not shown
    text = buf.getvalue()
    assert "pg-demo: starting (x.yaml)" in text
    assert "reclaimed" not in text and "probe" not in text
    assert not ANSI.search(text)


def test_quiet_prints_nothing_even_on_a_terminal() -> None:
    console, buf = _terminal()
    with RunProgress(console, quiet=True, verbose=True) as view:
        assert not view.live and not view.verbose
        view.line("pg-demo: starting")
        view.observe(1, 2, 1.0, 5.0)
        view.event(0, 1.0, "probe", "1")
        view.scenario_done(_scenario({"sessions": [
            {"id": 0, "faulted": True, "reclaimed": True, "reclaim_s": 1.0, "mechanism": "keepalive"}]}))
    assert buf.getvalue() == ""


def test_verbose_tells_how_each_faulted_session_ended() -> None:
    buf = io.StringIO()
    with RunProgress(Console(file=buf, width=200), verbose=True) as view:
        view.line("pg-demo: starting")
        view.event(3, 2.0, "probe", "1")
        view.scenario_done(_scenario({"observed_s": 15.0, "sessions": [
            {"id": 3, "faulted": True, "reclaimed": True, "reclaim_s": 4.114, "predicted_s": 4.03,
             "mechanism": "keepalive"},
            {"id": 4, "faulted": True, "reclaimed": False, "reclaim_s": None, "mechanism": None},
            {"id": 5, "faulted": False, "reclaimed": False, "reclaim_s": None, "mechanism": None}]}))
    text = buf.getvalue()
    assert "pg-demo: session 3 probe (1) at 2.000 s" in text
    assert "session 3 reclaimed at 4.114 s by keepalive (predicted 4.03 s)" in text
    assert "session 4 not reclaimed in 15.000 s" in text
    assert "session 5" not in text


@pytest.mark.usefixtures("no_leftovers")
def test_the_run_reports_each_sample_and_event_to_its_hooks(tmp_path: Path) -> None:
    loaded = runner.prepare([str(write_scenario(tmp_path, "quick", QUICK))])
    samples: list[tuple[int, int, float, float]] = []
    events: list[tuple[int, float, str, str]] = []
    res = runner.run(loaded, on_observe=lambda *a: samples.append(a),
                     on_event=lambda *a: events.append(a))
    assert res.scenarios[0].verdict == "pass", res.scenarios[0].reason
    assert len(samples) > 10
    assert samples[0][0] == 0 and samples[-1][:2] == (2, 2)
    assert all(s[1] == 2 and s[3] == 5.0 for s in samples)
    elapsed = [s[2] for s in samples]
    assert elapsed == sorted(elapsed)
    assert {(sid, what) for sid, _, what, _ in events} >= {(0, "probe"), (1, "probe"),
                                                            (0, "socket-gone"), (1, "socket-gone")}


@pytest.mark.usefixtures("no_leftovers")
@pytest.mark.parametrize("flag", ["", "-q", "-v"])
def test_cli_progress_without_a_terminal(tmp_path: Path, flag: str) -> None:
    path = write_scenario(tmp_path, "quick", QUICK)
    args = ["run", str(path), "--report-dir", str(tmp_path / "r"), *([flag] if flag else [])]
    done = run_cli(*args, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "quick" in done.stdout and "pass" in done.stdout  # the table, always
    assert not ANSI.search(done.stderr)
    if flag == "-q":
        assert done.stderr == ""
        return
    assert "quick: starting" in done.stderr
    assert "reclaimed 2/2" not in done.stderr  # no live bar in a log
    verbose_lines = [line for line in done.stderr.splitlines() if "quick: session" in line]
    if flag == "-v":
        assert any(re.search(r"session 0 probe \(1\) at \d+\.\d+ s", line) for line in verbose_lines)
        assert any(re.search(r"session 1 reclaimed at \d+\.\d+ s by keepalive", line) for line in verbose_lines)
    else:
        assert verbose_lines == []
