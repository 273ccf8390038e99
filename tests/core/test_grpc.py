"""grpcio's keepalive in numbers: the ping schedule, the ping timeout, and TCP_USER_TIMEOUT
(the measured behaviour is in harness/core/grpc.py's docstring)."""

from __future__ import annotations

import pytest

from harness.core.grpc import (
    CLOSE_LATENESS_S,
    ERROR_LATENESS_S,
    GRPC_DEFAULT_PING_TIMEOUT_S,
    INT_MAX_MS,
    LONE_SEGMENT_PROBE_S,
    PERIOD_LATENESS_S,
    KeepaliveSettings,
    first_ping_after,
    predict_heartbeat,
)
from harness.core.prediction import KernelDefaults, Prediction, combine, effective, predict
from harness.targets.grpc import GrpcTarget, classify_close
from harness.targets.grpc_reference import check_arg, core_event, parse_args, peer_address

D = PERIOD_LATENESS_S
RTO = KernelDefaults().rto_min_s


def settings(**args: int) -> KeepaliveSettings:
    return KeepaliveSettings.from_args(dict(args))


def test_the_ping_goes_keepalive_time_after_the_last_read() -> None:
    assert first_ping_after(-0.3, 1.0) == (1, pytest.approx(0.7 + D))
    # a read long ago (pings were answered since, unseen): the schedule runs on from it
    assert first_ping_after(-2.5, 1.0) == (3, pytest.approx(0.5 + 3 * D))
    with pytest.raises(ValueError):
        first_ping_after(0.0, 0.0)


def test_defaults_are_grpc_cores() -> None:
    ka = settings()
    assert ka.time_s == 7200 and ka.timeout_s == 20 and ka.ping_timeout_s == GRPC_DEFAULT_PING_TIMEOUT_S
    # a server sets TCP_USER_TIMEOUT 20 s on its sockets even without keepalive settings
    assert ka.user_timeout_s == 20
    assert ka.socket_settings().keepalive is False


def test_keepalive_timeout_becomes_tcp_user_timeout() -> None:
    assert settings(**{"grpc.keepalive_time_ms": 1000, "grpc.keepalive_timeout_ms": 1500}).user_timeout_s == 1.5
    # 0 is "not set": grpc keeps its 20 s
    assert settings(**{"grpc.keepalive_time_ms": 1000, "grpc.keepalive_timeout_ms": 0}).user_timeout_s == 20
    # keepalive time INT_MAX is grpc's infinite: no pings, and no TCP_USER_TIMEOUT either
    off = settings(**{"grpc.keepalive_time_ms": INT_MAX_MS})
    assert off.time_s is None and off.user_timeout_s is None


def test_blackholed_stream_is_ended_by_the_kernel_after_the_ping() -> None:
    ka = settings(**{"grpc.keepalive_time_ms": 1000, "grpc.keepalive_timeout_ms": 1000})
    pred, ping = predict_heartbeat(ka, last_read_s=-0.4)
    assert ping == pytest.approx(0.6 + D)
    assert pred is not None and pred.mechanism == "user-timeout"
    # the ping's tail loss probe, one RTO to the first retransmission, then 1 s
    assert pred.reclaim_s == pytest.approx(0.6 + D + LONE_SEGMENT_PROBE_S + RTO + 1.0 + ERROR_LATENESS_S)
    assert "TCP_USER_TIMEOUT 1 s" in pred.formula and "ping timeout 60 s" in pred.formula


def test_a_short_ping_timeout_wins_over_the_kernel() -> None:
    ka = settings(**{"grpc.keepalive_time_ms": 1000, "grpc.keepalive_timeout_ms": 5000,
                     "grpc.http2.ping_timeout_ms": 1500})
    pred, ping = predict_heartbeat(ka, last_read_s=-0.5)
    assert pred is not None and ping is not None
    assert pred.mechanism == "heartbeat" and pred.reclaim_s == pytest.approx(ping + 1.5 + CLOSE_LATENESS_S)


def test_behind_a_peer_that_still_acks_only_the_ping_timeout_can_tell() -> None:
    # a stalled proxy's kernel acknowledges the ping: no retransmission, no TCP_USER_TIMEOUT
    ka = settings(**{"grpc.keepalive_time_ms": 1000, "grpc.keepalive_timeout_ms": 1000,
                     "grpc.http2.ping_timeout_ms": 1500})
    pred, ping = predict_heartbeat(ka, last_read_s=-0.5, peer_kernel_answers=True)
    assert pred is not None and ping is not None and pred.mechanism == "heartbeat"
    assert pred.reclaim_s == pytest.approx(ping + 1.5 + CLOSE_LATENESS_S)
    assert "never fires" in pred.formula


def test_keepalive_timeout_alone_does_not_bound_the_ack_wait() -> None:
    # without TCP_USER_TIMEOUT (keepalive off) nothing but the ping timeout could; with it on,
    # a 60 s ping timeout never decides before a 20 s user timeout
    ka = settings(**{"grpc.keepalive_time_ms": 1000})
    pred, ping = predict_heartbeat(ka, last_read_s=-0.5)
    assert pred is not None and ping is not None
    assert pred.mechanism == "user-timeout"
    assert pred.reclaim_s == pytest.approx(ping + LONE_SEGMENT_PROBE_S + RTO + 20.0 + ERROR_LATENESS_S)


def test_defaults_hold_a_dead_stream_for_two_hours() -> None:
    pred, ping = predict_heartbeat(settings(), last_read_s=-1.0)
    assert ping == pytest.approx(7199.0 + D)
    assert pred is not None and pred.reclaim_s is not None and pred.reclaim_s > 7200


