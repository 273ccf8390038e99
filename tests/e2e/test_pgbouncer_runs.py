"""``service: pgbouncer`` through the CLI, as a user runs it: the shipped scenarios on the
local backend (each reclaim within 0.3 s of its prediction, the pitfall still held), on
the docker backend, and under a Locust load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.testing import REPO, run_cli

pytestmark = pytest.mark.usefixtures("no_leftovers")
KEEPALIVE = REPO / "scenarios" / "pgbouncer-client-keepalive.yaml"
PITFALL = REPO / "scenarios" / "pgbouncer-defaults-hold-dead-clients.yaml"


def _run(tmp_path: Path, *args: str, timeout: float = 240) -> list[dict[str, Any]]:
    proc = run_cli("run", "--quiet", "--report-dir", str(tmp_path), *args, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (results,) = tmp_path.glob("*/results.json")
    scenarios: list[dict[str, Any]] = json.loads(results.read_text())["scenarios"]
    return scenarios


def _agrees_with_its_prediction(scenario: dict[str, Any]) -> list[float]:
    faulted = [s for s in scenario["sessions"] if s["faulted"]]
    assert faulted and all(s["reclaimed"] and s["mechanism"] == "keepalive" for s in faulted), faulted
    errors = [round(s["reclaim_s"] - s["predicted_s"], 3) for s in faulted]
    assert all(abs(e) <= 0.3 for e in errors), errors
    assert scenario["summary"]["survivors_killed"] == 0
    return errors


@pytest.mark.slow   # the pitfall waits 20 s on purpose
def test_shipped_pgbouncer_scenarios_measure_as_predicted_on_local(tmp_path: Path) -> None:
    keepalive, pitfall = _run(tmp_path, "--backend", "local", str(KEEPALIVE), str(PITFALL))
    assert keepalive["verdict"] == pitfall["verdict"] == "pass"
    print("measured - predicted:", _agrees_with_its_prediction(keepalive))
    held = [s for s in pitfall["sessions"] if s["faulted"]]
    assert held and not any(s["reclaimed"] for s in held)
    assert pitfall["prediction"]["reclaim_s"] == pytest.approx(7874, abs=1)   # 7875 s from the last activity


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.usefixtures("docker_machine", "images_built")
def test_pgbouncer_scenario_runs_on_the_docker_backend(tmp_path: Path) -> None:
    [scenario] = _run(tmp_path, "--backend", "docker", str(KEEPALIVE))
    assert scenario["verdict"] == "pass" and scenario["backend"] == "docker", scenario["reason"]
    print("measured - predicted:", _agrees_with_its_prediction(scenario))


LOAD = """\
name: load-pgbouncer-small
about: 40 PostgreSQL clients through pgbouncer under Locust; a quarter vanish behind a blackhole.
target:
  service: pgbouncer
  settings: {tcp_keepidle: 2, tcp_keepintvl: 1, tcp_keepcnt: 3, server_idle_timeout: 3}
load:
  users: 40
  spawn_rate: 40
  hold: 2s
fault:
  type: blackhole
  sessions: 0.25
expect:
  reclaimed_within: 8s
  survivors_untouched: true
observe:
  deadline: 12s
"""


@pytest.mark.slow   # a Locust load run
def test_pgbouncer_sessions_under_load_are_reclaimed_by_keepalive(tmp_path: Path) -> None:
    scenario_file = tmp_path / "load-pgbouncer-small.yaml"
    scenario_file.write_text(LOAD)
    [entry] = _run(tmp_path / "reports", str(scenario_file))
    load, summary = entry["load"], entry["summary"]
    assert (load["held"], load["faulted"], summary["reclaimed"]) == (40, 10, 10), entry["reason"]
    print("measured - predicted:", _agrees_with_its_prediction(entry))
    assert load["survivors_checked_ok"] == 30
    stats = {r["name"]: r for r in load["locust"]["stats"]}
    assert stats["open"]["requests"] == 40 and stats["open"]["failures"] == 0


IDLE = """\
name: pgbouncer-transaction-client-idle
about: Transaction pooling; client_idle_timeout 3 s closes every idle client, dead or alive.
target:
  service: pgbouncer
  settings: {pool_mode: transaction, client_idle_timeout: 3}
sessions:
  count: 4
  hold: 1s
fault:
  type: blackhole
  sessions: 2
expect:
  reclaimed_within: 6s
  survivors_untouched: false
  mechanism: heartbeat
observe:
  deadline: 8s
"""


@pytest.mark.slow
def test_client_idle_timeout_reclaims_transaction_pooled_clients_when_predicted(tmp_path: Path) -> None:
    """pgbouncer's own idle reclaim (its janitor, every 1/3 s): the faulted sessions go 3 s
    after their last activity, by pgbouncer (its log says client_idle_timeout)."""
    scenario_file = tmp_path / "idle.yaml"
    scenario_file.write_text(IDLE)
    [entry] = _run(tmp_path / "reports", "--backend", "local", str(scenario_file))
    assert entry["verdict"] == "pass", entry["reason"]
    faulted = [s for s in entry["sessions"] if s["faulted"]]
    late = [round(s["reclaim_s"] - s["predicted_s"], 3) for s in faulted]
    print("measured - predicted:", late)
    assert all(s["mechanism"] == "heartbeat" for s in faulted)
    assert all(0 <= x <= 1 / 3 + 0.05 for x in late), late   # the janitor's period
