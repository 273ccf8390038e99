"""The websocket target: settings, the reference server in a real lab, the heartbeat measured
against its prediction, pings off, TCP keepalive, and a server of the user's own (``command:``)."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from harness.core.prediction import KernelDefaults, effective, predict
from harness.core.websocket import timeline
from harness.faults import PacketFault
from harness.faults import build as build_spec
from harness.faults.site import Site
from harness.lab.local import LocalLab
from harness.lab.netns import LoopInNamespace
from harness.observe.sockdiag import Key, SocketTable, SockInfo
from harness.scenario.model import Fault
from harness.targets.base import Session
from harness.targets.websocket import WebSocketTarget, classify_close
from harness.testing import REPO

# Every measured moment below is compared with its prediction within this. The server's own
# timers land 3-11 ms after the prediction on an idle machine; the rest is room for sampling
# (10 ms) and for a busy 2-core machine.
TOLERANCE_S = 0.1

REFERENCE_AS_COMMAND = (f"{sys.executable} -m harness.targets.ws_reference --host {{host}}"
                        " --port {port} --ping-interval 2 --ping-timeout 2 --close-timeout 1")


def key(session: Session) -> Key:
    f = session.flow
    return (f.server_addr, f.server_port, f.client_addr, f.client_port)


@contextmanager
def reference_lab(target: WebSocketTarget, count: int) -> Iterator[tuple[LocalLab, LoopInNamespace, list[Session]]]:
    with LocalLab() as lab:
        target.start(lab)
        client = LoopInNamespace(lab.client_ns)
        lab.on_close("client", client.close)
        sessions = [client.run(target.open_session(lab, i)) for i in range(count)]

        def close_all() -> None:
            for s in sessions:
                client.run(target.close_session(s))
        lab.on_close("sessions", close_all)
        yield lab, client, sessions


def blackhole(lab: LocalLab, sessions: list[Session]) -> float:
    fault = build_spec(Fault.model_validate({"type": "blackhole"}))
    assert isinstance(fault, PacketFault)
    fault.apply(Site(lab, [s.flow for s in sessions]))
    lab.on_close("fault", fault.revert)
    return time.time()


def first_time(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.01) -> float | None:
    """time.time() of the first check at which ``condition()`` held, None if it never did."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return time.time()
        time.sleep(interval_s)
    return None


# -- the reference server's control socket (no lab) ---------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def reference_server(folder: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """The reference server on 127.0.0.1 with its control socket in ``folder``."""
    control = folder / "control.sock"
    proc = subprocess.Popen([sys.executable, "-m", "harness.targets.ws_reference", "--host", "127.0.0.1",
                             "--port", str(_free_port()), "--control", str(control)],
                            cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not control.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
            time.sleep(0.02)
        yield proc, control
    finally:
        proc.terminate()
        proc.wait(10)


def ask(control: Path, request: object) -> Any:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(control))
        s.sendall((json.dumps(request) + "\n").encode())
        return json.loads(s.makefile("rb").readline())


def test_the_control_socket_is_0600_and_bounds_what_a_request_may_send(tmp_path: Path) -> None:
    folder = tmp_path / "control"
    folder.mkdir(mode=0o700)
    with reference_server(folder) as (_, control):
        assert stat.S_IMODE(control.stat().st_mode) == 0o600
        assert control.stat().st_uid == os.geteuid()
        assert ask(control, {"op": "status"}) == {"open": 0, "closed": 0, "connections": []}
        assert ask(control, {"op": "send", "bytes": 4000}) == {"sent": 0}
        too_big = ask(control, {"op": "send", "bytes": 10**12})
        assert too_big == {"error": "bytes must be a whole number from 0 to 1048576; got 1000000000000"}
        assert "error" in ask(control, {"op": "send", "bytes": -1})
        assert "error" in ask(control, {"op": "send", "bytes": "lots"})
        assert "error" in ask(control, ["not", "an", "object"])
        assert ask(control, {})["open"] == 0     # still answering


