"""Prediction maths against hand-computed kernel behaviour (net/ipv4/tcp_timer.c)."""

from __future__ import annotations

import pytest

from harness.core.prediction import (
    Effective,
    KernelDefaults,
    SocketSettings,
    effective,
    format_seconds,
    predict,
    retransmission_timeout_s,
    timer_slack_s,
)

KERNEL = KernelDefaults()


def eff(**kwargs: object) -> Effective:
    settings = SocketSettings(**kwargs)  # type: ignore[arg-type]
    return effective(settings, KERNEL)


# --- effective() ---------------------------------------------------------------------------


def test_effective_fills_every_unset_keepalive_value_from_the_os() -> None:
    e = eff(keepalive=True)
    assert (e.idle_s, e.interval_s, e.count) == (7200.0, 75.0, 9)
    assert e.defaults_used == ("idle", "interval", "count")
    assert e.user_timeout_s == 0.0
    assert (e.retries2, e.rto_min_s, e.rto_max_s, e.hz) == (15, 0.2, 120.0, 250)


def test_effective_keeps_values_the_socket_sets_and_names_only_the_defaults() -> None:
    e = eff(keepalive=True, idle_s=2, interval_s=None, count=3, user_timeout_s=5.0)
    assert (e.idle_s, e.interval_s, e.count, e.user_timeout_s) == (2.0, 75.0, 3, 5.0)
    assert e.defaults_used == ("interval",)


def test_effective_takes_kernel_sysctls_from_the_namespace_not_linux_defaults() -> None:
    kernel = KernelDefaults(keepalive_time_s=60, keepalive_intvl_s=5, keepalive_probes=4,
                            tcp_retries2=8, hz=1000)
    e = effective(SocketSettings(keepalive=True), kernel)
    assert (e.idle_s, e.interval_s, e.count, e.retries2, e.hz) == (60.0, 5.0, 4, 8, 1000)


def test_effective_treats_zero_as_not_set_because_the_kernel_rejects_zero() -> None:
    e = eff(keepalive=True, idle_s=0, interval_s=0, count=0, user_timeout_s=0)
    assert (e.idle_s, e.interval_s, e.count) == (7200.0, 75.0, 9)
    assert e.defaults_used == ("idle", "interval", "count")
    assert e.user_timeout_s == 0.0


def test_effective_refuses_negative_values() -> None:
    with pytest.raises(ValueError, match="idle"):
        eff(keepalive=True, idle_s=-1)
    with pytest.raises(ValueError, match="user_timeout"):
        eff(keepalive=True, user_timeout_s=-1)


# --- retransmission_timeout_s (tcp_model_timeout) ------------------------------------------


@pytest.mark.parametrize(
    ("retries2", "expected"),
    [
        (0, 0.2),  # (2<<0 - 1) * 0.2
        (1, 0.6),  # 3 * 0.2
        (3, 3.0),  # 15 * 0.2
        (8, 102.2),  # 511 * 0.2
        (9, 204.6),  # 1023 * 0.2: the last exponential step (ilog2(120/0.2) = 9)
        (10, 324.6),  # 204.6 + 1 * 120
        (15, 924.6),  # 204.6 + 6 * 120, the Linux default
    ],
)
def test_retransmission_timeout_matches_tcp_model_timeout(retries2: int, expected: float) -> None:
    assert retransmission_timeout_s(retries2) == pytest.approx(expected, abs=1e-9)


def test_retransmission_timeout_with_other_rto_bounds() -> None:
    # ilog2(60 / 1) = 5: exponential up to (2<<5 - 1) * 1 = 63, then 60 s per retry
    assert retransmission_timeout_s(5, 1.0, 60.0) == pytest.approx(63.0)
    assert retransmission_timeout_s(7, 1.0, 60.0) == pytest.approx(183.0)


# --- timer_slack_s (the timer wheel) -------------------------------------------------------


