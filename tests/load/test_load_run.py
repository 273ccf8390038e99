"""The small load run through the CLI, as a user runs it: 300 WebSocket sessions held by
Locust (a master and two workers) in a real lab, 20% blackholed at the router."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.testing import run_cli

pytestmark = pytest.mark.usefixtures("no_leftovers")


def alive_checks_passed(row: dict[str, int], faulted: int) -> int:
    """The survivors' checks in Locust's statistics: how many passed. Only a faulted session
    may fail one: the harness waits for the survivors' checks, then reverts the fault; the
    server, which reclaimed the faulted sessions, answers their clients with resets, and a
    faulted client that reaches its check only then finds its socket closed (seen once in
    CI: ``OSError('Socket is closed')``)."""
    assert row["failures"] <= faulted, row
    return row["requests"] - row["failures"]


@pytest.mark.slow   # a Locust load run
def test_small_load_run_reclaims_the_faulted_fraction_and_spares_the_rest(tmp_path: Path) -> None:
    proc = run_cli("run", "scenarios/load-websocket-small.yaml", "--report-dir", str(tmp_path), timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [folder] = list(tmp_path.iterdir())
    [entry] = json.loads((folder / "results.json").read_text())["scenarios"]
    assert entry["verdict"] == "pass", entry["reason"]
    load, summary = entry["load"], entry["summary"]
    assert (load["users"], load["workers"], load["held"]) == (300, 2, 300)

    # the faulted fraction: chosen from the server's table, every one reclaimed by the ping
    # (or, with an echo in flight at the fault, by TCP_USER_TIMEOUT)
    assert summary["faulted"] == load["faulted"] == 60 and summary["reclaimed"] == 60
    faulted = [s for s in entry["sessions"] if s["faulted"]]
    assert len(faulted) == 60 and len({s["client"] for s in faulted}) == 60
    for s in faulted:
        assert s["reclaimed"] and s["mechanism"] in ("heartbeat", "user-timeout"), s
        assert s["reclaim_s"] <= 8
        assert {"fault", "opened", "last-activity"} <= {e["what"] for e in s["events"]}

    # the survivors: still held by the server and answering their own client's check
    assert summary["survivors_killed"] == 0
    assert load["survivors_checked_ok"] == 240 and load["survivors_broken_at_client"] == 0
    assert all(s["faulted"] for s in entry["sessions"])   # untouched survivors are only counted

    # Locust's own statistics, in the entry and as files in the report folder
    stats = {r["name"]: r for r in load["locust"]["stats"]}
    assert stats["open"]["requests"] == 300 and stats["open"]["failures"] == 0
    assert alive_checks_passed(stats["alive-check"], faulted=60) == 240
    assert stats["request"]["requests"] > 300
    for name in ("locust_stats.csv", "stats.json", "master.log", "worker0.log", "worker1.log"):
        assert (folder / "load-websocket-small" / "locust" / name).is_file(), name
    assert set(load["usage"]["locust"]) == {"master", "worker0", "worker1"}

    # the server over time: the sessions arrive, then the faulted ones go
    series = load["resources"]["series"]
    assert max(s["established"] for s in series) == 300
    assert any(s["t"] > 0 and s["established"] == 240 for s in series), series
    assert all(s["processes"] >= 1 and s["fds"] > 0 and s["rss_mib"] > 0 for s in series)


SSH_LOAD = """\
name: load-ssh-small
about: 60 SSH sessions held by Locust (paramiko, a channel running cat), a line echoed every
  2 s; a quarter blackholed; sshd's ClientAlive (1 s, count 2) lets them go.
target:
  service: ssh
  settings: {ClientAliveInterval: 1, ClientAliveCountMax: 2}
load:
  users: 60
  spawn_rate: 30
  hold: 1s
  activity: {every: 2s}
  workers: 2
fault:
  type: blackhole
  sessions: 0.25
expect:
  reclaimed_within: 10s
  survivors_untouched: true
observe:
  deadline: 14s
  interval: 50ms
"""


@pytest.mark.slow   # a Locust load run
def test_ssh_sessions_under_load_are_reclaimed_by_client_alive(tmp_path: Path) -> None:
    scenario = tmp_path / "load-ssh-small.yaml"
    scenario.write_text(SSH_LOAD)
    proc = run_cli("run", str(scenario), "--report-dir", str(tmp_path / "reports"), timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [folder] = list((tmp_path / "reports").iterdir())
    [entry] = json.loads((folder / "results.json").read_text())["scenarios"]
    load, summary = entry["load"], entry["summary"]
    assert (load["held"], load["faulted"], summary["reclaimed"]) == (60, 15, 15), entry["reason"]
    for s in entry["sessions"]:
        if s["faulted"]:
            assert s["mechanism"] == "heartbeat" and s["server_pid"], s
    assert summary["survivors_killed"] == 0 and load["survivors_checked_ok"] == 45
    stats = {r["name"]: r for r in load["locust"]["stats"]}
    assert stats["open"]["requests"] == 60 and stats["open"]["failures"] == 0
    assert stats["request"]["requests"] > 0
    assert alive_checks_passed(stats["alive-check"], faulted=15) == 45