def test_the_server_refuses_a_control_folder_open_to_others(tmp_path: Path) -> None:
    folder = tmp_path / "open"
    folder.mkdir()
    folder.chmod(0o755)
    done = subprocess.run([sys.executable, "-m", "harness.targets.ws_reference", "--host", "127.0.0.1",
                           "--port", str(_free_port()), "--control", str(folder / "control.sock")],
                          cwd=REPO, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "must be owned by uid" in done.stderr and "mode 0755" in done.stderr
    assert not (folder / "control.sock").exists()


# -- settings (no lab) --------------------------------------------------------------------------


def test_settings_are_checked_with_reasons() -> None:
    problems = dict(WebSocketTarget.check_settings({
        "ping_intervall": 2,                  # typo
        "ping_timeout": "soon",               # not a time
        "close_timeout": 0,                   # ambiguous: websockets' None waits forever
        "tcp_keepalive_idle": 5,              # without the switch
        "tcp_keepalive_count": 500,           # out of the kernel's range
        "tcp_user_timeout": 1.5,              # milliseconds are whole
        "tcp_keepalive": "yes",               # not a boolean
    }))
    assert "did you mean ping_interval" in problems["ping_intervall"]
    assert "expected seconds" in problems["ping_timeout"]
    assert "wait" in problems["close_timeout"] and "forever" in problems["close_timeout"]
    assert "unless tcp_keepalive: true" in problems["tcp_keepalive_idle"]
    assert "from 1 to 127" in problems["tcp_keepalive_count"]
    assert "milliseconds" in problems["tcp_user_timeout"]
    assert "true or false" in problems["tcp_keepalive"]
    assert WebSocketTarget.check_settings({
        "ping_interval": "500ms", "ping_timeout": 1.5, "close_timeout": "off",
        "tcp_keepalive": True, "tcp_keepalive_idle": 5, "tcp_keepalive_interval": 1,
        "tcp_keepalive_count": 3, "tcp_user_timeout": 3000}) == []
    assert WebSocketTarget.check_settings({"ping_interval": 0, "ping_timeout": False}) == []


def test_settings_become_websockets_values_and_socket_options() -> None:
    t = WebSocketTarget(settings={"ping_interval": "500ms", "ping_timeout": 0, "close_timeout": "off"})
    ping = t.ping_settings()
    assert (ping.interval_s, ping.timeout_s, ping.close_timeout_s) == (0.5, None, None)
    defaults = WebSocketTarget().ping_settings()
    assert (defaults.interval_s, defaults.timeout_s, defaults.close_timeout_s) == (20, 20, 10)
    assert WebSocketTarget().socket_settings().keepalive is False   # as websockets' own server
    s = WebSocketTarget(settings={"tcp_keepalive": True, "tcp_keepalive_idle": 5,
                                  "tcp_user_timeout": 3000}).socket_settings()
    assert (s.keepalive, s.idle_s, s.interval_s, s.count, s.user_timeout_s) == (True, 5.0, None, None, 3.0)
    shown = WebSocketTarget(settings={"ping_interval": False}).describe_settings()
    assert shown["ping_interval"] == "off" and shown["ping_timeout"] == "20.0"
    assert shown["server"] == "reference (websockets)"


def test_pings_off_and_no_keepalive_predict_never() -> None:
    t = WebSocketTarget(settings={"ping_interval": "off"})
    assert t.heartbeat(last_activity_s=-1.0, opened_s=-1.0) == (None, None)
    tcp = predict(effective(t.socket_settings(), KernelDefaults()), activity="idle", peer="silent",
                  last_activity_s=-1.0)
    assert tcp.reclaim_s is None and tcp.mechanism == "none"


def test_the_log_tells_a_heartbeat_from_the_kernel_and_from_a_normal_close() -> None:
    ping = {"sent": {"code": 1011, "reason": "keepalive ping timeout"}, "rcvd": None,
            "cause": "TimeoutError: timed out while closing connection"}
    assert classify_close(ping)[0] == "heartbeat"
    timeout = {"sent": None, "rcvd": None, "cause": "TimeoutError [Errno 110]: Connection timed out"}
    assert classify_close(timeout)[0] == "timeout"
    reset = {"sent": None, "rcvd": None, "cause": "ConnectionResetError [Errno 104]: reset"}
    assert classify_close(reset)[0] == "reset"
    normal = {"sent": {"code": 1000, "reason": ""}, "rcvd": {"code": 1000, "reason": ""}, "cause": None}
    assert classify_close(normal)[0] is None
    assert classify_close({"sent": None, "rcvd": None, "cause": None})[0] == "eof"


# -- the reference server in a lab --------------------------------------------------------------


@pytest.mark.usefixtures("no_leftovers")
def test_sessions_echo_the_server_counts_them_and_alive_fails_under_a_blackhole() -> None:
    target = WebSocketTarget(settings={"ping_interval": "off"})
    with reference_lab(target, 3) as (lab, client, sessions):
        pid = target._proc.pid if target._proc else None
        assert target.open_connections() == 3
        assert all(s.pid is None and s.flow.client_addr == lab.client_addr
                   and s.flow.server_port == 8765 for s in sessions)
        # the server sees each session where the client says it is
        assert [target.server_peer(s) for s in sessions] == [
            (s.flow.client_addr, s.flow.client_port) for s in sessions]
        assert client.run(target.alive(sessions[0])) == (True, "echo")
        blackhole(lab, [sessions[0]])
        started = time.monotonic()
        ok, detail = client.run(target.alive(sessions[0]))
        assert not ok and "no echo within 5 s" in detail
        assert time.monotonic() - started < 6
        assert client.run(target.alive(sessions[1])) == (True, "echo")
        # the control socket is the server's account's alone, in a folder closed to others
        control = target._control
        assert stat.S_IMODE(os.stat(control).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(control)).st_mode) == 0o700
        assert os.stat(control).st_uid == os.stat(f"/proc/{pid}").st_uid
    assert pid is not None and not os.path.exists(f"/proc/{pid}")


