"""The grpc target with the real grpcio reference server in a lab: streams held, the keepalive
ping and what ends a blackholed stream measured against ``harness.core.grpc``, the server's
log, and bad channel arguments refused by the server itself."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from harness.faults import PacketFault
from harness.faults import build as build_spec
from harness.faults.site import Site
from harness.lab.local import LocalLab
from harness.lab.netns import LoopInNamespace
from harness.observe.sockdiag import SocketTable
from harness.scenario.model import Fault
from harness.targets.base import Session
from harness.targets.grpc import GrpcTarget
from harness.testing import REPO

TOLERANCE_S = 0.15
FAST = {"grpc.keepalive_time_ms": 1000, "grpc.keepalive_timeout_ms": 1000}


@contextmanager
def grpc_lab(target: GrpcTarget, count: int) -> Iterator[tuple[LocalLab, LoopInNamespace, list[Session]]]:
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


def gone_at(table: SocketTable, port: int, s: Session, timeout_s: float) -> float | None:
    """time.time() when the session's server socket leaves the table or loses its descriptor."""
    key = (s.flow.server_addr, s.flow.server_port, s.flow.client_addr, s.flow.client_port)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = table.dump(port).get(key)
        if info is None or info.inode == 0:
            return time.time()
        time.sleep(0.01)
    return None


def test_the_server_refuses_an_unknown_channel_argument_with_exit_2() -> None:
    done = subprocess.run([sys.executable, "-m", "harness.targets.grpc_reference", "--host", "127.0.0.1",
                           "--port", "1", "--arg", "grpc.keepalive_timout_ms=1000"],
                          cwd=REPO, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "grpc.keepalive_timout_ms" in done.stderr and "not a channel argument" in done.stderr


@pytest.mark.usefixtures("no_leftovers")
def test_streams_are_held_one_connection_each_and_seen_by_the_server() -> None:
    target = GrpcTarget(settings=dict(FAST))
    with grpc_lab(target, 3) as (lab, client, sessions):
        assert target.open_streams() == 3
        assert len({(s.flow.client_addr, s.flow.client_port) for s in sessions}) == 3
        for s in sessions:
            # the server's view of the client is the client's own end (no proxy)
            assert target.server_peer(s) == (s.flow.client_addr, s.flow.client_port)
            assert client.run(target.alive(s)) == (True, "echo")
        keys = SocketTable(lab.server_ns).dump(target.port)
        assert all((s.flow.server_addr, s.flow.server_port, s.flow.client_addr, s.flow.client_port) in keys
                   for s in sessions)


@pytest.mark.usefixtures("no_leftovers")
def test_a_blackholed_stream_goes_by_tcp_user_timeout_after_the_ping_as_predicted() -> None:
    target = GrpcTarget(settings=dict(FAST))
    with grpc_lab(target, 2) as (lab, client, sessions):
        table = SocketTable(lab.server_ns)
        lab.on_close("table", table.close)
        dead, live = sessions
        time.sleep(0.5)
        key = (dead.flow.server_addr, dead.flow.server_port, dead.flow.client_addr, dead.flow.client_port)
        sampled = time.time()
        info = table.dump(target.port)[key]
        fault = build_spec(Fault.model_validate({"type": "blackhole"}))
        assert isinstance(fault, PacketFault)
        fault.apply(Site(lab, [dead.flow]))
        lab.on_close("fault", fault.revert)
        t0 = time.time()
        last = sampled - min(info.last_ack_recv_s, info.last_data_recv_s) - t0
        pred, ping = target.heartbeat(last_activity_s=last, opened_s=dead.opened_at - t0)
        assert pred is not None and pred.mechanism == "user-timeout" and pred.reclaim_s is not None
        at = gone_at(table, target.port, dead, 6.0)
        assert at is not None, "the blackholed stream was never reclaimed"
        assert abs((at - t0) - pred.reclaim_s) <= TOLERANCE_S, (at - t0, pred)
        assert client.run(target.alive(live)) == (True, "echo")
        # the server's own line: its last ping had waited about 1.4 s, less than the ping timeout
        errors = target.server_errors()
        err = errors[(dead.flow.client_addr, dead.flow.client_port)]
        assert err.kind == "timeout" and "TCP_USER_TIMEOUT" in err.text
        assert abs((err.at - t0) - pred.reclaim_s) <= TOLERANCE_S


@pytest.mark.usefixtures("no_leftovers")
def test_defaults_hold_a_blackholed_stream() -> None:
    target = GrpcTarget(settings={})
    with grpc_lab(target, 1) as (lab, client, sessions):
        table = SocketTable(lab.server_ns)
        lab.on_close("table", table.close)
        fault = build_spec(Fault.model_validate({"type": "blackhole"}))
        assert isinstance(fault, PacketFault)
        fault.apply(Site(lab, [sessions[0].flow]))
        lab.on_close("fault", fault.revert)
        assert gone_at(table, target.port, sessions[0], 3.0) is None
        assert target.open_streams() == 1


@pytest.mark.usefixtures("no_leftovers")
def test_the_log_has_a_line_per_stream_opened_and_closed() -> None:
    target = GrpcTarget(settings=dict(FAST))
    with grpc_lab(target, 1) as (lab, client, sessions):
        client.run(target.close_session(sessions[0]))
        deadline = time.monotonic() + 5
        while target.open_streams() != 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert target.open_streams() == 0
        with open(target._log) as f:
            events = [json.loads(line)["event"] for line in f]
        assert events == ["open", "closed"]
        # the client cancelled: not an error of the server's
        assert target.server_errors() == {}