@pytest.mark.parametrize(
    ("delay_s", "expected"),
    [
        (0.1, 0.004),  # 25 jiffies: level 0, 1 jiffy
        (0.248, 0.004),  # 62 jiffies: still level 0
        (0.252, 0.032),  # 63 jiffies: level 1, 8 jiffies
        (2.0, 0.032),  # 500 jiffies
        (2.016, 0.256),  # 504 jiffies: level 2, 64 jiffies
        (16.124, 0.256),  # 4031 jiffies
        (16.128, 2.048),  # 4032 jiffies: level 3, 512 jiffies
        (75.0, 2.048),  # 18750 jiffies
        (7200.0, 131.072),  # 1.8 M jiffies: level 5, 32768 jiffies
        (1e9, 67108.864),  # beyond the wheel: clamped to level 8 of 9
    ],
)
def test_timer_slack_at_hz_250(delay_s: float, expected: float) -> None:
    assert timer_slack_s(delay_s, 250) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("delay_s", "expected"),
    [
        (0.05, 0.001),  # 50 jiffies: level 0
        (0.063, 0.008),  # 63 jiffies: level 1
        (1.0, 0.064),  # 1000 jiffies: level 2
        (10.0, 0.512),  # level 3
        (75.0, 4.096),  # 75000 jiffies: level 4
    ],
)
def test_timer_slack_at_hz_1000(delay_s: float, expected: float) -> None:
    assert timer_slack_s(delay_s, 1000) == pytest.approx(expected)


def test_timer_slack_has_one_level_less_at_hz_100() -> None:
    assert timer_slack_s(1e9, 100) == pytest.approx(8**7 / 100)


def test_timer_slack_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        timer_slack_s(-1.0, 250)
    with pytest.raises(ValueError):
        timer_slack_s(1.0, 0)


# --- idle, silent peer: keepalive ----------------------------------------------------------


def test_keepalive_kills_after_idle_plus_count_intervals_from_last_activity() -> None:
    p = predict(eff(keepalive=True, idle_s=2, interval_s=1, count=3),
                activity="idle", peer="silent", last_activity_s=-1.0)
    assert p.reclaim_s == pytest.approx(4.0)
    assert p.mechanism == "keepalive"
    assert p.formula == "last activity -1 s + idle 2 s + 3 × interval 1 s = 4 s"
    # one firing after idle (500 jiffies) + 3 after each interval (250 jiffies): 4 × 8 jiffies
    assert p.slack_s == pytest.approx(0.128)


def test_keepalive_formula_shows_fractional_last_activity() -> None:
    p = predict(eff(keepalive=True, idle_s=2, interval_s=1, count=3),
                activity="idle", peer="silent", last_activity_s=-0.98)
    assert p.reclaim_s == pytest.approx(4.02)
    assert p.formula == "last activity -0.98 s + idle 2 s + 3 × interval 1 s = 4.02 s"


def test_keepalive_with_postgres_defaults_takes_over_two_hours() -> None:
    # PostgreSQL's tcp_keepalives_* = 0 select the OS defaults 7200/75/9
    p = predict(eff(keepalive=True, idle_s=0, interval_s=0, count=0),
                activity="idle", peer="silent", last_activity_s=0.0)
    assert p.reclaim_s == 7875.0
    assert p.mechanism == "keepalive"
    assert p.formula.count("OS default") == 3
    assert "= 7875 s" in p.formula
    assert p.slack_s == pytest.approx(131.072 + 9 * 2.048)


@pytest.mark.parametrize(
    ("user_timeout", "expected", "probes"),
    [
        (3.5, 4.0, 2),  # 2+1 = 3 < 3.5, 2+2 = 4 >= 3.5
        (5.0, 5.0, 3),  # exactly on a firing
        (1.0, 3.0, 1),  # shorter than idle: still needs one probe out
        (100.0, 100.0, 98),  # beyond count 9: the count is ignored
    ],
)
def test_keepalive_with_user_timeout_ends_at_first_firing_past_it(
    user_timeout: float, expected: float, probes: int
) -> None:
    p = predict(eff(keepalive=True, idle_s=2, interval_s=1, count=9, user_timeout_s=user_timeout),
                activity="idle", peer="silent")
    assert p.reclaim_s == pytest.approx(expected)
    assert p.mechanism == "keepalive"
    assert f"{probes} × interval" in p.formula
    assert "TCP_USER_TIMEOUT" in p.formula
    assert p.slack_s == pytest.approx(0.032 * (1 + probes))


def test_keepalive_off_idle_silent_is_never() -> None:
    p = predict(eff(keepalive=False, user_timeout_s=5), activity="idle", peer="silent")
    assert p.reclaim_s is None
    assert p.mechanism == "none"
    assert "keepalive is off" in p.formula
    assert p.slack_s == 0.0