@pytest.mark.usefixtures("no_leftovers")
def test_tuned_pings_close_dead_connections_when_predicted_and_the_kernel_keeps_an_orphan() -> None:
    target = WebSocketTarget(settings={"ping_interval": 2, "ping_timeout": 2, "close_timeout": 1})
    with reference_lab(target, 3) as (lab, client, sessions):
        time.sleep(1.0)
        faulted, survivor = sessions[:2], sessions[2]
        table = SocketTable(lab.server_ns)
        lab.on_close("table", table.close)
        t0 = blackhole(lab, faulted)
        predictions = [target.heartbeat(last_activity_s=0.0, opened_s=s.opened_at - t0) for s in faulted]
        assert all(p is not None and p.mechanism == "heartbeat" for p, _ in predictions)
        timelines = [timeline(target.ping_settings(), opened_s=s.opened_at - t0) for s in faulted]
        predicted = [tl.released_s for tl in timelines if tl is not None]   # websockets lets go
        assert len(predicted) == 2

        # the server's own count drops by the two faulted sessions ...
        dropped = first_time(lambda: target.open_connections() == 1, max(predicted) + 2)
        assert dropped is not None
        assert abs(dropped - t0 - max(predicted)) < TOLERANCE_S
        # ... and in the table their sockets have no owner left: FIN_WAIT1 orphans
        now: dict[Key, SockInfo] = table.dump(8765)
        for s in faulted:
            info = now.get(key(s))
            assert info is not None and info.state == "FIN_WAIT1" and info.inode == 0, info
        assert now[key(survivor)].state == "ESTABLISHED" and now[key(survivor)].inode != 0

        errors = target.server_errors()
        for s, when in zip(faulted, predicted, strict=True):
            err = errors[(s.flow.client_addr, s.flow.client_port)]
            assert err.kind == "heartbeat" and "1011 keepalive ping timeout" in err.text
            assert abs(err.at - t0 - when) < TOLERANCE_S, (err.at - t0, when)
        assert (survivor.flow.client_addr, survivor.flow.client_port) not in errors
        assert client.run(target.alive(survivor)) == (True, "echo")   # answered every ping


