"""Whole scenarios on a real PostgreSQL in a real lab, through the library call and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from harness import run as runner
from harness.faults import nft
from harness.testing import CONNCHAOS, REPO, ours, run_cli, write_scenario

pytestmark = pytest.mark.usefixtures("no_leftovers")

KEEPALIVE = """
target:
  service: postgres
  settings: {tcp_keepalives_idle: 2, tcp_keepalives_interval: 1, tcp_keepalives_count: 3}
"""


def _run_one(path: Path) -> dict[str, Any]:
    loaded = runner.prepare([str(path)])
    runner.require_machine(loaded)
    return dict(runner.run_plain(loaded[0], runner.new_run_id()).to_json())


def _faulted(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in result["sessions"] if s["faulted"]]


@pytest.mark.slow   # measured 10-12 s
def test_keepalive_reclaim_matches_the_prediction_for_every_session(tmp_path: Path) -> None:
    path = write_scenario(tmp_path, "ka", f"""name: ka
{KEEPALIVE}
sessions: {{count: 10, hold: 1s}}
fault: {{type: client-vanish}}
expect: {{reclaimed_within: 8s}}
observe: {{deadline: 12s}}
""")
    result = _run_one(path)
    assert result["verdict"] == "pass", result["reason"]
    sessions = _faulted(result)
    assert len(sessions) == 10
    for s in sessions:
        assert s["reclaimed"] and s["mechanism"] == "keepalive"
        assert abs(s["reclaim_s"] - s["predicted_s"]) <= 0.25, s
        probes = [e for e in s["events"] if e["what"] == "probe"]
        assert [p["detail"] for p in probes] == ["1", "2", "3"]
        kinds = [e["what"] for e in s["events"]]
        assert kinds.index("last-activity") < kinds.index("fault") < kinds.index("socket-gone")
        assert {"socket-gone", "process-exit", "server-error"} <= set(kinds)
    assert result["prediction"]["mechanism"] == "keepalive"
    assert result["summary"]["reclaimed"] == 10


@pytest.mark.parametrize("fault, settings, activity, mechanism", [
    ("peer-reboot", "{tcp_keepalives_idle: 2, tcp_keepalives_interval: 1, tcp_keepalives_count: 5}",
     "idle", "reset"),
    ("one-way-drop\n  direction: to-client", "{tcp_keepalives_idle: 2, tcp_keepalives_interval: 1, tcp_keepalives_count: 3}",
     "idle", "keepalive"),
    ("blackhole", "{tcp_user_timeout: 2000}", "in-flight", "user-timeout"),
])
def test_each_mechanism_is_measured_and_predicted(tmp_path: Path, fault: str, settings: str,
                                                  activity: str, mechanism: str) -> None:
    path = write_scenario(tmp_path, "mech", f"""name: mech
target: {{service: postgres, settings: {settings}}}
sessions: {{count: 4, activity: {activity}, hold: 1s}}
fault:
  type: {fault}
expect: {{reclaimed_within: 8s, mechanism: {mechanism}}}
""")
    result = _run_one(path)
    assert result["verdict"] == "pass", result["reason"]
    for s in _faulted(result):
        assert s["mechanism"] == mechanism == s["predicted_mechanism"]
        assert abs(s["reclaim_s"] - s["predicted_s"]) <= 0.25, s


@pytest.mark.slow   # measured 10-12 s
def test_data_in_flight_blinds_keepalive(tmp_path: Path) -> None:
    path = write_scenario(tmp_path, "blind", f"""name: blind
{KEEPALIVE}
sessions: {{count: 3, activity: in-flight, hold: 1s}}
fault: {{type: blackhole}}
expect: {{still_held_after: 8s}}
""")
    result = _run_one(path)
    assert result["verdict"] == "pass", result["reason"]
    for s in _faulted(result):
        assert not s["reclaimed"]
        assert s["predicted_mechanism"] == "retransmission" and s["predicted_s"] > 900
        assert not any(e["what"] == "probe" for e in s["events"])
        assert any(e["what"] == "retransmit" for e in s["events"])


def test_half_faulted_survivors_still_answer(tmp_path: Path) -> None:
    path = write_scenario(tmp_path, "half", f"""name: half
{KEEPALIVE}
sessions: {{count: 10, hold: 500ms}}
fault: {{type: blackhole, sessions: 0.5}}
expect: {{reclaimed_within: 8s, survivors_untouched: true}}
""")
    result = _run_one(path)
    assert result["verdict"] == "pass", result["reason"]
    survivors = [s for s in result["sessions"] if not s["faulted"]]
    assert len(survivors) == 5 and len(_faulted(result)) == 5
    for s in survivors:
        assert s["alive_at_end"] is True and not s["reclaimed"]
        assert any(e["what"] == "alive-check" and e["detail"] == "ok" for e in s["events"])
    assert result["summary"]["survivors_killed"] == 0


@pytest.mark.slow   # measured 10-12 s
def test_defaults_with_a_short_deadline_fail_with_exit_1(tmp_path: Path) -> None:
    path = write_scenario(tmp_path, "defaults", """name: pg-defaults-short