# --- reset peer ----------------------------------------------------------------------------


def test_idle_reset_peer_is_reclaimed_at_the_first_probe() -> None:
    p = predict(eff(keepalive=True, idle_s=2, interval_s=1, count=9),
                activity="idle", peer="reset", last_activity_s=-0.5)
    assert p.reclaim_s == pytest.approx(1.5)
    assert p.mechanism == "reset"
    assert "RST" in p.formula
    assert p.slack_s == pytest.approx(0.032)


def test_idle_reset_peer_without_keepalive_is_never() -> None:
    p = predict(eff(keepalive=False), activity="idle", peer="reset")
    assert p.reclaim_s is None
    assert p.mechanism == "none"
    assert "RST" in p.formula


def test_in_flight_reset_peer_is_reclaimed_when_the_data_is_sent() -> None:
    p = predict(eff(keepalive=False, user_timeout_s=10), activity="in-flight", peer="reset",
                data_sent_s=0.25)
    assert p.reclaim_s == pytest.approx(0.25)
    assert p.mechanism == "reset"


# --- in flight, silent peer ----------------------------------------------------------------


def test_in_flight_default_retries2_gives_924_6_s() -> None:
    p = predict(eff(keepalive=True, idle_s=2, interval_s=1, count=3),
                activity="in-flight", peer="silent")
    # keepalive settings do not matter with data in flight
    assert p.reclaim_s == pytest.approx(924.6)
    assert p.mechanism == "retransmission"
    assert "15 retransmissions" in p.formula
    assert "924.6 s" in p.formula


def test_in_flight_small_retries2_by_hand() -> None:
    kernel = KernelDefaults(tcp_retries2=3)
    e = effective(SocketSettings(keepalive=False), kernel)
    # budget (2<<3 - 1) * 0.2 = 3.0, counted from the first retransmission at 0.5 + 0.2;
    # after it: 0.4, 1.2, 2.8 (< 3.0), 6.0 -> killed at 0.7 + 6.0
    p = predict(e, activity="in-flight", peer="silent", data_sent_s=0.5)
    assert p.reclaim_s == pytest.approx(6.7)
    # delays 0.2 (50 jiffies, level 0), 0.4, 0.8, 1.6 (level 1), 3.2 (level 2) at HZ 250
    assert p.slack_s == pytest.approx(0.004 + 3 * 0.032 + 0.256)


def test_in_flight_retries2_zero_still_needs_one_retransmission() -> None:
    # The first expiry is the first retransmission and starts the clock (budget 0.2 s);
    # the next expiry, 0.4 s later, kills.
    e = effective(SocketSettings(keepalive=False), KernelDefaults(tcp_retries2=0))
    p = predict(e, activity="in-flight", peer="silent")
    assert p.reclaim_s == pytest.approx(0.6)


def test_in_flight_larger_rto_overshoots_the_budget() -> None:
    # first retransmission at 0.3; after it 0.6, 1.8, 4.2, 9, 18.6, 37.8, 76.2, 153,
    # then +120 each: 273 ... 873 < 924.6 <= 993 -> 0.3 + 993
    p = predict(eff(keepalive=False), activity="in-flight", peer="silent", rto_s=0.3)
    assert p.reclaim_s == pytest.approx(993.3)
    assert p.mechanism == "retransmission"


def test_in_flight_small_retries2_with_rto_0_3() -> None:
    e = effective(SocketSettings(keepalive=False), KernelDefaults(tcp_retries2=3))
    # budget 3.0 from the first retransmission at 0.3: 0.6, 1.8, 4.2 -> 0.3 + 4.2
    p = predict(e, activity="in-flight", peer="silent", rto_s=0.3)
    assert p.reclaim_s == pytest.approx(4.5)


def test_in_flight_user_timeout_counts_from_the_first_retransmission() -> None:
    # Measured on Linux 6.18: the clock starts at the first retransmission (data sent + RTO).
    p = predict(eff(keepalive=True, idle_s=1, interval_s=1, count=1, user_timeout_s=5),
                activity="in-flight", peer="silent", data_sent_s=0.5)
    assert p.reclaim_s == pytest.approx(0.5 + 0.2 + 5)
    assert p.mechanism == "user-timeout"
    assert "TCP_USER_TIMEOUT 5 s" in p.formula
    # delays 0.2 (level 0), 0.4, 0.8, 1.6 (level 1) and the clamped 2.2 (level 2)
    assert p.slack_s == pytest.approx(0.004 + 3 * 0.032 + 0.256)