@pytest.mark.usefixtures("no_leftovers")
def test_a_user_timeout_removes_the_orphan_from_the_table() -> None:
    target = WebSocketTarget(settings={"ping_interval": 2, "ping_timeout": 2, "close_timeout": 1,
                                       "tcp_user_timeout": 3000})
    with reference_lab(target, 1) as (lab, _, sessions):
        time.sleep(1.0)
        table = SocketTable(lab.server_ns)
        lab.on_close("table", table.close)
        rto = table.dump(8765)[key(sessions[0])].rto_s
        t0 = blackhole(lab, sessions)
        opened = sessions[0].opened_at - t0
        pred, _ = target.heartbeat(last_activity_s=0.0, opened_s=opened)
        tl = timeline(target.ping_settings(), opened_s=opened, rto_s=rto)
        assert pred is not None and pred.reclaim_s is not None and tl is not None
        assert tl.released_s < tl.gone_s
        released = first_time(lambda: target.open_connections() == 0, 8)
        gone = first_time(lambda: key(sessions[0]) not in table.dump(8765), 8)
        assert released is not None and gone is not None
        assert abs(released - t0 - tl.released_s) < TOLERANCE_S
        # websockets let go first; the user timeout, counted from the first retransmission
        # (a tail loss probe and an RTO after the ping), then takes the orphan out of the table
        assert abs(gone - t0 - tl.gone_s) < TOLERANCE_S, (gone - t0, tl.gone_s)
        # the reclaim is websockets letting go; the table only loses the orphan later
        assert abs(released - t0 - pred.reclaim_s) < TOLERANCE_S, (released - t0, pred.reclaim_s)
        assert target.server_errors()[(sessions[0].flow.client_addr,
                                       sessions[0].flow.client_port)].kind == "heartbeat"


@pytest.mark.usefixtures("no_leftovers")
def test_pings_off_hold_a_dead_connection() -> None:
    target = WebSocketTarget(settings={"ping_interval": "off"})
    with reference_lab(target, 2) as (lab, _, sessions):
        table = SocketTable(lab.server_ns)
        lab.on_close("table", table.close)
        blackhole(lab, sessions[:1])
        time.sleep(6)
        info = table.dump(8765).get(key(sessions[0]))
        assert info is not None and info.state == "ESTABLISHED" and info.inode != 0
        assert info.unacked == 0 and info.timer == "off"   # the server sends nothing at all
        assert target.open_connections() == 2
        assert target.server_errors() == {}


@pytest.mark.usefixtures("no_leftovers")
def test_tcp_keepalive_switch_reclaims_an_idle_connection_without_pings() -> None:
    target = WebSocketTarget(settings={"ping_interval": "off", "tcp_keepalive": True,
                                       "tcp_keepalive_idle": 1, "tcp_keepalive_interval": 1,
                                       "tcp_keepalive_count": 2})
    with reference_lab(target, 1) as (lab, _, sessions):
        table = SocketTable(lab.server_ns)
        lab.on_close("table", table.close)
        before = table.dump(8765)[key(sessions[0])]
        assert before.timer == "keepalive"          # inherited from the listening socket
        sampled = time.time()
        t0 = blackhole(lab, sessions)
        last = sampled - min(before.last_ack_recv_s, before.last_data_recv_s) - t0
        tcp = predict(effective(target.socket_settings(), KernelDefaults()), activity="idle",
                      peer="silent", last_activity_s=last)
        assert tcp.mechanism == "keepalive" and tcp.reclaim_s is not None
        gone = first_time(lambda: key(sessions[0]) not in table.dump(8765), 8)
        assert gone is not None
        assert abs(gone - t0 - tcp.reclaim_s) < tcp.slack_s + TOLERANCE_S
        assert target.server_errors()[(sessions[0].flow.client_addr,
                                       sessions[0].flow.client_port)].kind == "timeout"
        assert target.open_connections() == 0


