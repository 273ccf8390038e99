"""packet-loss and syn-blackhole end to end with a real PostgreSQL, on both backends, through
the connchaos_lab fixture and the CLI's reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.testing import REPO, run_cli

pytestmark = pytest.mark.usefixtures("no_leftovers")

KEEPALIVE = {"tcp_keepalives_idle": 1, "tcp_keepalives_interval": 1, "tcp_keepalives_count": 2}


def loss_run(lab: Any, **backend: str) -> Any:
    return lab.run(service="postgres", settings=KEEPALIVE, sessions=5, faulted=4,
                   fault={"type": "packet-loss", "loss": "50%"}, deadline="5s",
                   expect={"still_held_after": "1.5s"}, **backend)


def syn_run(lab: Any, **backend: str) -> Any:
    return lab.run(service="postgres", settings=KEEPALIVE, sessions=3, faulted=2,
                   fault={"type": "syn-blackhole", "syn_retries": 1}, deadline="4s",
                   expect={"reclaimed_within": "1s", "reconnect_within": "3.5s"}, **backend)


def check_loss(run: Any) -> None:
    assert run.verdict == "pass", run.entry["reason"]
    bound = run.prediction.bound
    assert bound is not None and bound["point"] is False and bound["kind"] == "distribution"
    assert "within the bound (not a point)" in run.entry["reason"]
    for s in run.faulted:
        if s.reclaimed:   # never before the earliest possible time (every probe lost)
            assert s.reclaim_s >= s.predicted_s - 0.05, (s.id, s.reclaim_s, s.predicted_s)
    assert all(s.alive_at_end for s in run.survivors)


def check_syn(run: Any) -> None:
    assert run.verdict == "pass", run.entry["reason"]
    expected = run.prediction.reconnect
    assert expected is not None and expected["outcome"] == "timed-out"
    for s in run.faulted:
        assert s.reclaimed and s.mechanism == "closed" and s.reclaim_s <= 0.3   # the old session
        assert s.reconnect_outcome == "timed-out"
        assert s.predicted_reconnect_s == expected["at_s"] == 3.0
        assert abs((s.reconnect_s or 0) - 3.0) <= 0.3, s.reconnect_s
        assert {"reconnect-started", "reconnect-ended"} <= {e.what for e in s.events}
    assert all(s.alive_at_end for s in run.survivors)


def test_packet_loss_is_judged_by_its_bound(connchaos_lab: Any) -> None:
    check_loss(loss_run(connchaos_lab, backend="local"))


def test_syn_blackhole_reconnect_fails_when_the_kernel_gives_up(connchaos_lab: Any) -> None:
    check_syn(syn_run(connchaos_lab, backend="local"))


@pytest.mark.usefixtures("docker_machine", "images_built")
def test_packet_loss_on_docker(connchaos_lab: Any) -> None:
    check_loss(loss_run(connchaos_lab, backend="docker"))


@pytest.mark.usefixtures("docker_machine", "images_built")
def test_syn_blackhole_on_docker(connchaos_lab: Any) -> None:
    check_syn(syn_run(connchaos_lab, backend="docker"))


@pytest.mark.slow
def test_catalogue_scenarios_and_their_reports(tmp_path: Path) -> None:
    names = ["postgres-packet-loss-bound", "postgres-syn-blackhole-reconnect"]
    done = run_cli("run", "--quiet", "--report-dir", str(tmp_path), *(f"scenarios/{n}.yaml" for n in names),
                   timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    (folder,) = [p.parent for p in tmp_path.glob("*/results.json")]
    data = json.loads((folder / "results.json").read_text())
    loss, syn = data["scenarios"]
    bound = loss["prediction"]["bound"]
    lo, hi = bound["binomial_range"]
    hit = [s for s in loss["sessions"] if s["faulted"]]
    assert bound["point"] is False and lo <= sum(s["reclaimed"] for s in hit) <= hi
    assert all(s["reclaim_s"] >= s["predicted_s"] - 0.05 for s in hit if s["reclaimed"])
    for s in (s for s in syn["sessions"] if s["faulted"]):
        assert abs(s["reconnect_s"] - s["predicted_reconnect_s"]) <= 0.3 and s["reconnect_outcome"] == "timed-out"
    md = (folder / "summary.md").read_text()
    assert "(bound)" in md and "reconnect: 2 timed-out" in md
    html = (folder / "report.html").read_text()
    assert "Random loss:" in html and "a bound, not a point" in html and "<th>reconnect</th>" in html
    junit = (folder / "junit.xml").read_text()
    assert 'name="prediction_kind" value="bound (distribution), not a point"' in junit
    assert 'name="reconnect" value="2 timed-out' in junit
    explained = run_cli("explain", *(f"scenarios/{n}.yaml" for n in names)).stdout
    assert "bound     a bound, not a point" in explained and "reconnect timed-out after 7 s" in explained
    assert (REPO / "scenarios" / f"{names[0]}.yaml").exists()


@pytest.mark.slow   # Locust's processes start in seconds
def test_packet_loss_in_a_load_run(connchaos_lab: Any) -> None:
    run = connchaos_lab.run(service="postgres", settings=KEEPALIVE, faulted=0.5,
                            load={"users": 10, "spawn_rate": 50, "hold": "1s"},
                            fault={"type": "packet-loss", "loss": "50%"}, deadline="5s",
                            expect={"still_held_after": "1.5s"}, backend="local")
    check_loss(run)


def test_packet_loss_with_data_in_flight_is_a_floor(connchaos_lab: Any) -> None:
    # data acknowledged at once leaves an idle socket that keepalive (with TCP_USER_TIMEOUT)
    # kills before the retransmission path would: the earliest time is the earlier of the two
    run = connchaos_lab.run(service="postgres", settings={**KEEPALIVE, "tcp_user_timeout": 2000},
                            sessions=5, faulted=4, activity="in-flight",
                            fault={"type": "packet-loss", "loss": "50%"}, deadline="5s",
                            expect={"still_held_after": "1.5s"}, backend="local")
    assert run.verdict == "pass", run.entry["reason"]
    assert run.prediction.bound["kind"] == "lower-bound"
    assert run.prediction.reclaim_s < 2.1     # not the retransmission path's 2.2 s
    for s in run.faulted:
        if s.reclaimed:
            assert s.reclaim_s >= s.predicted_s - 0.05, (s.id, s.reclaim_s, s.predicted_s)