target: {service: postgres}
sessions: {count: 3, hold: 500ms}
fault: {type: blackhole}
expect: {reclaimed_within: 3s}
""")
    proc = run_cli("run", "--report-dir", str(tmp_path / "reports"), str(path))
    assert proc.returncode == 1, proc.stderr
    (results_path,) = (tmp_path / "reports").glob("*/results.json")
    data = json.loads(results_path.read_text())
    (sc,) = data["scenarios"]
    assert sc["verdict"] == "fail"
    assert "3 of 3 faulted sessions not reclaimed within 3 s" in sc["reason"]
    assert "7200 s (OS default)" in sc["reason"]
    assert all(s["reclaimed"] is False and s["reclaim_s"] is None for s in sc["sessions"])
    assert "fail" in proc.stdout and "pg-defaults-short" in proc.stdout


@pytest.mark.slow   # measured 10-12 s
def test_results_json_has_the_design_shape(tmp_path: Path) -> None:
    path = write_scenario(tmp_path, "shape", f"""name: shape
{KEEPALIVE}
sessions: {{count: 2, hold: 200ms}}
fault: {{type: client-vanish, sessions: 1}}
expect: {{reclaimed_within: 8s}}
""")
    proc = run_cli("run", "--report-dir", str(tmp_path), "--json", str(tmp_path / "copy.json"), str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((tmp_path / "copy.json").read_text())
    assert data["schema"] == "connchaos.results/1"
    assert {"run_id", "started_at", "scenarios"} <= set(data)
    sc = data["scenarios"][0]
    assert {"name", "verdict", "reason", "backend", "layer", "fault", "prediction", "sessions",
            "summary"} <= set(sc)
    assert (sc["backend"], sc["layer"], sc["fault"]) == ("local", "packet", "client-vanish")
    assert {"reclaim_s", "mechanism", "formula"} <= set(sc["prediction"])
    assert set(sc["summary"]) == {"sessions", "faulted", "reclaimed", "p50_s", "p95_s", "max_s",
                                  "survivors_killed"}
    s = sc["sessions"][0]
    assert {"id", "faulted", "client", "reclaimed", "reclaim_s", "predicted_s", "mechanism",
            "events"} <= set(s)
    assert s["client"].startswith("10.77.0.2:")
    assert sum(x["faulted"] for x in sc["sessions"]) == 1
    assert (tmp_path / data["run_id"] / "results.json").exists()


BAD = {
    "unknown-key": ("name: x\ntarget: {service: postgres}\nsessions:\n  count: 2\n  hold_: 1s\n"
                    "fault: {type: blackhole}\nexpect: {reclaimed_within: 5s}\n", 5, "sessions.hold_"),
    "bad-duration": ("name: x\ntarget: {service: postgres}\nsessions: {count: 2}\nfault: {type: blackhole}\n"
                     "expect:\n  reclaimed_within: 8\n", 6, "expect.reclaimed_within"),
    "unknown-setting": ("name: x\ntarget:\n  service: postgres\n  settings:\n    tcp_keepalives_idle: 2\n"
                        "    tcp_keepalive_count: 3\nsessions: {count: 2}\nfault: {type: blackhole}\n"
                        "expect: {reclaimed_within: 5s}\n", 6, "target.settings.tcp_keepalive_count"),
    "ssh-option": ("name: x\ntarget:\n  service: ssh\n  settings:\n    ClientAliveIntervl: 2\n"
                   "sessions: {count: 2}\nfault: {type: blackhole}\nexpect: {reclaimed_within: 5s}\n",
                   5, "target.settings.ClientAliveIntervl"),
    "websocket-setting": ("name: x\ntarget:\n  service: websocket\n  settings:\n    ping_intervall: 2\n"
                          "sessions: {count: 2}\nfault: {type: blackhole}\nexpect: {reclaimed_within: 5s}\n",
                          5, "target.settings.ping_intervall"),
    "tcp-without-command": ("name: x\ntarget:\n  service: tcp\nsessions: {count: 2}\nfault: {type: blackhole}\n"
                            "expect: {reclaimed_within: 5s}\n", 2, "target.command"),
    "wrong-fault": ("name: x\ntarget: {service: postgres}\nsessions: {count: 2}\nfault:\n  type: blakhole\n"
                    "expect: {reclaimed_within: 5s}\n", 5, "fault.type"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_scenario_files_exit_2_naming_file_line_and_field(tmp_path: Path, case: str) -> None:
    body, line, field = BAD[case]
    path = write_scenario(tmp_path, case, body)
    before = ours()
    for command in ("check", "run", "explain"):
        proc = run_cli(command, "--report-dir", str(tmp_path / "r"), str(path)) if command == "run" \
            else run_cli(command, str(path))
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        assert f"{path}:{line}: {field}:" in proc.stderr, proc.stderr
        assert "nothing was started" in proc.stderr
    assert ours() == before
    assert not (tmp_path / "r").exists()


def test_the_catalogue_checks_and_explains() -> None:
    proc = run_cli("check", "scenarios")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("ok ") == len(list((REPO / "scenarios").glob("*.yaml")))
    proc = run_cli("explain", "scenarios/postgres-defaults-hold-dead-sessions.yaml")
    assert proc.returncode == 0
    assert "7875 s after the last activity, by keepalive" in proc.stdout
    proc = run_cli("explain", "scenarios/load-websocket-small.yaml")
    assert proc.returncode == 0, proc.stderr
    assert ("load      300 users at 150/s (a Locust master and 2 workers), each holding one"
            " session, a request every 2 s; the fault 2 s after all are open") in proc.stdout
    assert "blackhole at the packet layer (the peer is silent); 20% of the load's 300 sessions" in proc.stdout


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*CONNCHAOS, *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(proc: subprocess.Popen[str], stream: str, text: str, timeout: float = 60) -> str:
    seen = ""
    deadline = time.monotonic() + timeout
    pipe = getattr(proc, stream)
    while time.monotonic() < deadline:
        line = pipe.readline()
        if not line:
            break
        seen += line
        if text in line:
            return seen
    proc.kill()
    raise AssertionError(f"{text!r} never appeared; saw: {seen}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_tears_everything_down(tmp_path: Path, sig: signal.Signals) -> None:
    path = write_scenario(tmp_path, "long", """name: long
