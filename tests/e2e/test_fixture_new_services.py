"""Issue 13's services through the pytest fixture (``connchaos_lab``), as a user's Python-written
scenario has them: Mosquitto, Redis and the grpcio reference server, each blackholed and
reclaimed within 0.3 s of its prediction by its own mechanism, survivors answering; and a paused
gRPC client, whose kernel still acknowledges: only the HTTP/2 PING's own timeout reclaims it."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_leftovers")]   # a lab run each, 5-10 s

AGREE_S = 0.3

CASES = {
    "mqtt": ({"keepalive": 1}, "blackhole", "heartbeat"),
    "redis": ({"tcp-keepalive": 2, "timeout": 0}, "blackhole", "keepalive"),
    "grpc": ({"grpc.keepalive_time_ms": 1000, "grpc.keepalive_timeout_ms": 1000}, "blackhole",
             "user-timeout"),
    "grpc-paused": ({"grpc.keepalive_time_ms": 1000, "grpc.http2.ping_timeout_ms": 1500},
                    "process-pause", "heartbeat"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_new_service_through_the_fixture(connchaos_lab: Any, case: str) -> None:
    settings, fault, mechanism = CASES[case]
    result = connchaos_lab.run(
        service=case.split("-")[0], sessions=3, faulted=2, fault=fault, hold="1s", settings=settings,
        expect={"reclaimed_within": "9s", "mechanism": mechanism}, deadline="10s")
    assert result.verdict == "pass", result.record.reason
    for s in result.faulted:
        assert s.reclaimed and s.mechanism == mechanism, s
        assert abs(s.reclaim_s - s.predicted_s) <= AGREE_S, s
    assert result.survivors and all(s.alive_at_end for s in result.survivors)
