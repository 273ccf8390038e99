"""The middlebox end to end, with real conntrack and nftables in the router: the catalogue's
NAT scenarios agree with their predictions, the entries' expiry is in the timeline, the
survivors are untouched, the reports show it; the pytest fixture and a load run too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.testing import REPO, run_cli

pytestmark = pytest.mark.usefixtures("no_leftovers")

AGREE_S = 0.3           # the bar: measured reclaim within this of the prediction
EXPIRY_SLACK_S = 0.06   # an expiry is seen at the first sample (10 ms) after it, plus scheduling


def events(session: dict[str, Any], what: str) -> list[float]:
    return [e["t"] for e in session["events"] if e["what"] == what]


def last_activity(session: dict[str, Any]) -> float:
    (t,) = events(session, "last-activity")
    return t


def check_agreement(sc: dict[str, Any], idle_timeout_s: float) -> None:
    faulted = [s for s in sc["sessions"] if s["faulted"]]
    survivors = [s for s in sc["sessions"] if not s["faulted"]]
    assert faulted and survivors
    for s in survivors:
        assert s["alive_at_end"] is True and not s["reclaimed"], s
        assert not events(s, "middlebox-expired"), s     # kept talking: entry kept fresh
    for s in faulted:
        if s["predicted_s"] is None:
            assert not s["reclaimed"] and not events(s, "middlebox-expired"), s
            continue
        assert s["reclaimed"] and abs(s["reclaim_s"] - s["predicted_s"]) <= AGREE_S, s
        (expired,) = events(s, "middlebox-expired")
        due = last_activity(s) + idle_timeout_s
        assert due - 0.01 <= expired <= due + EXPIRY_SLACK_S, (expired, due)
        assert expired < s["reclaim_s"]


@pytest.mark.slow   # three scenarios, about 20 s
def test_the_nat_scenarios_agree_with_their_predictions_and_show_in_the_reports(tmp_path: Path) -> None:
    files = [str(REPO / "scenarios" / f"{n}.yaml")
             for n in ("nat-idle-keepalive-below", "nat-idle-keepalive-above", "nat-idle-reset")]
    proc = run_cli("run", "--quiet", "--report-dir", str(tmp_path), *files, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (folder,) = tmp_path.iterdir()
    data = json.loads((folder / "results.json").read_text())
    by_name = {sc["name"]: sc for sc in data["scenarios"]}
    below, above, reset = (by_name[n] for n in ("nat-idle-keepalive-below", "nat-idle-keepalive-above",
                                                "nat-idle-reset"))
    for sc in (below, above, reset):
        assert sc["verdict"] == "pass", sc["reason"]
        assert "middlebox" in sc["lab"] and "nat" in sc["lab"]
        # with NAT the server sees the router's address
        assert all(s["server_peer"].startswith("10.77.1.1:") for s in sc["sessions"])
    check_agreement(below, 3)
    check_agreement(above, 1)
    check_agreement(reset, 1)
    assert below["prediction"]["reclaim_s"] is None
    assert "tcp keepalive idle 2 s < middlebox idle_timeout 3 s" in below["prediction"]["formula"]
    assert above["prediction"]["mechanism"] == "keepalive"
    assert "tcp keepalive idle 2 s >= middlebox idle_timeout 1 s" in above["prediction"]["formula"]
    assert all(s["mechanism"] == "keepalive" for s in above["sessions"] if s["faulted"])
    assert all(s["mechanism"] == "reset" for s in reset["sessions"] if s["faulted"])
    html = (folder / "report.html").read_text()
    assert "middlebox entry expired" in html and "middlebox idle_timeout" in html
    assert "nat-idle-expiry" in (folder / "summary.md").read_text()
    assert "nat-idle-reset" in (folder / "junit.xml").read_text()


@pytest.mark.slow   # a lab run, about 8 s
def test_the_fixture_runs_a_resetting_middlebox_without_nat(connchaos_lab: Any) -> None:
    result = connchaos_lab.run(
        service="postgres", sessions=4, faulted=2, fault="nat-idle-expiry", hold="500ms",
        settings={"tcp_keepalives_idle": 2, "tcp_keepalives_interval": 1, "tcp_keepalives_count": 3},
        middlebox={"nat": False, "idle_timeout": "1s", "on_expiry": "reset"},
        expect={"reclaimed_within": "4s", "mechanism": "reset"}, deadline="5s")
    assert result.verdict == "pass", result.record.reason
    for s in result.faulted:
        assert s.mechanism == "reset" and abs(s.reclaim_s - s.predicted_s) <= AGREE_S
        assert len(s.times("middlebox-expired")) == 1
        assert s.server_peer.startswith("10.77.0.2:")      # no NAT: the client's own address
    assert all(s.alive_at_end for s in result.survivors)


@pytest.mark.slow   # a load run under Locust, about 12 s
def test_a_load_run_behind_the_nat(tmp_path: Path) -> None:
    path = tmp_path / "load-nat.yaml"
    path.write_text("""name: load-nat-idle
target:
  service: postgres
  settings: {tcp_keepalives_idle: 2, tcp_keepalives_interval: 1, tcp_keepalives_count: 2}
middlebox: {idle_timeout: 1s, on_expiry: drop}
load: {users: 20, spawn_rate: 20, hold: 1s, activity: {every: 300ms}}
fault: {type: nat-idle-expiry, sessions: 0.25}
expect: {reclaimed_within: 6s, still_held_after: 2s, mechanism: keepalive, survivors_untouched: true}
observe: {deadline: 8s, interval: 20ms}
""")
    proc = run_cli("run", "--quiet", "--report-dir", str(tmp_path / "r"), str(path), timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (results,) = (tmp_path / "r").glob("*/results.json")
    (sc,) = json.loads(results.read_text())["scenarios"]
    assert sc["load"]["held"] == 20 and sc["load"]["survivors_checked_ok"] == 15
    faulted = [s for s in sc["sessions"] if s["faulted"]]
    assert len(faulted) == 5
    for s in faulted:
        assert s["client"].startswith("10.77.0.2:") and s["server_peer"].startswith("10.77.1.1:")
        assert abs(s["reclaim_s"] - s["predicted_s"]) <= AGREE_S, s
        (expired,) = events(s, "middlebox-expired")
        due = last_activity(s) + 1
        assert due - 0.01 <= expired <= due + 0.02 + EXPIRY_SLACK_S, (expired, due)
