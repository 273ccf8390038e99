"""process-pause and slow-reader in scenario files: what is accepted, and where a mistake is
reported (exit 2 with file:line and the field)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ScenarioError
from harness.run import prepare

BASE = """name: cp
target:
  service: {service}{extra}
sessions:
  count: 2
  activity: {activity}
fault:
  type: {fault}
expect:
  reclaimed_within: 5s
"""


def write(tmp_path: Path, *, fault: str, service: str = "postgres", activity: str = "idle",
          extra: str = "") -> Path:
    path = tmp_path / "cp.yaml"
    path.write_text(BASE.format(service=service, fault=fault, activity=activity, extra=extra))
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ScenarioError) as info:
        prepare([str(path)])
    assert info.value.exit_code == 2
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize("fault", ["process-pause", "slow-reader"])
def test_accepted_on_postgres(tmp_path: Path, fault: str) -> None:
    (loaded,) = prepare([str(write(tmp_path, fault=fault))])
    assert loaded.scenario.fault.layer == "packet"


@pytest.mark.parametrize("service", ["websocket", "ssh", "tcp"])
def test_process_pause_takes_any_target(tmp_path: Path, service: str) -> None:
    extra = '\n  command: "true"\n  port: 7000' if service == "tcp" else ""
    prepare([str(write(tmp_path, fault="process-pause", service=service, extra=extra))])


@pytest.mark.parametrize("fault", ["process-pause", "slow-reader"])
def test_in_flight_is_refused_at_the_activity_line(tmp_path: Path, fault: str) -> None:
    path = write(tmp_path, fault=fault, activity="in-flight")
    (found,) = problems(path)
    assert found.startswith(f"{path}:6:") and "sessions.activity" in found and "activity: idle" in found


@pytest.mark.parametrize("service", ["ssh", "websocket"])
def test_slow_reader_on_a_target_that_cannot_stream_is_exit_2_at_the_fault_line(
        tmp_path: Path, service: str) -> None:
    path = write(tmp_path, fault="slow-reader", service=service)
    (found,) = problems(path)
    assert found.startswith(f"{path}:8:") and "fault.type" in found
    assert "stream" in found and "postgres" in found and service in found


def test_slow_reader_on_a_tier_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, fault="slow-reader", service="pgbouncer")
    assert any(p.startswith(f"{path}:8:") and "pgbouncer cannot" in p for p in problems(path))


def test_not_in_load_runs(tmp_path: Path) -> None:
    path = tmp_path / "load.yaml"
    path.write_text("name: cpload\ntarget: {service: postgres}\nload: {users: 4, spawn_rate: 4}\n"
                    "fault:\n  type: process-pause\nexpect: {reclaimed_within: 5s}\n")
    (found,) = problems(path)
    assert found.startswith(f"{path}:5:") and "Locust" in found
