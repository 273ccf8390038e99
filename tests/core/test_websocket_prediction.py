"""websockets' keepalive in numbers: the schedule, giving up, closing, and where the kernel
takes over (the measured behaviour is in harness/core/websocket.py's docstring)."""

from __future__ import annotations

import pytest

from harness.core.prediction import KernelDefaults, Prediction, combine
from harness.core.websocket import (
    LONE_SEGMENT_PROBE_S,
    PERIOD_LATENESS_S,
    PingSettings,
    first_ping_after,
    predict_heartbeat,
    timeline,
)

D = PERIOD_LATENESS_S


def heartbeat(opened_s: float = -1.0, **kwargs: float | None) -> tuple[Prediction | None, float | None]:
    return predict_heartbeat(PingSettings(**kwargs), opened_s=opened_s)  # type: ignore[arg-type]


# --- the schedule ------------------------------------------------------------------------------


def test_pings_run_on_the_connections_clock_one_period_after_it_opened() -> None:
    assert first_ping_after(-1.0, 2.0) == (1, pytest.approx(1.0 + D))
    assert first_ping_after(-5.0, 2.0) == (3, pytest.approx(1.0 + 3 * D))
    # opened after the "after" moment: the first ping is still one period after the open
    assert first_ping_after(3.0, 2.0) == (1, pytest.approx(5.0 + D))


def test_the_first_ping_after_the_fault_is_strictly_after_it() -> None:
    period = 2.0 + D
    k, at = first_ping_after(-2 * period, 2.0)      # a ping exactly at the fault
    assert k == 3 and at == pytest.approx(period)


def test_periods_run_long_so_an_old_connection_drifts_behind_the_nominal_schedule() -> None:
    # 30 periods of 1 s were 56 ms behind on the development machine (1.4-2.0 ms a period)
    k, at = first_ping_after(-29.5, 1.0)
    assert k == 30
    assert 0.04 < at - (-29.5 + 30) < 0.07


def test_first_ping_refuses_a_non_positive_interval() -> None:
    with pytest.raises(ValueError, match="interval"):
        first_ping_after(0.0, 0.0)


# --- giving up and closing -------------------------------------------------------------------


def test_tuned_pings_let_go_at_ping_plus_timeout_plus_close_timeout() -> None:
    settings = PingSettings(interval_s=2, timeout_s=2, close_timeout_s=1)
    tl = timeline(settings, opened_s=-1.0)
    assert tl is not None
    assert tl.ping_s == pytest.approx(1.0 + D)
    assert tl.give_up_s == pytest.approx(3.0 + D)
    assert tl.close_s == tl.released_s == pytest.approx(4.0 + D)
    pred, first = predict_heartbeat(settings, opened_s=-1.0)
    assert pred is not None and first == tl.ping_s
    assert pred.mechanism == "heartbeat"
    assert "ping_timeout 2 s" in pred.formula and "close_timeout 1 s" in pred.formula
    assert "lets go" in pred.formula and "4.002 s" in pred.formula


def test_the_socket_outlives_websockets_as_an_orphan_for_the_orphan_retries() -> None:
    # measured: opened at -1.007 s, 2/2/2: the server let go at 5.004 s, the socket left the
    # table at 108.497 s (RTO 0.204 s)
    pred, _ = predict_heartbeat(PingSettings(2, 2, 2), opened_s=-1.007, rto_s=0.204)
    assert pred is not None and pred.reclaim_s is not None
    assert pred.mechanism == "heartbeat"
    assert "orphan" in pred.formula and "tcp_orphan_retries (8)" in pred.formula
    assert "102.2 s" in pred.formula
    # the reclaim is websockets letting go; the orphan's ~105 s in the table is the kernel's
    tl = timeline(PingSettings(2, 2, 2), opened_s=-1.007, rto_s=0.204)
    assert tl is not None and abs(tl.gone_s - 108.497) < pred.slack_s
    assert pred.reclaim_s == pytest.approx(tl.released_s)
    assert abs(pred.reclaim_s - 5.004) < 0.015       # measured: the server let go at 5.004 s


def test_measured_closes_from_the_lab_fall_within_a_few_milliseconds() -> None:
    # (interval, timeout, close timeout, opened) -> when the server's count dropped (lab)
    for i, t, c, opened, measured in ((2, 2, 2, -1.007, 5.004), (1, 3, 1, -1.506, 4.497),
                                      (20, 20, 10, -1.010, 48.991)):
        tl = timeline(PingSettings(i, t, c), opened_s=opened)
        assert tl is not None
        assert abs(tl.released_s - measured) < 0.015, (i, t, c, tl.released_s)


def test_a_timeout_longer_than_the_interval_waits_for_its_own_pong_only() -> None:
    tl = timeline(PingSettings(interval_s=1, timeout_s=3, close_timeout_s=1), opened_s=-1.5)
    assert tl is not None and tl.ping_s == pytest.approx(0.5 + 2 * D)
    assert tl.released_s == pytest.approx(4.5 + 2 * D)


def test_websockets_defaults_let_go_30_to_50_s_after_the_fault_by_its_phase() -> None:
    defaults = PingSettings()
    assert (defaults.interval_s, defaults.timeout_s, defaults.close_timeout_s) == (20, 20, 10)
    released = []
    for opened in (-0.001, -1.0, -10.0, -19.99, -100.0):
        tl = timeline(defaults, opened_s=opened)
        pred, _ = predict_heartbeat(defaults, opened_s=opened)
        assert tl is not None and pred is not None and pred.reclaim_s is not None
        # the orphan's retransmissions count from the ping's: ~100 s after it, 70 s after the close
        assert pred.mechanism == "heartbeat" and pred.reclaim_s == pytest.approx(tl.released_s)
        assert tl.gone_s > tl.released_s + 70       # the orphan the kernel keeps afterwards
        released.append(tl.released_s)
    assert all(30.0 <= t <= 50.01 for t in released)
    assert max(released) - min(released) > 19     # the phase decides: up to a whole interval apart


