"""The mqtt target: its settings as Mosquitto reads and checks them, and the real thing:
MQTT clients with a keepalive, blackholed, disconnected by Mosquitto at the check
``harness.core.mqtt`` predicts; the broker's log names why and whom."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from harness.core.mqtt import BrokerClock, broker_keepalive
from harness.faults import build as build_spec
from harness.faults.site import Site
from harness.lab.local import LocalLab
from harness.lab.netns import LoopInNamespace
from harness.scenario.model import Fault
from harness.targets.mqtt import MqttTarget
from harness.targets.mqtt.config import client_keepalive, own_problems
from harness.testing import run_cli, write_scenario

REPO = Path(__file__).resolve().parent.parent.parent
SCENARIO = REPO / "scenarios" / "mqtt-keepalive-reclaims.yaml"


# -- pure: settings ---------------------------------------------------------------------------

def test_mosquitto_sets_no_tcp_keepalive_and_the_clients_keepalive_is_ours() -> None:
    target = MqttTarget(settings={"keepalive": 2, "max_inflight_messages": 5})
    assert target.socket_settings().keepalive is False
    assert target.keepalive == 2 and client_keepalive({}) == 60
    shown = target.describe_settings()
    assert shown["keepalive (clients)"] == 2 and shown["max_inflight_messages"] == 5


def test_the_labs_own_options_and_impossible_keepalives_are_ours_to_refuse() -> None:
    found = own_problems({"listener": 1884, "allow_anonymous": False, "log_dest": "syslog",
                          "keepalive": 70000, "Max_Keepalive": 5, "max_keepalive": "5\nlistener 1",
                          "max_inflight_messages": 5})
    assert all("set by connchaos" in found[k] for k in ("listener", "allow_anonymous", "log_dest"))
    assert "0 to 65535" in found["keepalive"]
    assert "option name" in found["Max_Keepalive"] and "one line" in found["max_keepalive"]
    assert "max_inflight_messages" not in found
    assert "0 to 65535" in own_problems({"keepalive": True})["keepalive"]


def test_without_its_fault_moment_the_prediction_is_the_bounds_of_the_check() -> None:
    prediction, first_send = MqttTarget(settings={"keepalive": 1}).heartbeat(last_activity_s=-0.5, opened_s=-2)
    assert first_send is None and prediction is not None
    assert "between 0.5 s and 6.6 s" in prediction.formula
    never, _ = MqttTarget(settings={"keepalive": 0}).heartbeat(last_activity_s=-0.5, opened_s=-2)
    assert never is not None and never.reclaim_s is None


# -- Mosquitto itself ---------------------------------------------------------------------------

@pytest.mark.usefixtures("lab_machine")
def test_settings_are_checked_by_mosquitto_itself_each_at_its_name() -> None:
    problems = dict(MqttTarget.check_settings({
        "max_keepalive": 70000,            # above what Mosquitto takes
        "max_inflight_messages": 5,
        "max_keepalive_typo": 3,           # no such option
        "set_tcp_nodelay": True,
        "persistence": True,               # the lab's
        "keepalive": 2,
    }))
    assert problems == {
        "max_keepalive": "mosquitto refuses it: Invalid max_keepalive value (70000).",
        "max_keepalive_typo": 'mosquitto refuses it: Unknown configuration variable "max_keepalive_typo".',
        "persistence": "is set by connchaos to run the lab; remove it",
    }


@pytest.mark.usefixtures("lab_machine")
def test_check_points_at_the_line_mosquitto_refuses(tmp_path: Path) -> None:
    body = SCENARIO.read_text()
    anchor = "    keepalive: 1               # the clients' keepalive (CONNECT), in seconds\n"
    bad = write_scenario(tmp_path, "bad", body.replace(anchor, anchor + "    max_connections: lots\n"
                                                       "    max_queued_messagez: 3\n"))
    done = run_cli("check", str(bad))
    assert done.returncode == 2, done.stdout + done.stderr
    lines = bad.read_text().splitlines()
    assert f"{bad}:{lines.index('    max_queued_messagez: 3') + 1}" in done.stderr
    assert 'Unknown configuration variable "max_queued_messagez"' in done.stderr
    assert "max_connections" not in done.stderr      # atoi: Mosquitto takes "lots" as 0
    assert run_cli("check", str(SCENARIO)).returncode == 0


def test_mosquitto_is_what_a_local_run_needs() -> None:
    from harness import machine
    from harness.scenario import load_paths

    loaded = load_paths([str(SCENARIO)])
    assert "mqtt on local" in machine.needs_for(loaded, "local")
    assert "mqtt on local" not in machine.needs_for(loaded, "docker")


@pytest.mark.lab   # runs the CLI in a process of its own
def test_a_machine_without_mosquitto_is_exit_3_naming_it() -> None:
    done = run_cli("run", "--backend", "local", str(SCENARIO),
                   env={"CONNCHAOS_MOSQUITTO": "/nonexistent/mosquitto"})
    assert done.returncode == 3, done.stdout + done.stderr
    assert "Mosquitto MQTT broker" in done.stderr and "apt-get install mosquitto" in done.stderr


# -- the real broker ------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.usefixtures("no_leftovers")
def test_blackholed_clients_go_at_the_predicted_check_and_the_other_stays() -> None:
    """Keepalive 1, three sessions, two blackholed: each broker socket must be released at
    the check ``broker_keepalive`` names (within 0.1 s into its second), the broker's log
    must say "exceeded timeout" for them, and the third must still echo."""
    target = MqttTarget(settings={"keepalive": 1})
    with LocalLab() as lab:
        target.start(lab)
        client = LoopInNamespace(lab.client_ns)
        lab.on_close("client", client.close)
        sessions = [client.run(target.open_session(lab, i)) for i in range(3)]
        lab.on_close("sessions", lambda: [client.run(target.close_session(s)) for s in sessions])
        peers = [(s.flow.client_addr, s.flow.client_port) for s in sessions]
        assert [target.server_peer(s) for s in sessions] == peers
        table = lab.reach.socket_table()
        lab.on_close("table", table.close)
        time.sleep(1.2)     # a ping at the middle of a second goes first
        keys = [(lab.server_addr, 1883, *p) for p in peers]
        before = table.dump(1883)
        sampled = time.time()
        heard = [sampled - min(before[k].last_ack_recv_s, before[k].last_data_recv_s) for k in keys]
        fault = build_spec(Fault.model_validate({"type": "blackhole"}))
        fault.apply(Site(lab, [s.flow for s in sessions[:2]]))
        lab.on_close("fault", fault.revert)
        t0 = time.time()
        target.fault_at(t0)
        clock = target.clock()
        assert clock is not None and isinstance(clock, BrokerClock)
        predicted = [broker_keepalive(1, last_heard_s=h - t0, clock=clock).reclaim_s for h in heard[:2]]
        gone: dict[int, float] = {}
        while time.time() < t0 + 9 and len(gone) < 2:
            rows = table.dump(1883)
            for i in (0, 1):
                info = rows.get(keys[i])
                if i not in gone and (info is None or info.inode == 0):
                    gone[i] = time.time() - t0
            time.sleep(0.01)
        assert set(gone) == {0, 1}, gone
        for i in (0, 1):
            at = predicted[i]
            assert at is not None and abs(gone[i] - at) <= 0.1, (gone, predicted)
            # the disconnect falls in the broker's check second
            assert math.floor(clock.fault_mono_s + gone[i]) % 6 == clock.first_check_second % 6
        errors = target.server_errors()
        assert {errors[p].kind for p in peers[:2]} == {"heartbeat"} and peers[2] not in errors
        assert "exceeded timeout" in errors[peers[0]].text
        assert client.run(target.alive(sessions[2])) == (True, "its publish came back")
        assert client.run(target.alive(sessions[0], timeout_s=0.5))[0] is False


@pytest.mark.usefixtures("lab_machine")
def test_in_flight_sessions_are_refused_at_their_line(tmp_path: Path) -> None:
    body = SCENARIO.read_text()
    bad = write_scenario(tmp_path, "inflight", body.replace("  activity: idle\n", "  activity: in-flight\n"))
    done = run_cli("check", str(bad))
    assert done.returncode == 2, done.stdout + done.stderr
    line = bad.read_text().splitlines().index("  activity: in-flight") + 1
    assert f"{bad}:{line}" in done.stderr and "idle sessions only" in done.stderr
