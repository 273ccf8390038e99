"""Redis's reclaim arithmetic (harness.core.redis): keepalive options, the idle timeout's
whole seconds and clientsCron's visits, against plain values and the measured cases."""

from __future__ import annotations

import pytest

from harness.core.prediction import KernelDefaults, effective, predict
from harness.core.redis import (
    RedisSettings,
    effective_hz,
    idle_close,
    keepalive_options,
    socket_settings,
    visit_period_s,
)


def test_tcp_keepalive_n_is_idle_n_interval_n_over_3_at_least_1_count_3() -> None:
    assert keepalive_options(3) == (3, 1, 3)
    assert keepalive_options(2) == (2, 1, 3)       # 2 // 3 = 0, raised to 1
    assert keepalive_options(10) == (10, 3, 3)     # integer division
    assert keepalive_options(300) == (300, 100, 3)  # Redis's default
    assert keepalive_options(0) is None


def test_socket_settings_and_the_kernel_prediction_of_keepalive() -> None:
    s = socket_settings(RedisSettings.of({"tcp-keepalive": 3}))
    assert (s.keepalive, s.idle_s, s.interval_s, s.count) == (True, 3.0, 1.0, 3)
    pred = predict(effective(s, KernelDefaults()), activity="idle", peer="silent", last_activity_s=-1.0)
    assert pred.reclaim_s == pytest.approx(-1.0 + 3 + 3 * 1)
    assert socket_settings(RedisSettings.of({"TCP-KEEPALIVE": "0"})).keepalive is False
    assert socket_settings(RedisSettings.of({})).idle_s == 300.0


def test_settings_are_read_as_redis_reads_them_and_refused_otherwise() -> None:
    s = RedisSettings.of({"Timeout": "2", "hz": 1000, "dynamic-hz": "no"})
    assert (s.timeout_s, s.hz, s.dynamic_hz, s.tcp_keepalive_s) == (2, 500, False, 300)
    for bad in ({"timeout": 1.5}, {"timeout": "2s"}, {"tcp-keepalive": True}, {"dynamic-hz": "maybe"}):
        with pytest.raises(ValueError):
            RedisSettings.of(bad)


def test_clients_cron_visits_every_client_each_tick_below_five_and_rotates_above() -> None:
    s = RedisSettings()
    assert visit_period_s(s, 1) == visit_period_s(s, 5) == pytest.approx(0.1)
    assert visit_period_s(s, 6) == pytest.approx(0.2)      # 5 a call: each one every 2nd call
    assert visit_period_s(s, 50) == pytest.approx(1.0)     # 5 a call, 10 calls to go round
    assert visit_period_s(s, 100) == pytest.approx(1.0)    # 100 / 10 a call
    assert visit_period_s(RedisSettings(hz=100), 5) == pytest.approx(0.01)
    assert effective_hz(s, 2000) == 10 and effective_hz(s, 2001 + 10) == 20   # dynamic-hz
    assert effective_hz(RedisSettings(dynamic_hz=False), 10_000) == 10


def test_idle_timeout_is_due_at_the_next_whole_second_after_timeout() -> None:
    s = RedisSettings(timeout_s=2)
    # the fault at wall 1000.5; last activity 0.2 s before it, at 1000.3 (0.3 into its second):
    # closed once floor(now) - 1000 > 2, so from 1003.0, 2.5 s after the fault
    pred = idle_close(s, last_activity_s=-0.2, clients=5, fault_wall=1000.5)
    assert pred is not None and pred.mechanism == "heartbeat"
    assert pred.reclaim_s == pytest.approx(2.5 + 0.05) and pred.slack_s == pytest.approx(0.05)
    assert "0.3 s into its wall-clock second" in pred.formula
    # the same last activity late in its second: the close comes sooner after it
    late = idle_close(s, last_activity_s=-0.2, clients=5, fault_wall=1000.99)
    assert late is not None and late.reclaim_s == pytest.approx(1003 - 1000.99 + 0.05)
    # more clients than one call visits: up to a whole rotation later
    crowded = idle_close(s, last_activity_s=-0.2, clients=50, fault_wall=1000.5)
    assert crowded is not None and crowded.reclaim_s == pytest.approx(2.5 + 0.5)


def test_without_the_fault_time_the_prediction_is_the_window_middle() -> None:
    pred = idle_close(RedisSettings(timeout_s=2), last_activity_s=-1.0, clients=3)
    assert pred is not None
    assert pred.reclaim_s == pytest.approx(-1 + 2 + 0.5 + 0.05)
    assert pred.slack_s == pytest.approx(0.55) and "0-1 s" in pred.formula
    assert idle_close(RedisSettings(timeout_s=0), last_activity_s=-1.0, clients=3) is None


@pytest.mark.parametrize(("last_wall", "closed_wall"), [
    # measured on this machine (redis-server 7.0.15, loopback and lab): timeout, last activity
    # (wall clock), the close seen by the client or the socket table
    (1796318823.3006, 1796318826.0693),    # timeout 2: sent at .30, closed 2.769 s later
    (1796320120.344, 1796320122.023),      # timeout 1: opened at .344, closed at .023 two seconds on
])
def test_the_measured_closes_fall_in_the_predicted_cron_tick(last_wall: float, closed_wall: float) -> None:
    timeout = 2 if closed_wall - last_wall > 2.5 else 1
    pred = idle_close(RedisSettings(timeout_s=timeout), last_activity_s=last_wall - 1e9,
                      clients=3, fault_wall=1e9)
    assert pred is not None and pred.reclaim_s is not None
    assert abs((closed_wall - 1e9) - pred.reclaim_s) <= pred.slack_s + 0.01
