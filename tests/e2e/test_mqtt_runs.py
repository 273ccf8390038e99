"""``service: mqtt`` through the CLI, as a user runs it: the shipped scenarios on the local
backend (each reclaim within 0.3 s of its prediction, keepalive 0 still held), on the docker
backend, and under a Locust load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.testing import REPO, run_cli

pytestmark = pytest.mark.usefixtures("no_leftovers")
RECLAIMS = REPO / "scenarios" / "mqtt-keepalive-reclaims.yaml"
STALL = REPO / "scenarios" / "mqtt-proxy-stall-reclaims.yaml"
ZERO = REPO / "scenarios" / "mqtt-keepalive-zero-holds.yaml"


def _run(tmp_path: Path, *args: str, timeout: float = 240) -> list[dict[str, Any]]:
    proc = run_cli("run", "--quiet", "--report-dir", str(tmp_path), *args, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (results,) = tmp_path.glob("*/results.json")
    scenarios: list[dict[str, Any]] = json.loads(results.read_text())["scenarios"]
    return scenarios


def _agrees_with_its_prediction(scenario: dict[str, Any]) -> list[float]:
    faulted = [s for s in scenario["sessions"] if s["faulted"]]
    assert faulted and all(s["reclaimed"] and s["mechanism"] == "heartbeat" for s in faulted), faulted
    errors = [round(s["reclaim_s"] - s["predicted_s"], 3) for s in faulted]
    assert all(abs(e) <= 0.3 for e in errors), errors
    assert scenario["summary"]["survivors_killed"] == 0
    assert "checked at second" in scenario["prediction"]["formula"]
    return errors


@pytest.mark.slow
def test_shipped_mqtt_scenarios_measure_as_predicted_on_local(tmp_path: Path) -> None:
    reclaims, stall, zero = _run(tmp_path, "--backend", "local", str(RECLAIMS), str(STALL), str(ZERO))
    assert reclaims["verdict"] == stall["verdict"] == zero["verdict"] == "pass"
    print("measured - predicted:", _agrees_with_its_prediction(reclaims), _agrees_with_its_prediction(stall))
    assert stall["layer"] == "proxy"
    held = [s for s in zero["sessions"] if s["faulted"]]
    assert held and not any(s["reclaimed"] for s in held)
    assert zero["prediction"]["reclaim_s"] is None


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.usefixtures("docker_machine", "images_built")
def test_mqtt_scenario_runs_on_the_docker_backend(tmp_path: Path) -> None:
    [scenario] = _run(tmp_path, "--backend", "docker", str(RECLAIMS))
    assert scenario["verdict"] == "pass" and scenario["backend"] == "docker", scenario["reason"]
    print("measured - predicted:", _agrees_with_its_prediction(scenario))


LOAD = """\
name: load-mqtt-small
about: 60 MQTT clients (keepalive 2) under Locust, publishing every second; a fifth vanish.
target:
  service: mqtt
  settings: {keepalive: 2}
load:
  users: 60
  spawn_rate: 60
  hold: 2s
  activity:
    every: 1s
fault:
  type: blackhole
  sessions: 0.2
expect:
  reclaimed_within: 11s
  survivors_untouched: true
observe:
  deadline: 12s
"""


@pytest.mark.slow   # a Locust load run
def test_mqtt_clients_under_load_are_reclaimed_by_the_brokers_check(tmp_path: Path) -> None:
    scenario_file = tmp_path / "load-mqtt-small.yaml"
    scenario_file.write_text(LOAD)
    [entry] = _run(tmp_path / "reports", "--backend", "local", str(scenario_file))
    load, summary = entry["load"], entry["summary"]
    assert (load["held"], load["faulted"], summary["reclaimed"]) == (60, 12, 12), entry["reason"]
    print("measured - predicted:", _agrees_with_its_prediction(entry))
    assert load["survivors_checked_ok"] == 48
