"""process-pause and slow-reader end to end, with real servers: the faulted sessions in a
stopped client process of their own while the survivors stay on the harness's loop, the
predictions met within 0.3 s, and nothing left behind (a stopped process included) on
success, on SIGTERM, and with the pytest fixture; on docker too."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from harness.testing import REPO, run_cli, write_scenario
from tests.e2e.runs import Run, everything

pytestmark = pytest.mark.usefixtures("no_leftovers")

AGREE_S = 0.3


def processes_of(text: str) -> list[tuple[int, str]]:
    """(pid, state) of each process whose command line holds ``text`` (a forked session host
    keeps its harness's command line)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace")
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text in argv:
            found.append((int(entry), state))
    return found


@pytest.mark.slow   # a lab run, about 8 s
def test_ssh_client_alive_reclaims_a_paused_client(connchaos_lab: Any) -> None:
    result = connchaos_lab.run(
        service="ssh", sessions=3, faulted=2, fault="process-pause", hold="500ms",
        settings={"ClientAliveInterval": 1, "ClientAliveCountMax": 1, "TCPKeepAlive": "yes"},
        expect={"reclaimed_within": "6s", "mechanism": "heartbeat"}, deadline="7s")
    assert result.verdict == "pass", result.record.reason
    for s in result.faulted:
        assert s.reclaimed and abs(s.reclaim_s - s.predicted_s) <= AGREE_S, s
    assert all(s.alive_at_end for s in result.survivors)


@pytest.mark.slow   # a lab run, about 8 s
def test_slow_reader_without_user_timeout_is_held_with_its_window_full(connchaos_lab: Any) -> None:
    result = connchaos_lab.run(
        service="postgres", sessions=3, faulted=2, fault="slow-reader", hold="500ms",
        settings={"tcp_keepalives_idle": 1, "tcp_keepalives_interval": 1, "tcp_keepalives_count": 2},
        expect={"still_held_after": "4s"}, deadline="4s")
    assert result.verdict == "pass", result.record.reason
    assert result.prediction is not None and result.prediction.reclaim_s is None
    for s in result.faulted:
        assert not s.reclaimed
        closed = s.times("zero-window")
        assert closed and 0 <= closed[0] < 1.0    # the window fills within moments of the request
        assert s.times("zero-window-probe")       # and the probes go out, answered
        assert not s.times("process-exit")
    assert all(s.alive_at_end for s in result.survivors)


PAUSED = """name: paused-sigterm
target: {service: postgres, settings: {tcp_keepalives_idle: 1, tcp_keepalives_interval: 1}}
sessions: {count: 3, hold: 200ms}
fault: {type: process-pause, sessions: 2}
expect: {still_held_after: 20s}
"""


def test_sigterm_while_the_client_is_stopped_leaves_nothing(tmp_path: Path) -> None:
    path = write_scenario(tmp_path, "paused", PAUSED)
    before = everything()
    run = Run(path, tmp_path)
    run.wait_for("watching up to")
    stopped = [pid for pid, state in processes_of(str(path)) if state == "T"]
    if len(stopped) != 1:
        run.proc.kill()
        run.end()
        raise AssertionError(f"one stopped session host expected: {processes_of(str(path))}")
    run.send(signal.SIGTERM)
    assert run.end() == 130, run.err
    assert processes_of(str(path)) == [], stopped    # continued and killed
    assert everything() - before == set()


@pytest.mark.slow   # the catalogue's three, about 30 s
def test_the_catalogue_scenarios_and_their_reports(tmp_path: Path) -> None:
    names = ("websocket-process-pause-ping", "postgres-process-pause-holds", "postgres-slow-reader-user-timeout")
    proc = run_cli("run", "--quiet", "--report-dir", str(tmp_path),
                   *(str(REPO / "scenarios" / f"{n}.yaml") for n in names), timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (folder,) = tmp_path.iterdir()
    by_name = {sc["name"]: sc for sc in json.loads((folder / "results.json").read_text())["scenarios"]}
    ws, held, slow = (by_name[n] for n in names)
    for sc in (ws, slow):
        for s in sc["sessions"]:
            if s["faulted"]:
                assert s["reclaimed"] and abs(s["reclaim_s"] - s["predicted_s"]) <= AGREE_S, s
            else:
                assert s["alive_at_end"] is True, s
    assert all(s["mechanism"] == "heartbeat" for s in ws["sessions"] if s["faulted"])
    assert all(s["mechanism"] == "user-timeout" for s in slow["sessions"] if s["faulted"])
    assert held["prediction"]["reclaim_s"] is None and "acknowledges every keepalive probe" in \
        held["prediction"]["formula"]
    assert not any(s["reclaimed"] for s in held["sessions"])
    html = (folder / "report.html").read_text()
    assert "window full (persist timer)" in html and "slow-reader" in html
    assert "process-pause" in (folder / "summary.md").read_text()
    assert "postgres-slow-reader-user-timeout" in (folder / "junit.xml").read_text()


@pytest.mark.docker
@pytest.mark.slow   # a docker run, about 12 s
def test_process_pause_on_docker_stops_the_session_host_in_the_client_container(
        tmp_path: Path, images_built: None) -> None:
    proc = run_cli("run", "--quiet", "--backend", "docker", "--report-dir", str(tmp_path),
                   str(REPO / "scenarios" / "websocket-process-pause-ping.yaml"), timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (results,) = tmp_path.glob("*/results.json")
    (sc,) = json.loads(results.read_text())["scenarios"]
    assert sc["backend"] == "docker"
    for s in sc["sessions"]:
        if s["faulted"]:
            assert s["reclaimed"] and abs(s["reclaim_s"] - s["predicted_s"]) <= AGREE_S, s
        else:
            assert s["alive_at_end"] is True
