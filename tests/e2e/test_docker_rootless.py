"""The docker backend without root on the host: the CLI run as an unprivileged user that may
use the Docker engine (nobody, with the ``docker`` group), end to end on a real engine.

The test itself needs root, to become that user (``setpriv``); it skips without root or an
engine (fails instead with CONNCHAOS_REQUIRE_DOCKER=1) and fails when the unprivileged user
cannot run this checkout's Python (the virtual environment must be readable by others).
"""

from __future__ import annotations

import grp
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.testing import REPO, keepalive_scenario, ours, skip_or_fail

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("docker_machine", "images_built")]

NOBODY = 65534


def cannot(reason: str) -> None:
    """Skip; with CONNCHAOS_REQUIRE_DOCKER=1 (CI) fail instead: there it must run."""
    skip_or_fail(f"cannot run the rootless test: {reason}", "CONNCHAOS_REQUIRE_DOCKER")


@pytest.fixture
def unprivileged() -> Iterator[tuple[list[str], Path]]:
    """The command prefix that runs as nobody with the engine's group, and a folder that
    user may write (tmp_path is private to root)."""
    if os.geteuid() != 0:
        cannot("needs root to run the CLI as another, unprivileged user")
    if shutil.which("setpriv") is None:
        cannot("needs setpriv (util-linux)")
    try:
        docker_gid = grp.getgrnam("docker").gr_gid
    except KeyError:
        cannot("no docker group: no unprivileged user may use this engine")
    socket_path = "/var/run/docker.sock"
    if os.path.exists(socket_path) and os.stat(socket_path).st_gid != docker_gid:
        cannot(f"{socket_path} is not group docker's")
    folder = Path(tempfile.mkdtemp(prefix="rootless-test-"))
    folder.chmod(0o777)
    prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", f"--groups={docker_gid}",
              "--inh-caps=-all", "--"]
    env = {**os.environ, "HOME": str(folder)}
    probe = subprocess.run([*prefix, sys.executable, "-c", "import harness.cli"], env=env,
                           capture_output=True, text=True, cwd=folder)
    if probe.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"nobody cannot run {sys.executable} with this checkout (make the virtual"
                    f" environment readable by others): {probe.stderr.strip()[-400:]}")
    try:
        yield prefix, folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_as(user: tuple[list[str], Path], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    prefix, folder = user
    return subprocess.run([*prefix, sys.executable, "-m", "harness.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=folder, env={**os.environ, "HOME": str(folder)})


def run_json(user: tuple[list[str], Path], scenario: Path) -> tuple[int, dict[str, Any], str]:
    folder = user[1]
    out = folder / f"{scenario.stem}.json"
    done = run_as(user, "run", str(scenario), "--backend", "docker", "--report-dir",
                  str(folder / "reports"), "--json", str(out))
    assert out.exists(), f"exit {done.returncode}: {done.stdout}{done.stderr}"
    return done.returncode, json.loads(out.read_text()), done.stdout + done.stderr


def faulted(entry: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in entry["sessions"] if s["faulted"]]


@pytest.mark.slow   # a scenario run in containers
def test_keepalive_reclaims_as_predicted_without_root(unprivileged: tuple[list[str], Path],
                                                      no_leftovers: None) -> None:
    scenario = unprivileged[1] / "pg-keepalive-rootless.yaml"
    scenario.write_text(keepalive_scenario("pg-keepalive-rootless"))
    scenario.chmod(0o644)
    code, data, text = run_json(unprivileged, scenario)
    entry = data["scenarios"][0]
    assert code == 0 and entry["verdict"] == "pass", text
    assert entry["backend"] == "docker"
    for s in faulted(entry):
        assert s["mechanism"] == "keepalive", s
        assert abs(s["reclaim_s"] - s["predicted_s"]) <= 0.3, s
    assert entry["summary"]["survivors_killed"] == 0
    # the sessions went through the forwarder: the server's peer is the client container
    lab = entry["lab"]
    assert "forwarders" in lab and "agent" in lab["containers"], lab
    assert all(s["server_peer"].startswith(lab["client_addr"] + ":") for s in entry["sessions"])


@pytest.mark.slow   # a scenario run in containers
def test_a_websocket_scenario_passes_without_root(unprivileged: tuple[list[str], Path],
                                                  no_leftovers: None) -> None:
    code, data, text = run_json(unprivileged, REPO / "scenarios" / "websocket-tuned-ping.yaml")
    entry = data["scenarios"][0]
    assert code == 0 and entry["verdict"] == "pass", text
    for s in faulted(entry):
        assert s["reclaimed"] and abs(s["reclaim_s"] - s["predicted_s"]) <= 0.5, s


@pytest.mark.slow   # a scenario run in containers
def test_the_proxy_layer_passes_without_root(unprivileged: tuple[list[str], Path],
                                             no_leftovers: None) -> None:
    code, data, text = run_json(unprivileged, REPO / "scenarios" / "layers-proxy-stall.yaml")
    entry = data["scenarios"][0]
    assert code == 0 and entry["verdict"] == "pass", text
    assert entry["layer"] == "proxy" and "proxy_server" in entry["lab"]
    assert not any(s["reclaimed"] for s in faulted(entry))


def test_ssh_passes_without_root(unprivileged: tuple[list[str], Path], no_leftovers: None) -> None:
    # the account and its key are made inside sshd's container; the shells' pids and
    # descriptors come from the agent
    code, data, text = run_json(unprivileged, REPO / "scenarios" / "ssh-client-alive.yaml")
    entry = data["scenarios"][0]
    assert code == 0 and entry["verdict"] == "pass", text
    for s in faulted(entry):
        assert s["mechanism"] == "heartbeat" and s["server_pid"], s
        assert abs(s["reclaim_s"] - s["predicted_s"]) <= 0.5, s
    assert entry["summary"]["survivors_killed"] == 0


LOAD = """\
name: load-websocket-rootless
about: A few WebSocket users held by Locust in the client's network, without root.
target:
  service: websocket
  settings: {ping_interval: 2, ping_timeout: 2, close_timeout: 1}
load:
  users: 20
  spawn_rate: 20
  hold: 1s
  activity: {every: 2s}
  workers: 1
fault:
  type: blackhole
  sessions: 0.25
expect:
  reclaimed_within: 8s
  survivors_untouched: true
observe:
  deadline: 12s
  interval: 50ms
"""


def test_a_small_load_run_passes_without_root(unprivileged: tuple[list[str], Path],
                                              no_leftovers: None) -> None:
    # Locust runs in containers beside the client; the socket table, the resource sampler
    # and the session pids go through the agent
    scenario = unprivileged[1] / "load-websocket-rootless.yaml"
    scenario.write_text(LOAD)
    scenario.chmod(0o644)
    code, data, text = run_json(unprivileged, scenario)
    entry = data["scenarios"][0]
    assert code == 0 and entry["verdict"] == "pass", text
    load, summary = entry["load"], entry["summary"]
    assert (load["users"], load["workers"], load["held"], load["faulted"]) == (20, 1, 20, 5), load
    assert summary["reclaimed"] == 5 and summary["survivors_killed"] == 0
    assert load["survivors_checked_ok"] == 15
    assert "locust-master" in entry["lab"]["containers"], entry["lab"]
    series = load["resources"]["series"]
    assert max(s["established"] for s in series) == 20
    assert all(s["processes"] >= 1 and s["fds"] > 0 for s in series), series
    stats = {r["name"]: r for r in load["locust"]["stats"]}
    assert stats["open"]["requests"] == 20 and stats["open"]["failures"] == 0


def test_clean_without_root_removes_a_killed_runs_containers(unprivileged: tuple[list[str], Path],
                                                             no_leftovers: None) -> None:
    scenario = unprivileged[1] / "pg-up.yaml"
    scenario.write_text(keepalive_scenario("pg-up"))
    scenario.chmod(0o644)
    prefix, folder = unprivileged
    proc = subprocess.Popen([*prefix, sys.executable, "-m", "harness.cli", "up", str(scenario),
                             "--backend", "docker"], cwd=folder, env={**os.environ, "HOME": str(folder)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        seen = ""
        for line in proc.stdout:
            seen += line
            if "holding" in line:
                break
        assert "holding" in seen, seen
        proc.kill()  # no teardown at all
        proc.wait()
        assert any(o.startswith("docker container") for o in ours()), seen
        done = run_as(unprivileged, "clean")
        assert done.returncode == 0, done.stderr
        assert "removed container cc-" in done.stdout and "removed network cc-" in done.stdout, done.stdout
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