def test_pings_off_predict_nothing() -> None:
    assert heartbeat(interval_s=None) == (None, None)
    assert timeline(PingSettings(interval_s=None), opened_s=-1.0) is None


# --- where the kernel takes over -------------------------------------------------------------


def test_no_pong_timeout_leaves_the_unanswered_ping_to_the_retransmission_timeout() -> None:
    pred, first = heartbeat(-1.0, interval_s=2, timeout_s=None, close_timeout_s=1)
    assert pred is not None and first is not None and pred.reclaim_s is not None
    assert pred.mechanism == "retransmission"
    assert pred.reclaim_s > first + 920      # tcp_retries2 15: about 925 s of retransmissions
    assert "ping_timeout is off" in pred.formula and "tcp_retries2 15" in pred.formula


def test_close_timeout_off_waits_for_the_dead_client_until_the_kernel_gives_up() -> None:
    pred, _ = heartbeat(-1.0, interval_s=2, timeout_s=2, close_timeout_s=None)
    assert pred is not None and pred.reclaim_s is not None
    # the heartbeat gave up (its close frame names it), the kernel ends the wait
    assert pred.mechanism == "heartbeat" and pred.reclaim_s > 900
    assert "close_timeout is off" in pred.formula


def test_a_user_timeout_shorter_than_the_close_wait_ends_the_connection_first() -> None:
    # measured: first counted retransmission 0.42 s after the ping (a tail loss probe, then
    # one RTO of 0.204 s), gone 3.00 s later
    settings = PingSettings(2, 2, 2, user_timeout_s=3.0)
    pred, first = predict_heartbeat(settings, opened_s=-1.0, rto_s=0.204)
    tl = timeline(settings, opened_s=-1.0, rto_s=0.204)
    assert pred is not None and first is not None and tl is not None
    assert pred.reclaim_s == tl.released_s == pytest.approx(first + 0.404 + 3.0)
    assert pred.mechanism == "heartbeat"     # the heartbeat gave up first; the kernel cut the close
    assert "before close_timeout" in pred.formula


def test_a_user_timeout_shorter_than_the_pong_wait_is_the_kernels_reclaim() -> None:
    pred, first = heartbeat(-1.0, interval_s=2, timeout_s=10, close_timeout_s=1, user_timeout_s=1.0)
    assert pred is not None and first is not None
    assert pred.mechanism == "user-timeout"
    assert pred.reclaim_s == pytest.approx(first + LONE_SEGMENT_PROBE_S + 0.2 + 1.0)


def test_a_user_timeout_longer_than_the_close_bounds_the_orphans_life() -> None:
    settings = PingSettings(2, 2, 1, user_timeout_s=3.0)
    pred, first = predict_heartbeat(settings, opened_s=-1.0)
    tl = timeline(settings, opened_s=-1.0)
    assert pred is not None and first is not None and tl is not None
    assert tl.released_s == pytest.approx(first + 3.0)                 # websockets lets go
    assert tl.gone_s == pytest.approx(first + 0.4 + 3.0)              # the kernel's table
    assert pred.reclaim_s == pytest.approx(tl.released_s)              # the reclaim
    assert pred.mechanism == "heartbeat"
    assert "TCP_USER_TIMEOUT 3 s after the first retransmission" in pred.formula


def test_in_flight_data_starts_the_kernels_clock_before_the_ping() -> None:
    settings = PingSettings(2, timeout_s=None, close_timeout_s=1)
    idle = timeline(settings, opened_s=-1.0)
    busy = timeline(settings, opened_s=-1.0, in_flight_since_s=0.0)
    assert idle is not None and busy is not None
    assert idle.ping_s == busy.ping_s
    assert idle.held.reclaim_s is not None and busy.held.reclaim_s is not None
    assert busy.held.reclaim_s == pytest.approx(
        idle.held.reclaim_s - idle.ping_s - LONE_SEGMENT_PROBE_S)
    assert busy.first_retransmission_s == pytest.approx(0.2)


def test_the_kernel_defaults_come_in_from_outside() -> None:
    short = KernelDefaults(tcp_retries2=3)
    pred, _ = predict_heartbeat(PingSettings(2, None, 1), opened_s=-1.0, kernel=short)
    assert pred is not None and pred.reclaim_s is not None and pred.reclaim_s < 10


def test_settings_refuse_values_websockets_would_misread() -> None:
    with pytest.raises(ValueError, match="interval"):
        PingSettings(interval_s=0)
    with pytest.raises(ValueError, match="timeout_s"):
        PingSettings(timeout_s=-1)
    with pytest.raises(ValueError, match="close_timeout"):
        PingSettings(close_timeout_s=-1)


# --- with TCP keepalive (combine, in harness.core.prediction) --------------------------------


def test_tcp_keepalive_decides_only_when_it_fires_before_the_first_unanswered_ping() -> None:
    ping, first = heartbeat(-1.0, interval_s=20, timeout_s=20, close_timeout_s=10)
    assert ping is not None and first is not None
    early = Prediction(reclaim_s=3.0, mechanism="keepalive", formula="k")
    late = Prediction(reclaim_s=30.0, mechanism="keepalive", formula="k")
    assert combine(early, ping, app_first_send_s=first) is early
    # at 30 s keepalive would be blinded by the ping in flight since 19 s
    assert combine(late, ping, app_first_send_s=first) is ping