target: {service: postgres}
sessions: {count: 3, hold: 200ms}
fault: {type: blackhole}
expect: {still_held_after: 60s}
""")
    proc = _spawn("run", "--report-dir", str(tmp_path / "r"), str(path))
    _wait_for(proc, "stderr", "watching up to")
    assert any(o.startswith("netns cc-") for o in ours())     # the lab is really up
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    (results,) = (tmp_path / "r").glob("*/results.json")
    data = json.loads(results.read_text())
    assert data["interrupted"] is True and data["scenarios"][0]["verdict"] == "error"


def test_clean_removes_what_a_killed_run_left(tmp_path: Path) -> None:
    path = write_scenario(tmp_path, "up", f"""name: up
{KEEPALIVE}
sessions: {{count: 2, hold: 100ms}}
fault: {{type: blackhole}}
expect: {{reclaimed_within: 8s}}
""")
    before = ours()
    proc = _spawn("up", str(path))
    _wait_for(proc, "stdout", "holding")
    proc.kill()                       # SIGKILL: no chance to clean up
    proc.wait()
    left = ours() - before
    assert any(o.startswith("netns cc-") for o in left)
    assert any(o.startswith("process ") and "postgres" in o for o in left)
    cleaned = run_cli("clean")
    assert cleaned.returncode == 0, cleaned.stderr
    assert "removed namespace" in cleaned.stdout
    time.sleep(0.2)
    assert ours() - before == set()


def test_up_holds_the_lab_until_ctrl_c(tmp_path: Path) -> None:
    path = write_scenario(tmp_path, "up", f"""name: up
{KEEPALIVE}
sessions: {{count: 2, hold: 100ms}}
fault: {{type: blackhole}}
expect: {{reclaimed_within: 8s}}
""")
    proc = _spawn("up", "--fault", str(path))
    seen = _wait_for(proc, "stdout", "holding")
    assert "2 sessions held open" in seen and "fault blackhole" in seen
    ns = next(o.split()[1] for o in ours() if o.startswith("netns cc-") and o.endswith("-rtr"))
    rules = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "table", "inet", "connchaos"],
                           capture_output=True, text=True)
    assert rules.returncode == 0 and "drop" in rules.stdout
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 0


def test_a_machine_without_root_or_nftables_gets_exit_3(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from harness import cli

    scenario = str(REPO / "scenarios/postgres-client-vanishes.yaml")
    # (backend: auto would move to the docker backend, which runs without root: see
    # tests/e2e/test_docker_rootless.py)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert cli.main(["run", scenario, "--backend", "local"]) == 3
    assert "root" in capsys.readouterr().err
    monkeypatch.undo()
    monkeypatch.setattr(nft, "nft_binary", lambda: None)
    assert cli.main(["run", scenario]) == 3
    assert "nftables" in capsys.readouterr().err
    assert cli.main(["check", scenario]) == 0       # checking needs neither


def test_doctor_lists_what_this_machine_can_do() -> None:
    proc = run_cli("doctor")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for item in ("root", "network namespaces", "nftables", "PostgreSQL server", "Docker engine"):
        assert item in proc.stdout
    assert "local backend: ready" in proc.stdout
