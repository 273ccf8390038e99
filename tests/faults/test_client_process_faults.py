"""process-pause and slow-reader: their predictions (pure), and the session host that holds
the faulted sessions in a client process of their own (a real fork, a real stop)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from typing import Any

import pytest

from harness.core.assess import SessionFacts
from harness.core.prediction import Effective, KernelDefaults, Prediction, SocketSettings, effective
from harness.core.timeline import Event, outcome
from harness.core.websocket import PingSettings, predict_heartbeat_answered
from harness.faults import ProcessPause, SlowReader, build
from harness.faults.base import Flow
from harness.faults.slow_reader import FILL_S
from harness.registry import FAULT_TYPES
from harness.run.session_host import SessionHost, _state
from harness.scenario.model import Fault
from harness.targets.base import Session

FACTS = SessionFacts(id=0, faulted=True, opened_s=-1.0, last_activity_s=-1.0, rto_s=0.204)


def eff(user_timeout: float | None = None) -> Effective:
    return effective(SocketSettings(keepalive=True, idle_s=1, interval_s=1, count=2,
                                    user_timeout_s=user_timeout), KernelDefaults())


def no_heartbeat(last: float, opened: float) -> tuple[Prediction | None, float | None]:
    return None, None


def heartbeat(gives_up: float | None, first_send: float = 1.0):  # type: ignore[no-untyped-def]
    def beat(last: float, opened: float) -> tuple[Prediction | None, float | None]:
        return Prediction(gives_up, "heartbeat" if gives_up else "none", "the heartbeat's rule"), first_send
    return beat


def test_both_are_packet_faults_built_from_the_scenario() -> None:
    for name, cls in (("process-pause", ProcessPause), ("slow-reader", SlowReader)):
        assert FAULT_TYPES[name].layer == "packet"
        fault = build(Fault(type=name))
        assert isinstance(fault, cls) and fault.holds_sessions and fault.kernel_answers


@pytest.mark.parametrize("user_timeout", [None, 2.0])
def test_a_paused_client_without_heartbeat_is_held_whatever_the_kernel_timers(user_timeout: float | None) -> None:
    p = ProcessPause().predict(eff(user_timeout), FACTS, no_heartbeat)
    assert p.reclaim_s is None and p.mechanism == "none"
    assert "acknowledges every keepalive probe" in p.formula and "no heartbeat" in p.formula


def test_a_paused_client_is_reclaimed_by_the_heartbeat_alone() -> None:
    p = ProcessPause().predict(eff(), FACTS, heartbeat(4.0))
    assert (p.reclaim_s, p.mechanism) == (4.0, "heartbeat")
    # keepalive (idle 1 s, 2 probes: 3 s after the last activity) would be earlier, but it
    # is answered: the heartbeat decides
    assert "the heartbeat's rule" in p.formula
    held = ProcessPause().predict(eff(), FACTS, heartbeat(None))
    assert held.reclaim_s is None and "heartbeat's rule" in held.formula


def test_slow_reader_without_user_timeout_is_held() -> None:
    p = SlowReader().predict(eff(), FACTS, no_heartbeat)
    assert p.reclaim_s is None and "zero-window probe" in p.formula and "RFC 1122" in p.formula


def test_slow_reader_with_user_timeout_counts_from_the_first_zero_window_probe() -> None:
    def facts(*events: Event) -> SessionFacts:
        return SessionFacts(id=0, faulted=True, opened_s=-1.0, last_activity_s=-1.0, rto_s=0.204,
                            events=events)
    armed = Event(0.1, "zero-window", "persist timer armed")
    p = SlowReader().predict(eff(2.0), facts(armed), no_heartbeat)
    assert p.mechanism == "user-timeout" and p.reclaim_s == pytest.approx(0.1 + 0.204 + 2.0)
    assert "window closed at 0.1 s" in p.formula
    # the first run found the window open a little: the stamping probe came one RTO later
    late = SlowReader().predict(eff(2.0), facts(armed, Event(0.512, "zero-window-probe", "backoff 1")),
                                no_heartbeat)
    assert late.reclaim_s == pytest.approx(2.512) and "first zero-window probe at 0.512 s (seen)" in late.formula
    unseen = SlowReader().predict(eff(2.0), FACTS, no_heartbeat)
    assert unseen.reclaim_s == pytest.approx(0.204 + 2.0) and unseen.slack_s >= FILL_S


def test_slow_reader_heartbeat_first_decides() -> None:
    p = SlowReader().predict(eff(5.0), FACTS, heartbeat(3.0))
    assert (p.reclaim_s, p.mechanism) == (3.0, "heartbeat")


def test_websocket_heartbeat_against_a_kernel_that_answers() -> None:
    p, first = predict_heartbeat_answered(PingSettings(2, 2, 1), opened_s=-1.0)
    assert p is not None and first is not None
    assert p.mechanism == "heartbeat" and p.reclaim_s == pytest.approx(first + 2 + 1)
    assert first == pytest.approx(1.0017)
    off, _ = predict_heartbeat_answered(PingSettings(2, None, 1), opened_s=-1.0)
    assert off is not None and off.reclaim_s is None and "ping_timeout is off" in off.formula
    forever, _ = predict_heartbeat_answered(PingSettings(2, 2, None), opened_s=-1.0)
    assert forever is not None and forever.reclaim_s is None and "close_timeout is off" in forever.formula
    assert predict_heartbeat_answered(PingSettings(None, 2, 1), opened_s=-1.0) == (None, None)


def test_zero_window_probes_are_not_keepalive() -> None:
    events = [Event(0.3, "probe", "1"), Event(2.3, "socket-gone"), Event(2.31, "process-exit")]
    assert outcome(events, needs_process=True).mechanism == "keepalive"
    assert outcome(events, needs_process=True, user_timeout_set=True, zero_window=True).mechanism == "user-timeout"
    logged = [Event(2.3, "server-error", "timeout"), Event(2.3, "socket-gone")]
    assert outcome(logged, needs_process=False, user_timeout_set=True, zero_window=True).mechanism == "user-timeout"


# -- the session host: a real fork and a real SIGSTOP, on loopback ------------------------------

class LoopbackTarget:
    """Opens plain TCP connections; ``request_stream`` sends a line the peer can see."""

    async def open_session(self, lab: Any, index: int, via: tuple[str, int] | None = None) -> Session:
        assert via is not None
        reader, writer = await asyncio.open_connection(*via)
        addr, port = writer.get_extra_info("sockname")[:2]
        self.handle = (reader, writer)
        return Session(id=index, flow=Flow(addr, port, *via), pid=os.getpid(), handle=self.handle,
                       opened_at=time.time())

    async def request_stream(self, session: Session) -> None:
        session.handle[1].write(b"stream please\n")
        await session.handle[1].drain()


def test_the_session_host_holds_sessions_in_a_process_that_stops_while_its_kernel_answers() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    host = SessionHost(namespace=None)
    try:
        (session,) = host.open(LoopbackTarget(), None, [3], lambda i: ("127.0.0.1", port))
        server, _ = listener.accept()
        assert session.id == 3 and session.handle is None and session.pid == host.pid != os.getpid()
        assert server.getpeername() == (session.flow.client_addr, session.flow.client_port)
        host.request_stream()
        server.settimeout(5)
        assert server.recv(100) == b"stream please\n"
        host.pause()
        assert host.pid is not None and _state(host.pid) in ("T", "t")
        # the stopped client's kernel still takes (and ACKs) what the server sends
        server.sendall(b"x" * 10000)
        host.resume()
        assert _state(host.pid) not in ("T", "t", "")
        host.pause()
        pid = host.pid
    finally:
        host.close()
        listener.close()
    assert _state(pid) == ""          # continued, killed and reaped
    server.settimeout(5)
    # its socket closed with it (a reset if data was left unread)
    with contextlib.suppress(ConnectionResetError):
        assert server.recv(100) == b""
    server.close()