def test_keepalive_off_has_no_heartbeat_and_an_idle_socket_is_held() -> None:
    ka = settings(**{"grpc.keepalive_time_ms": INT_MAX_MS})
    assert predict_heartbeat(ka, last_read_s=-1.0) == (None, None)
    tcp = predict(effective(ka.socket_settings(), KernelDefaults()), activity="idle", peer="silent")
    assert tcp.reclaim_s is None


def test_data_in_flight_starts_the_kernels_clock_before_the_ping() -> None:
    ka = settings(**{"grpc.keepalive_time_ms": 1000, "grpc.keepalive_timeout_ms": 1000})
    pred, _ = predict_heartbeat(ka, last_read_s=-0.1, in_flight_since_s=0.0)
    assert pred is not None and pred.reclaim_s == pytest.approx(0.0 + RTO + 1.0 + ERROR_LATENESS_S)


def test_the_heartbeat_is_taken_over_a_never_firing_kernel() -> None:
    ka = settings(**{"grpc.keepalive_time_ms": 1000, "grpc.keepalive_timeout_ms": 1000})
    app, first = predict_heartbeat(ka, last_read_s=-0.5)
    tcp = Prediction(reclaim_s=None, mechanism="none", formula="never")
    assert combine(tcp, app, app_first_send_s=first) is app


@pytest.mark.parametrize(("name", "value", "ok"), [
    ("grpc.keepalive_time_ms", 1000, True),
    ("grpc.keepalive_time_ms", 0, False),
    ("grpc.keepalive_time_ms", "1s", False),
    ("grpc.keepalive_time_ms", True, False),
    ("grpc.keepalive_timeout_ms", 0, True),
    ("grpc.keepalive_permit_without_calls", True, True),
    ("grpc.keepalive_permit_without_calls", 2, False),
    ("grpc.http2.max_pings_without_data", 0, True),
    ("grpc.http2.min_ping_interval_without_data_ms", 500, True),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 500, False),
    ("grpc.max_connection_age_ms", 2000, True),
    ("grpc.keepalive_time", 1000, False),
])
def test_channel_arguments_are_checked_by_name_and_type(name: str, value: object, ok: bool) -> None:
    assert (check_arg(name, value) is None) is ok


def test_target_suggests_the_name_meant() -> None:
    problems = GrpcTarget.check_settings({"grpc.keepalive_timout_ms": 1000, "grpc.keepalive_time_ms": 1000})
    assert [p[0] for p in problems] == ["grpc.keepalive_timout_ms"]
    assert "did you mean grpc.keepalive_timeout_ms" in problems[0][1]
    assert "the C macro" in GrpcTarget.check_settings(
        {"grpc.http2.min_recv_ping_interval_without_data_ms": 1})[0][1]


def test_the_reference_server_refuses_a_bad_argument(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse_args(["--host", "h", "--port", "1", "--arg", "grpc.keepalive_time_ms=1000",
                       "--arg", "grpc.keepalive_permit_without_calls=true"])
    assert args.arg == [("grpc.keepalive_time_ms", 1000), ("grpc.keepalive_permit_without_calls", 1)]
    with pytest.raises(SystemExit) as exc:
        parse_args(["--host", "h", "--port", "1", "--arg", "grpc.nope_ms=1"])
    assert exc.value.code == 2
    assert "grpc.nope_ms" in capsys.readouterr().err


def test_core_trace_lines_are_read_for_pings_and_acks() -> None:
    sent = ("I1203 17:33:05.864431   29984 writing.cc:144] SERVER[0x7f4754001b70]: Ping 3214790234221895452"
            " sent [ipv4:10.77.0.2:53052]: max_pings_without_data: 0, pings_before_data_required: 0")
    acked = "I1203 17:33:06.871592   29984 chttp2_transport.cc:3379] ipv4:10.77.0.2:53052: Finish keepalive ping"
    assert core_event(sent) == ("ping", "10.77.0.2:53052")
    assert core_event(acked) == ("ack", "10.77.0.2:53052")
    assert core_event("I1203 ... Keepalive ping cancelled. Resetting timer.") is None
    assert peer_address("ipv6:[::1]:5") == "[::1]:5"


def test_a_close_is_classified_by_how_long_its_ping_waited() -> None:
    assert classify_close({"unanswered_ping_s": 1.502}, 1.5, 1.0)[0] == "heartbeat"
    assert classify_close({"unanswered_ping_s": 1.42}, 60.0, 1.0)[0] == "timeout"
    # a ping just sent when the client cancelled explains nothing
    assert classify_close({"unanswered_ping_s": 0.009}, 60.0, 1.0)[0] is None
    assert classify_close({"unanswered_ping_s": None}, 60.0, 1.0)[0] is None


def test_target_describes_and_predicts_from_its_settings() -> None:
    t = GrpcTarget(settings={"grpc.keepalive_time_ms": 1000, "grpc.keepalive_timeout_ms": 1000})
    shown = t.describe_settings()
    assert shown["keepalive_time"] == "1 s" and shown["tcp_user_timeout"] == "1 s"
    assert t.socket_settings().user_timeout_s == 1.0
    pred, _ = t.heartbeat(last_activity_s=-0.5, opened_s=-1.0)
    assert pred is not None and pred.reclaim_s == pytest.approx(0.5 + D + LONE_SEGMENT_PROBE_S + RTO + 1.0 + ERROR_LATENESS_S)
