"""The docker backend, end to end through the CLI: real containers on a real engine.

Needs root and a Docker engine with the project's images (``connchaos images build``; .ci/run
builds them): skips with the reason otherwise, fails instead with CONNCHAOS_REQUIRE_DOCKER=1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from harness.testing import CONNCHAOS, REPO, keepalive_scenario, ours, run_cli, write_scenario

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("docker_machine", "images_built")]


def run_json(tmp_path: Path, scenario: Path, *args: str, timeout: float = 600) -> tuple[int, dict[str, Any], str]:
    out = tmp_path / f"{scenario.stem}-{len(list(tmp_path.iterdir()))}.json"
    done = run_cli("run", str(scenario), "--report-dir", str(tmp_path / "reports"), "--json", str(out),
                   *args, timeout=timeout)
    assert out.exists(), f"exit {done.returncode}: {done.stdout}{done.stderr}"
    return done.returncode, json.loads(out.read_text()), done.stdout + done.stderr


def reclaims(entry: dict[str, Any]) -> list[tuple[float, float]]:
    return [(s["reclaim_s"], s["predicted_s"]) for s in entry["sessions"] if s["faulted"]]


@pytest.mark.slow   # a scenario run in containers
def test_the_same_keepalive_scenario_measures_alike_on_local_and_docker(tmp_path: Path, no_leftovers: None) -> None:
    scenario = write_scenario(tmp_path, "pg-keepalive", keepalive_scenario("pg-keepalive"))
    results = {}
    for backend in ("local", "docker"):
        code, data, text = run_json(tmp_path, scenario, "--backend", backend)
        assert code == 0, text
        entry = data["scenarios"][0]
        assert entry["backend"] == backend and entry["verdict"] == "pass", entry["reason"]
        results[backend] = entry
    for backend, entry in results.items():
        for measured, predicted in reclaims(entry):
            assert abs(measured - predicted) <= 0.3, (backend, measured, predicted)
        assert {s["mechanism"] for s in entry["sessions"] if s["faulted"]} == {"keepalive"}
        assert entry["summary"]["survivors_killed"] == 0
    local_p50, docker_p50 = (results[b]["summary"]["p50_s"] for b in ("local", "docker"))
    assert abs(local_p50 - docker_p50) <= 0.3, (local_p50, docker_p50)
    lab = results["docker"]["lab"]
    assert lab["containers"].count("cc-") >= 4 and "postgres" in lab["containers"], lab


@pytest.mark.slow   # a scenario run in containers
def test_ssh_and_websocket_targets_run_in_containers(tmp_path: Path, no_leftovers: None) -> None:
    for name in ("ssh-client-alive", "websocket-tuned-ping"):
        code, data, text = run_json(tmp_path, REPO / "scenarios" / f"{name}.yaml", "--backend", "docker")
        entry = data["scenarios"][0]
        assert code == 0 and entry["verdict"] == "pass", text
        assert entry["backend"] == "docker"
        for measured, predicted in reclaims(entry):
            assert abs(measured - predicted) <= 0.5, (name, measured, predicted)


@pytest.mark.slow   # a scenario run in containers
def test_the_proxy_layer_runs_the_proxy_image_beside_the_router(tmp_path: Path, no_leftovers: None) -> None:
    code, data, text = run_json(tmp_path, REPO / "scenarios" / "layers-proxy-stall.yaml", "--backend", "docker")
    entry = data["scenarios"][0]
    assert code == 0 and entry["verdict"] == "pass", text
    assert entry["layer"] == "proxy"
    assert entry["lab"]["proxy_server"] in ("ghcr.io/shopify/toxiproxy:2.12.0", f"connchaos/toxiproxy:{_version()}")
    assert not any(s["reclaimed"] for s in entry["sessions"] if s["faulted"])


@pytest.mark.slow   # a scenario run in containers
def test_a_users_own_image_runs_as_the_target(tmp_path: Path, no_leftovers: None) -> None:
    scenario = write_scenario(tmp_path, "own-image", f"""\