def test_in_flight_user_timeout_ignores_retries2() -> None:
    e = effective(SocketSettings(keepalive=False, user_timeout_s=2000),
                  KernelDefaults(tcp_retries2=3))
    p = predict(e, activity="in-flight", peer="silent")
    assert p.reclaim_s == pytest.approx(2000.2)


def test_in_flight_user_timeout_shorter_than_rto_waits_for_the_first_expiry() -> None:
    p = predict(eff(keepalive=False, user_timeout_s=0.1), activity="in-flight", peer="silent")
    # the first retransmission at 0.2 s starts the clock; the re-arm is clamped to 0.1 s
    assert p.reclaim_s == pytest.approx(0.3)
    assert p.mechanism == "user-timeout"


def test_rto_is_capped_at_rto_max() -> None:
    e = effective(SocketSettings(keepalive=False), KernelDefaults(tcp_retries2=0))
    p = predict(e, activity="in-flight", peer="silent", rto_s=500.0)
    assert p.reclaim_s == pytest.approx(240.0)


def test_predict_refuses_unknown_activity_peer_and_rto() -> None:
    e = eff(keepalive=True)
    with pytest.raises(ValueError, match="activity"):
        predict(e, activity="busy", peer="silent")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="peer"):
        predict(e, activity="idle", peer="gone")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rto"):
        predict(e, activity="in-flight", peer="silent", rto_s=0)


@pytest.mark.parametrize(
    ("value", "text"),
    [(4.0, "4"), (4.02, "4.02"), (-0.98, "-0.98"), (7875.0, "7875"), (0.0001, "0"),
     (-0.0001, "0"), (1.23456, "1.235")],
)
def test_format_seconds(value: float, text: str) -> None:
    assert format_seconds(value) == text


# --- proxy layer ---------------------------------------------------------------------------


def test_a_stalled_proxy_is_never_reclaimed_by_tcp() -> None:
    from harness.core.prediction import predict_proxy

    p = predict_proxy("holds", what="proxy-stall")
    assert p.reclaim_s is None and p.mechanism == "none"
    assert "acknowledges every keepalive probe" in p.formula


def test_a_closing_or_resetting_proxy_reclaims_after_its_delay() -> None:
    from harness.core.prediction import predict_proxy

    assert predict_proxy("closes", what="proxy-down").reclaim_s == 0.0
    p = predict_proxy("resets", what="reset_peer", delay_s=1.5)
    assert (p.reclaim_s, p.mechanism) == (1.5, "reset")


def test_a_heartbeat_blinds_keepalive_from_its_first_send() -> None:
    from harness.core.prediction import Prediction, combine

    keepalive = Prediction(reclaim_s=7875.0, mechanism="keepalive", formula="k")
    heartbeat = Prediction(reclaim_s=20.0, mechanism="heartbeat", formula="h")
    assert combine(keepalive, heartbeat, app_first_send_s=5.0) is heartbeat
    early = Prediction(reclaim_s=4.0, mechanism="keepalive", formula="k")
    assert combine(early, heartbeat, app_first_send_s=5.0) is early     # fires before any heartbeat
    assert combine(early, heartbeat, app_first_send_s=3.0) is heartbeat  # blinded at 3 s
    never = Prediction(reclaim_s=None, mechanism="none", formula="n")
    assert combine(keepalive, never, app_first_send_s=None) is keepalive
    assert combine(never, heartbeat, app_first_send_s=5.0) is heartbeat


def test_a_heartbeat_that_never_gives_up_still_blinds_keepalive() -> None:
    from harness.core.prediction import Prediction, combine

    keepalive = Prediction(reclaim_s=9.0, mechanism="keepalive", formula="k")
    endless = Prediction(reclaim_s=None, mechanism="none", formula="ClientAliveCountMax 0")
    retrans = Prediction(reclaim_s=935.0, mechanism="retransmission", formula="r")
    assert combine(keepalive, endless, app_first_send_s=4.0, tcp_in_flight=retrans) is retrans
    assert combine(keepalive, endless, app_first_send_s=4.0).reclaim_s is None
    assert combine(keepalive, endless, app_first_send_s=10.0) is keepalive   # fires first
