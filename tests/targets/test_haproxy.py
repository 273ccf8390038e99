"""The haproxy tier: its settings as haproxy.cfg lines and checked by ``haproxy -c``, the
prediction per leg, the runtime API's streams, and real HAProxy in labs: sessions through it
to websocket, tcp and postgres upstreams, the client leg reclaimed by timeout tunnel and by
clitcpka when predicted, the upstream leg closed with it; the scenarios on both backends."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.core.assess import SessionFacts
from harness.core.haproxy import Timeouts, tier_timeout
from harness.core.prediction import Prediction
from harness.faults import PacketFault
from harness.faults import build as build_fault
from harness.faults.site import Site
from harness.lab.local import LocalLab
from harness.lab.netns import LoopInNamespace
from harness.observe.sockdiag import SocketTable
from harness.scenario.model import Fault
from harness.targets.haproxy import HaproxyTarget, config, find_haproxy, runtime
from harness.targets.tcp import TcpTarget
from harness.targets.websocket import WebSocketTarget
from harness.testing import CONNCHAOS, REPO

# the bound: each measured reclaim (legs included) within 0.3 s of its prediction
TOLERANCE_S = 0.3
needs_haproxy = pytest.mark.skipif(find_haproxy() is None, reason="needs haproxy (apt-get install haproxy)")

# ``show sess all`` of HAProxy 2.6.12 with one TCP stream and the CLI's own (trimmed)
SHOW_SESS = """\
0x5585daaac830: [03/Dec/2026:14:14:42.303786] id=0 proto=tcpv4 source=10.77.0.2:54948
  flags=0x4a, conn_retries=0, conn_exp=<NEVER> conn_et=0x000 srv_conn=0x5585da9ebd70, pend_pos=(nil) waiting=0 epoch=0
  frontend=connchaos (id=2 mode=tcp), listener=? (id=1) addr=10.77.1.2:10000
  backend=connchaos (id=2 mode=tcp) addr=10.77.1.2:45796
  server=upstream (id=1) addr=10.77.1.2:8765
  task=0x5585dabd7300 (state=0x00 nice=0 calls=2 rate=0 exp=4s tmask=0x1 age=0s)
0x5585dabd79c0: [03/Dec/2026:14:14:42.307606] id=1 proto=unix_stream source=unix:1
  frontend=GLOBAL (id=0 mode=tcp), listener=? (id=1) addr=unix:1
  backend=<NONE> (id=-1 mode=-)
  server=<NONE> (id=-1)
0x5585daaac999: [03/Dec/2026:14:14:43.000000] id=2 proto=tcpv4 source=10.77.0.2:54950
  frontend=connchaos (id=2 mode=tcp), listener=? (id=1) addr=10.77.1.2:10000
  backend=connchaos (id=2 mode=tcp) addr=<NONE>
  server=<NONE> (id=-1)
