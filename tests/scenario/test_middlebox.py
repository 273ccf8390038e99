"""The ``middlebox:`` section and the nat-idle-expiry fault in scenario files: what is
accepted, and where a mistake is reported (file:line and the field)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ScenarioError
from harness.run import prepare

BASE = """name: mb
target:
  service: postgres{backend}
middlebox:
{middlebox}
sessions:
  count: 2
  activity: {activity}
fault:
  type: {fault}
expect:
  reclaimed_within: 5s
"""


def write(tmp_path: Path, *, middlebox: str = "  idle_timeout: 5s", fault: str = "nat-idle-expiry",
          activity: str = "idle", backend: str = "") -> Path:
    path = tmp_path / "mb.yaml"
    path.write_text(BASE.format(middlebox=middlebox, fault=fault, activity=activity, backend=backend))
    return path


def problems(path: Path, backend: str | None = None) -> list[str]:
    with pytest.raises(ScenarioError) as info:
        prepare([str(path)], backend)
    return [str(p) for p in info.value.problems]


def test_defaults(tmp_path: Path) -> None:
    (loaded,) = prepare([str(write(tmp_path))])
    mb = loaded.scenario.middlebox
    assert mb is not None and (mb.nat, mb.idle_timeout, mb.on_expiry) == (True, 5.0, "drop")


def test_unknown_key_is_an_error_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, middlebox="  idle_timeout: 5s\n  idle: 3s")
    (found,) = problems(path)
    assert found.startswith(f"{path}:6:") and "middlebox.idle" in found


@pytest.mark.parametrize("value", ["1500ms", "0s", "250ms"])
def test_idle_timeout_is_whole_seconds(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, middlebox=f"  idle_timeout: {value}")
    (found,) = problems(path)
    assert found.startswith(f"{path}:5:") and "whole seconds" in found


def test_on_expiry_is_drop_or_reset(tmp_path: Path) -> None:
    (found,) = problems(write(tmp_path, middlebox="  idle_timeout: 5s\n  on_expiry: reject"))
    assert ":6:" in found and "middlebox.on_expiry" in found


def test_the_fault_needs_a_middlebox(tmp_path: Path) -> None:
    path = tmp_path / "no.yaml"
    path.write_text("name: nomb\ntarget: {service: postgres}\nsessions: {count: 1}\n"
                    "fault:\n  type: nat-idle-expiry\nexpect: {reclaimed_within: 5s}\n")
    (found,) = problems(path)
    assert found.startswith(f"{path}:5:") and "fault.type" in found and "middlebox:" in found


def test_the_fault_makes_sessions_idle(tmp_path: Path) -> None:
    (found,) = problems(write(tmp_path, activity="in-flight"))
    assert ":8:" in found and "sessions.activity" in found


def test_docker_backend_in_the_file_is_exit_2_at_the_middlebox_line(tmp_path: Path) -> None:
    path = write(tmp_path, backend="\n  backend: docker")
    (found,) = problems(path)
    assert found.startswith(f"{path}:5:") and "middlebox" in found and "docker" in found


def test_docker_backend_on_the_command_line_is_exit_2_at_the_middlebox_line(tmp_path: Path) -> None:
    path = write(tmp_path)
    (found,) = problems(path, backend="docker")
    assert found.startswith(f"{path}:4:") and "--backend docker" in found


def test_a_proxy_fault_does_not_go_with_a_middlebox(tmp_path: Path) -> None:
    (found,) = problems(write(tmp_path, fault="proxy-stall"))
    assert ":4:" in found and "proxy" in found


def test_other_packet_faults_take_a_middlebox(tmp_path: Path) -> None:
    (loaded,) = prepare([str(write(tmp_path, fault="blackhole"))])
    assert loaded.scenario.middlebox is not None


def test_auto_backend_picks_local(tmp_path: Path) -> None:
    from harness.run import backend_for
    (loaded,) = prepare([str(write(tmp_path))])
    assert backend_for(loaded) == "local"


def test_a_load_run_behind_a_middlebox_must_keep_talking(tmp_path: Path) -> None:
    path = tmp_path / "load.yaml"
    path.write_text("name: l\ntarget: {service: postgres}\nmiddlebox: {idle_timeout: 2s}\n"
                    "load:\n  users: 2\n  activity: {every: 3s}\n"
                    "fault: {type: nat-idle-expiry}\nexpect: {reclaimed_within: 5s}\n")
    (found,) = problems(path)
    assert ":6:" in found and "load.activity" in found and "more often" in found


def test_run_with_backend_docker_exits_2_naming_the_line(tmp_path: Path) -> None:
    from harness.testing import run_cli

    path = write(tmp_path)
    proc = run_cli("run", "--backend", "docker", "--report-dir", str(tmp_path / "r"), str(path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{path}:4:" in proc.stdout + proc.stderr


def test_explain_says_which_setting_decides() -> None:
    from harness.testing import REPO, run_cli

    proc = run_cli("explain", str(REPO / "scenarios" / "nat-idle-keepalive-below.yaml"),
                   str(REPO / "scenarios" / "nat-idle-keepalive-above.yaml"))
    assert proc.returncode == 0, proc.stderr
    out = " ".join(proc.stdout.split())
    assert "decided by tcp keepalive idle 2 s < the middlebox's idle_timeout 3 s" in out
    assert "decided by tcp keepalive idle 2 s >= the middlebox's idle_timeout 1 s" in out
    assert "predicted never" in out and "by keepalive" in out