@pytest.mark.usefixtures("no_leftovers")
def test_in_flight_leaves_data_unacknowledged_on_the_faulted_sessions_only() -> None:
    target = WebSocketTarget(settings={"ping_interval": "off"}, in_flight=True)
    with reference_lab(target, 2) as (lab, client, sessions):
        table = SocketTable(lab.server_ns)
        lab.on_close("table", table.close)
        blackhole(lab, sessions[:1])
        target.send_in_flight(sessions[:1])
        held = first_time(lambda: table.dump(8765)[key(sessions[0])].unacked > 0, 1)
        assert held is not None
        assert table.dump(8765)[key(sessions[1])].unacked == 0
        assert client.run(target.alive(sessions[1])) == (True, "echo")


@pytest.mark.usefixtures("no_leftovers")
def test_a_server_of_the_users_own_runs_from_its_command_and_is_watched_by_the_table() -> None:
    # the reference server started as if it were the user's: no control socket, no log
    target = WebSocketTarget(command=REFERENCE_AS_COMMAND, port=9100, workdir=str(REPO),
                             settings={"ping_interval": 2, "ping_timeout": 2, "close_timeout": 1})
    with reference_lab(target, 2) as (lab, client, sessions):
        proc = target._proc
        assert proc is not None
        assert all(s.flow.server_port == 9100 for s in sessions)
        assert client.run(target.alive(sessions[1])) == (True, "pong")
        assert target.open_connections() is None and target.server_errors() == {}
        assert target.server_peer(sessions[0]) == (sessions[0].flow.client_addr,
                                                   sessions[0].flow.client_port)
        with pytest.raises(Exception, match="cannot be told to send"):
            target.send_in_flight(sessions)
        time.sleep(1.0)
        table = SocketTable(lab.server_ns)
        lab.on_close("table", table.close)
        t0 = blackhole(lab, sessions[:1])
        tl = timeline(target.ping_settings(), opened_s=sessions[0].opened_at - t0)
        assert tl is not None

        def let_go() -> bool:
            # for a server of the user's own the table is all there is: its socket loses
            # its owner (an orphan) when the server lets go
            info = table.dump(9100).get(key(sessions[0]))
            return info is None or info.inode == 0
        released = first_time(let_go, tl.released_s + 2)
        assert released is not None and abs(released - t0 - tl.released_s) < TOLERANCE_S
        assert client.run(target.alive(sessions[1])) == (True, "pong")
    assert not os.path.exists(f"/proc/{proc.pid}")


@pytest.mark.usefixtures("no_leftovers")
def test_a_command_that_exits_is_reported_with_its_output(tmp_path: Any) -> None:
    from harness.errors import LabError

    target = WebSocketTarget(command="echo 'no such server' >&2; exit 3", port=9101)
    with pytest.raises(LabError, match="no such server"), LocalLab() as lab:
        target.start(lab)


@pytest.mark.usefixtures("no_leftovers")
def test_the_tuned_scenario_through_the_runner() -> None:
    from harness import run as runner

    (loaded,) = runner.prepare([str(REPO / "scenarios" / "websocket-tuned-ping.yaml")])
    entry = dict(runner.run_plain(loaded, runner.new_run_id()).to_json())
    assert entry["verdict"] == "pass", entry["reason"]
    assert entry["prediction"]["mechanism"] == "heartbeat"
    for s in (s for s in entry["sessions"] if s["faulted"]):
        assert s["mechanism"] == "heartbeat" and s["predicted_mechanism"] == "heartbeat"
        assert abs(s["reclaim_s"] - s["predicted_s"]) < TOLERANCE_S + 0.05   # RTO not known ahead
        # websockets let go (and logged why) before TCP_USER_TIMEOUT took the orphan away
        err = next(e for e in s["events"] if e["what"] == "server-error")
        # the server logs its close when it lets go: the moment its socket is held by no one
        assert err["detail"] == "heartbeat" and abs(s["reclaim_s"] - err["t"]) < 0.05