"""


def target(settings: dict[str, Any], upstream: Any | None = None) -> HaproxyTarget:
    return HaproxyTarget(upstream=upstream or WebSocketTarget(settings={"ping_interval": "off"}),
                         settings=settings)


# -- configuration ------------------------------------------------------------------------------


def test_settings_become_listen_lines_and_each_line_knows_its_setting() -> None:
    rendered = config.render({"timeout_tunnel": "3s", "timeout_client": 1.5, "clitcpka": True,
                              "srvtcpka": False, "clitcpka_idle": 2, "clitcpka_intvl": "1s",
                              "clitcpka_cnt": 2},
                             addr="10.77.1.2", port=10000, upstream_addr="10.77.1.2",
                             upstream_port=8765, admin_socket="/tmp/x/admin.sock", maxconn=120)
    lines = rendered.text.splitlines()
    by_setting = {name: lines[n - 1].strip() for n, name in rendered.written_by.items()}
    assert by_setting == {"timeout_tunnel": "timeout tunnel 3s", "timeout_client": "timeout client 1500ms",
                          "clitcpka": "option clitcpka", "srvtcpka": "no option srvtcpka",
                          "clitcpka_idle": "clitcpka-idle 2s", "clitcpka_intvl": "clitcpka-intvl 1s",
                          "clitcpka_cnt": "clitcpka-cnt 2"}
    assert "    mode tcp" in lines and "    bind 10.77.1.2:10000" in lines
    assert "    stats socket /tmp/x/admin.sock mode 600 level admin" in lines
    assert lines[-1] == "    server upstream 10.77.1.2:8765"
    assert "    timeout connect 5s" in lines   # the lab's default when the scenario sets none


def test_our_checks_catch_what_haproxy_would_pass_on_or_misread() -> None:
    problems = dict(config.check_values({
        "timeout_clint": "3s", "clitcpka": "yes", "clitcpka_cnt": 0, "clitcpka_idle": "500ms",
        "srvtcpka_intvl": 40000, "timeout_tunnel": True, "maxconn": 10}))
    assert "did you mean timeout_client" in problems["timeout_clint"]
    assert "true or false" in problems["clitcpka"]
    assert "from 1 to 127" in problems["clitcpka_cnt"]
    assert "whole seconds" in problems["clitcpka_idle"] and "whole seconds" in problems["srvtcpka_intvl"]
    assert "duration" in problems["timeout_tunnel"]
    assert "maxconn" not in problems


def test_haproxy_alerts_are_mapped_to_the_setting_that_wrote_the_line() -> None:
    output = ("[NOTICE]   (1) : haproxy version is 2.6.12\n"
              "[ALERT]    (1) : config : parsing [/tmp/c/haproxy.cfg:14] : unexpected character 'x'"
              " in 'timeout tunnel'\n"
              "[ALERT]    (1) : config : parsing [/tmp/c/haproxy.cfg:3] : something of the lab's\n"
              "[ALERT]    (1) : config : Fatal errors found in configuration.\n")
    assert config.refusals(output, {14: "timeout_tunnel"}) == [
        ("timeout_tunnel", "unexpected character 'x' in 'timeout tunnel'"),
        (None, "something of the lab's")]


@needs_haproxy
def test_haproxy_itself_refuses_a_bad_timeout() -> None:
    assert config.check_settings({"timeout_tunnel": "3s", "clitcpka": True}) == []
    (problem,) = config.check_settings({"timeout_tunnel": "3s", "timeout_client": "3x"})
    assert problem[0] == "timeout_client" and "HAProxy refuses it" in problem[1] and "'x'" in problem[1]
    (problem,) = config.check_settings({"timeout_server": "30d"})
    assert problem[0] == "timeout_server" and "timer overflow" in problem[1]


@needs_haproxy
def test_a_setting_haproxy_refuses_is_exit_2_at_its_line(tmp_path: Path) -> None:
    scenario = tmp_path / "bad.yaml"
    scenario.write_text(
        "name: bad-haproxy\ntarget:\n  service: haproxy\n  settings:\n    timeout_tunnel: 3s\n"
        "    timeout_client: 3x\n  upstream:\n    service: websocket\n    settings:\n"
        "      ping_intervall: 2\nsessions: {count: 1}\nfault: {type: blackhole}\n"
        "expect: {reclaimed_within: 5s}\n")
    done = subprocess.run([*CONNCHAOS, "check", str(scenario)], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    out = done.stdout + done.stderr
    assert f"{scenario}:6" in out and "HAProxy refuses it" in out          # the tier's own check
    assert f"{scenario}:10" in out and "did you mean ping_interval" in out  # the upstream's


def test_a_tier_needs_an_upstream_and_only_a_tier_takes_one(tmp_path: Path) -> None:
    from harness.errors import ScenarioError
    from harness.scenario import load_paths

    for text, line, words in (
            ("target:\n  service: haproxy\n", 2, "needs the upstream"),
            ("target:\n  service: websocket\n  upstream: {service: tcp, command: x, port: 5}\n", 4,
             "only a tier"),
            ("target:\n  service: haproxy\n  upstream:\n    service: websocket\n    backend: docker\n", 6,
             "runs where the tier runs")):
        path = tmp_path / "s.yaml"
        path.write_text(f"name: s\n{text}sessions: {{count: 1}}\nfault: {{type: blackhole}}\n"
                        "expect: {reclaimed_within: 5s}\n")
        with pytest.raises(ScenarioError) as err:
            load_paths([str(path)])
        assert f"s.yaml:{line}" in str(err.value) and words in str(err.value), str(err.value)


# -- prediction per leg ---------------------------------------------------------------------------


def test_timeout_tunnel_supersedes_client_and_server_and_counts_from_the_last_activity() -> None:
    t = target({"timeout_tunnel": "3s", "timeout_client": "1s", "timeout_server": "1s"})
    pred, first = t.heartbeat(last_activity_s=-1.0, opened_s=-1.2)
    assert first is None and pred is not None
    assert pred.reclaim_s == 2.0 and pred.mechanism == "closed" and "timeout tunnel 3 s" in pred.formula
    # without a tunnel timeout the shorter side's timeout ends the idle stream
    pred, _ = target({"timeout_client": "5s", "timeout_server": "4s"}).heartbeat(last_activity_s=-1.0,
                                                                              opened_s=-2.0)
    assert pred is not None and pred.reclaim_s == 3.0 and "timeout server" in pred.formula
    # nothing set: infinite, and the websocket with pings off has no heartbeat either
    assert target({}).heartbeat(last_activity_s=-1.0, opened_s=-2.0) == (None, None)
    assert tier_timeout(Timeouts(), last_activity_s=0.0, upstream_first_send_s=None) is None


def test_the_upstreams_heartbeat_passes_through_and_the_earliest_decides() -> None:
    pinging = WebSocketTarget(settings={"ping_interval": 2, "ping_timeout": 2, "close_timeout": 1})
    up, up_first = pinging.heartbeat(last_activity_s=-1.0, opened_s=-1.0)
    assert up is not None and up.reclaim_s is not None and up_first is not None
    # a long tunnel timeout: the pings refresh it; the websocket's own give-up (its FIN at
    # the ping timeout) reaches HAProxy, which holds the half-closed client leg client-fin more
    pred, first = target({"timeout_tunnel": "30s", "timeout_client_fin": "2s"}, pinging).heartbeat(
        last_activity_s=-1.0, opened_s=-1.0)
    assert first == up_first and pred is not None
    assert pred.reclaim_s == pytest.approx(up_first + 2.0 + 2.0)   # first ping + ping_timeout + client-fin
    assert "close frame 1011 and FIN at" in pred.formula and "client-fin 2 s" in pred.formula
    # without client-fin the tunnel timeout holds the half-closed leg
    pred, _ = target({"timeout_tunnel": "30s"}, pinging).heartbeat(last_activity_s=-1.0, opened_s=-1.0)
    assert pred is not None and pred.reclaim_s == pytest.approx(up_first + 2.0 + 30.0)
    # a tunnel timeout that expires before the first ping goes out: HAProxy's decides
    pred, _ = target({"timeout_tunnel": "500ms"}, pinging).heartbeat(last_activity_s=-0.1, opened_s=-0.1)
    assert pred is not None and pred.reclaim_s == 0.4 and "timeout tunnel" in pred.formula


def test_client_keepalive_is_clitcpka_and_the_upstream_leg_follows_the_client_leg() -> None:
    t = target({"clitcpka": True, "clitcpka_idle": 2, "clitcpka_intvl": "1s", "clitcpka_cnt": 2,
                "srvtcpka": True, "srvtcpka_idle": 9})
    ss = t.socket_settings()
    assert (ss.keepalive, ss.idle_s, ss.interval_s, ss.count) == (True, 2.0, 1.0, 2)
    assert not target({"clitcpka_idle": 2}).socket_settings().keepalive
    facts = SessionFacts(id=0, faulted=True, opened_s=-2.0, last_activity_s=-1.0)
    closed = t.predict_upstream(Prediction(3.0, "keepalive", "k", slack_s=0.1), facts)
    assert (closed.outcome, closed.at_s, closed.mechanism) == ("closed", 3.0, "tier-closed")
    assert closed.slack_s > 0.1
    for never in (None, Prediction(None, "none", "never")):
        held = t.predict_upstream(never, facts)
        assert (held.outcome, held.at_s) == ("held", None)


def test_show_sess_all_gives_each_client_its_upstream_connection() -> None:
    streams = runtime.parse_sessions(SHOW_SESS)
    assert streams == [runtime.Stream(("10.77.0.2", 54948), ("10.77.1.2", 45796), ("10.77.1.2", 8765)),
                       runtime.Stream(("10.77.0.2", 54950), None, None)]


def test_the_scenario_model_takes_the_upstream_as_a_target_of_its_own() -> None:
    from harness.scenario.model import Scenario

    spec = Scenario.model_validate({
        "name": "s", "target": {"service": "haproxy", "settings": {"timeout_tunnel": "3s"},
                                "upstream": {"service": "tcp", "command": "x {port}", "port": 7000}},
        "sessions": {"count": 2}, "fault": {"type": "blackhole"}, "expect": {"reclaimed_within": "5s"}})
    assert spec.target.session_target.service == "tcp"
    built = HaproxyTarget.from_scenario(spec)
    assert isinstance(built.upstream, TcpTarget) and built.upstream.port == 7000
    assert built.upstream_port == 7000 and built.port == 10000
    assert built.describe_settings()["upstream.command"] == "x {port}"


# -- real HAProxy in a lab --------------------------------------------------------------------------


def first_time(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.01) -> float | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return time.time()
        time.sleep(interval_s)
    return None


def _blackhole(lab: LocalLab, flows: list[Any]) -> float:
    fault = build_fault(Fault.model_validate({"type": "blackhole"}))
    assert isinstance(fault, PacketFault)
    fault.apply(Site(lab, flows))
    lab.on_close("fault", fault.revert)
    return time.time()


def _open(lab: LocalLab, t: HaproxyTarget, count: int) -> tuple[LoopInNamespace, list[Any]]:
    client = LoopInNamespace(lab.client_ns)
    lab.on_close("client", client.close)
    sessions = [client.run(t.open_session(lab, i)) for i in range(count)]
    lab.on_close("sessions", lambda: [client.run(t.close_session(s)) for s in sessions])
    return client, sessions


@needs_haproxy
@pytest.mark.usefixtures("no_leftovers")
def test_timeout_tunnel_reclaims_a_dead_websocket_and_closes_its_upstream_leg() -> None:
    t = target({"timeout_tunnel": "3s"})
    with LocalLab() as lab:
        t.start(lab)
        client, sessions = _open(lab, t, 3)
        faulted, survivor = sessions[:2], sessions[2]
        clients = [(s.flow.client_addr, s.flow.client_port) for s in sessions]
        ups = t.upstreams(lab, clients)
        assert set(ups) == set(clients)
        for s, c in zip(sessions, clients, strict=True):
            assert s.pid is None and ups[c].key[:2] == (lab.server_addr, 8765)
        assert set(t.pool_states(lab)) == {u.key[2:4] for u in ups.values()}
        table = SocketTable(lab.server_ns)
        lab.on_close("table", table.close)
        time.sleep(0.5)
        before = table.dump(t.port)
        last = {c: time.time() - min(before[(lab.server_addr, t.port, *c)].last_ack_recv_s,
                                     before[(lab.server_addr, t.port, *c)].last_data_recv_s)
                for c in clients}
        t0 = _blackhole(lab, [s.flow for s in faulted])

        def client_legs() -> set[tuple[str, int]]:
            return {k[2:4] for k, i in table.dump(t.port).items() if i.inode != 0}

        def upstream_legs() -> set[tuple[str, int]]:
            return {k[2:4] for k, i in table.dump(8765).items() if i.inode != 0}

        gone_client: dict[tuple[str, int], float] = {}
        gone_upstream: dict[tuple[str, int], float] = {}
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and (len(gone_client) < 2 or len(gone_upstream) < 2):
            now, held, up_held = time.time(), client_legs(), upstream_legs()
            for c in clients[:2]:
                if c not in held:
                    gone_client.setdefault(c, now)
                if ups[c].key[2:4] not in up_held:
                    gone_upstream.setdefault(c, now)
            # the survivor keeps its tunnel busy: one echo a second
            if now - last[clients[2]] > 1.0:
                assert client.run(t.alive(survivor)) == (True, "echo")
                last[clients[2]] = time.time()
            time.sleep(0.01)
        for c in clients[:2]:
            predicted, _ = t.heartbeat(last_activity_s=last[c] - t0, opened_s=-1.0)
            assert predicted is not None and predicted.reclaim_s is not None
            measured = gone_client[c] - t0
            assert abs(measured - predicted.reclaim_s) < TOLERANCE_S, (measured, predicted)
            up = t.predict_upstream(predicted, SessionFacts(id=0, faulted=True, opened_s=-1, last_activity_s=0))
            assert up.outcome == "closed" and up.at_s is not None
            assert abs(gone_upstream[c] - t0 - up.at_s) < TOLERANCE_S, (gone_upstream[c] - t0, up)
            print(f"client leg {measured:.3f} s, upstream leg {gone_upstream[c] - t0:.3f} s,"
                  f" predicted {predicted.reclaim_s:.3f} s")
        # HAProxy's own view: the survivor's stream is the only one left, and it still works
        assert set(t.pool_states(lab)) == {ups[clients[2]].key[2:4]}
        assert client.run(t.alive(survivor)) == (True, "echo")
        errors = t.server_errors()
        assert all(errors[c].kind == "timeout" for c in clients[:2]), errors


@needs_haproxy
@pytest.mark.usefixtures("no_leftovers")
def test_clitcpka_reclaims_the_client_leg_of_a_raw_tcp_upstream() -> None:
    echo = REPO / "scenarios" / "services" / "tcp_echo.py"
    up = TcpTarget(command=f"{sys.executable} {echo} --host {{host}} --port {{port}}", port=7000)
    t = target({"clitcpka": True, "clitcpka_idle": 2, "clitcpka_intvl": 1, "clitcpka_cnt": 2}, up)
    with LocalLab() as lab:
        t.start(lab)
        client, sessions = _open(lab, t, 2)
        clients = [(s.flow.client_addr, s.flow.client_port) for s in sessions]
        ups = t.upstreams(lab, clients)
        assert set(ups) == set(clients) and all(u.key[:2] == (lab.server_addr, 7000) for u in ups.values())
        table = SocketTable(lab.server_ns)
        lab.on_close("table", table.close)
        info = table.dump(t.port)[(lab.server_addr, t.port, *clients[0])]
        t0 = _blackhole(lab, [sessions[0].flow])
        last = -min(info.last_ack_recv_s, info.last_data_recv_s) - (t0 - time.time())
        from harness.core.prediction import KernelDefaults, effective, predict

        pred = predict(effective(t.socket_settings(), KernelDefaults()), activity="idle", peer="silent",
                       last_activity_s=last)
        gone = first_time(lambda: (lab.server_addr, t.port, *clients[0]) not in table.dump(t.port), 8)
        up_gone = first_time(lambda: ups[clients[0]].key not in table.dump(7000)
                             or table.dump(7000)[ups[clients[0]].key].inode == 0, 2)
        assert gone is not None and up_gone is not None and pred.reclaim_s is not None
        assert abs(gone - t0 - pred.reclaim_s) < TOLERANCE_S, (gone - t0, pred)
        assert abs(up_gone - t0 - pred.reclaim_s) < TOLERANCE_S, (up_gone - t0, pred)
        print(f"clitcpka: client leg {gone - t0:.3f} s, upstream leg {up_gone - t0:.3f} s,"
              f" predicted {pred.reclaim_s:.3f} s")
        assert client.run(t.alive(sessions[1]))[0]
        assert ups[clients[1]].key in table.dump(7000)


@needs_haproxy
@pytest.mark.usefixtures("no_leftovers")
@pytest.mark.parametrize("name", ["haproxy-tunnel-timeout-websocket", "haproxy-clitcpka"])
def test_the_shipped_scenarios_pass_through_the_runner(name: str) -> None:
    from harness import run as runner

    (loaded,) = runner.prepare([str(REPO / "scenarios" / f"{name}.yaml")])
    entry = dict(runner.run_plain(loaded, runner.new_run_id()).to_json())
    assert entry["verdict"] == "pass", entry["reason"]
    assert entry["target"]["service"] == "haproxy"
    for s in (s for s in entry["sessions"] if s["faulted"]):
        assert abs(s["reclaim_s"] - s["predicted_s"]) < TOLERANCE_S, s


@needs_haproxy
@pytest.mark.usefixtures("no_leftovers")
def test_a_pinging_upstream_closes_first_and_haproxy_holds_the_half_closed_leg(tmp_path: Path) -> None:
    from harness import run as runner

    scenario = tmp_path / "ping-through.yaml"
    scenario.write_text(
        "name: ping-through\ntarget:\n  service: haproxy\n"
        "  settings: {timeout_tunnel: 30s, timeout_client_fin: 2s}\n"
        "  upstream: {service: websocket, settings: {ping_interval: 1, ping_timeout: 1, close_timeout: 1}}\n"
        "sessions: {count: 2, hold: 500ms}\nfault: {type: blackhole, sessions: 1}\n"
        "expect: {reclaimed_within: 6s}\nobserve: {deadline: 6s, interval: 20ms}\n")
    (loaded,) = runner.prepare([str(scenario)])
    entry = dict(runner.run_plain(loaded, runner.new_run_id()).to_json())
    assert entry["verdict"] == "pass", entry["reason"]
    (s,) = (s for s in entry["sessions"] if s["faulted"])
    assert abs(s["reclaim_s"] - s["predicted_s"]) < TOLERANCE_S, s
    assert any(e["what"] == "state" and e.get("detail") == "FIN_WAIT1" and e["t"] < s["reclaim_s"] - 1
               for e in s["events"])


@needs_haproxy
@pytest.mark.slow
@pytest.mark.usefixtures("no_leftovers")
def test_a_load_run_through_haproxy_uses_the_upstreams_locust_user(tmp_path: Path) -> None:
    from harness import run as runner

    scenario = tmp_path / "load-haproxy.yaml"
    scenario.write_text(
        "name: load-haproxy\ntarget:\n  service: haproxy\n  settings: {timeout_tunnel: 3s}\n"
        "  upstream: {service: websocket, settings: {ping_interval: off}}\n"
        "load: {users: 20, spawn_rate: 20, hold: 1s, activity: {every: 1s}}\n"
        "fault: {type: blackhole, sessions: 0.25}\n"
        "expect: {reclaimed_within: 4s, survivors_untouched: true}\nobserve: {deadline: 6s, interval: 50ms}\n")
    (loaded,) = runner.prepare([str(scenario)])
    entry = dict(runner.run_scenario(loaded, runner.new_run_id(), backend="local",
                                     report_folder=str(tmp_path / "reports")).to_json())
    assert entry["verdict"] == "pass", entry["reason"]
    assert entry["summary"]["faulted"] == 5 and entry["summary"]["survivors_killed"] == 0


@pytest.mark.slow
@pytest.mark.usefixtures("no_leftovers", "images_built")
def test_the_tunnel_scenario_runs_on_the_docker_backend() -> None:
    from harness import run as runner

    (loaded,) = runner.prepare([str(REPO / "scenarios" / "haproxy-tunnel-timeout-websocket.yaml")])
    entry = dict(runner.run_scenario(loaded, runner.new_run_id(), backend="docker").to_json())
    assert entry["verdict"] == "pass", entry["reason"]
    assert entry["backend"] == "docker"
    for s in (s for s in entry["sessions"] if s["faulted"]):
        assert abs(s["reclaim_s"] - s["predicted_s"]) < TOLERANCE_S, s


@needs_haproxy
@pytest.mark.usefixtures("no_leftovers")
def test_the_pytest_fixture_runs_a_haproxy_scenario_written_in_python(connchaos_lab: Any) -> None:
    result = connchaos_lab.run(
        service="haproxy", settings={"timeout_tunnel": "2s"}, sessions=2, hold="500ms",
        upstream={"service": "websocket", "settings": {"ping_interval": "off"}}, deadline="5s",
        expect={"reclaimed_within": "3s"})
    assert result.verdict == "pass", result.record.reason
    for s in result.faulted:
        assert s.reclaimed and abs(s.reclaim_s - s.predicted_s) < TOLERANCE_S
        assert result.record.target.settings["upstream"] == "websocket"