name: own-image
about: A service from the user's image, sessions blackholed; nothing reclaims them.
target:
  service: tcp
  image: connchaos/client:{_version()}
  command: python3 -m http.server --bind {{host}} {{port}}
  port: 8080
sessions:
  count: 3
  hold: 500ms
fault:
  type: blackhole
  sessions: 2
expect:
  still_held_after: 3s
  survivors_untouched: true
observe:
  deadline: 3s
""")
    code, data, text = run_json(tmp_path, scenario)  # auto: an image means docker
    entry = data["scenarios"][0]
    assert code == 0 and entry["verdict"] == "pass", text
    assert entry["backend"] == "docker"
    assert "cc-" in entry["lab"]["containers"]


def test_an_image_with_backend_local_is_bad_input(tmp_path: Path) -> None:
    scenario = write_scenario(tmp_path, "bad", keepalive_scenario("bad").replace(
        "  service: postgres\n", "  service: postgres\n  image: postgres:16\n"))
    done = run_cli("run", str(scenario), "--backend", "local", "--report-dir", str(tmp_path))
    assert done.returncode == 2, done.stderr
    assert f"{scenario}:5" in done.stderr and "target.image" in done.stderr, done.stderr


def test_a_proxy_command_is_for_the_local_backend(tmp_path: Path) -> None:
    done = run_cli("run", str(REPO / "scenarios" / "layers-proxy-stall.yaml"), "--backend", "docker",
                   "--toxiproxy-server", "toxiproxy-server", "--report-dir", str(tmp_path))
    assert done.returncode == 2 and "the proxy is an image" in done.stderr, done.stderr


def test_sigint_during_a_docker_run_leaves_no_container_network_or_volume(tmp_path: Path, no_leftovers: None) -> None:
    scenario = write_scenario(tmp_path, "pg-long", keepalive_scenario("pg-long").replace(
        "deadline: 15s", "deadline: 60s").replace("tcp_keepalives_idle: 2", "tcp_keepalives_idle: 50"))
    proc = subprocess.Popen([*CONNCHAOS, "run", str(scenario), "--backend", "docker",
                             "--report-dir", str(tmp_path / "reports")],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_line(proc, "watching up to", timeout_s=120)
        assert any(o.startswith("docker container") for o in ours()), "the run made no containers"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err


def test_clean_removes_a_killed_runs_containers_and_nothing_else(tmp_path: Path, no_leftovers: None) -> None:
    scenario = write_scenario(tmp_path, "pg-up", keepalive_scenario("pg-up"))
    stranger = subprocess.run(["docker", "run", "-d", "--label", "someone.else=1", f"connchaos/client:{_version()}",
                               "sleep", "300"], capture_output=True, text=True, check=True).stdout.strip()
    proc = subprocess.Popen([*CONNCHAOS, "up", str(scenario), "--backend", "docker"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_line(proc, "holding", timeout_s=120, stream="stdout")
        proc.kill()  # no teardown at all
        proc.wait()
        left = [o for o in ours() if o.startswith("docker container")]
        assert len(left) >= 4, left
        done = run_cli("clean")
        assert done.returncode == 0, done.stderr
        assert "removed container cc-" in done.stdout and "removed network cc-" in done.stdout, done.stdout
        running = subprocess.run(["docker", "ps", "-q", "--no-trunc"], capture_output=True, text=True).stdout
        assert stranger in running, "clean touched a container that is not ours"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        subprocess.run(["docker", "rm", "-f", "-v", stranger], capture_output=True)


def _version() -> str:
    from harness import __version__
    return __version__


def _wait_for_line(proc: subprocess.Popen[str], text: str, timeout_s: float, stream: str = "stderr") -> None:
    """Read the process's output (without blocking) until ``text`` shows up."""
    import selectors

    pipe = proc.stderr if stream == "stderr" else proc.stdout
    assert pipe is not None
    fd = pipe.fileno()
    deadline = time.monotonic() + timeout_s
    seen = ""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(timeout=0.5):
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                seen += chunk.decode(errors="replace")
                if text in seen:
                    return
    raise AssertionError(f"never saw {text!r}: {seen[-2000:]}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-x", "-q"]))
