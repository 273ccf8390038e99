"""Mosquitto 2.0's keepalive check, with plain values (the cases measured on this machine with
Mosquitto 2.0.11; see harness/core/mqtt.py)."""

from __future__ import annotations

import math

import pytest

from harness.core.mqtt import (
    CHECK_EVERY_S,
    LOOP_WAKE_S,
    BrokerClock,
    broker_keepalive,
    check_second,
    first_second_over,
    limit_s,
)

START = 12849   # the broker's start second (CLOCK_MONOTONIC) in the measured run
# (keepalive, when the client's last packet went, when the broker's disconnect reached it):
# 20 clients at random phases, silent after their CONNECT or one PINGREQ
MEASURED = [
    (1, 12850.316, 12855.076), (1, 12852.270, 12855.076), (1, 12855.672, 12861.080),
    (1, 12856.248, 12861.080), (2, 12851.393, 12855.076), (2, 12852.882, 12861.079),
    (2, 12854.770, 12861.081), (2, 12856.770, 12861.080), (3, 12853.598, 12861.081),
    (3, 12854.975, 12861.079), (3, 12855.583, 12861.081), (3, 12855.610, 12861.079),
    (4, 12850.244, 12861.079), (4, 12850.984, 12861.079), (4, 12851.468, 12861.079),
    (4, 12852.783, 12861.081), (5, 12851.385, 12861.080), (5, 12853.369, 12861.080),
    (5, 12853.628, 12861.080), (5, 12854.338, 12867.093),
]


@pytest.mark.parametrize(("keepalive", "limit"), [(0, 0), (1, 1), (2, 3), (3, 4), (4, 6), (5, 7), (60, 90)])
def test_the_limit_is_keepalive_times_3_over_2_in_integers(keepalive: int, limit: int) -> None:
    assert limit_s(keepalive) == limit


def test_a_negative_keepalive_is_an_error() -> None:
    with pytest.raises(ValueError, match="negative"):
        limit_s(-1)


def test_first_second_over_and_the_6_s_checks() -> None:
    assert first_second_over(100, 1) == 102
    assert first_second_over(100, 2) == 104
    assert check_second(102, 100) == 106      # checks at 100, 106, 112, ...
    assert check_second(106, 100) == 106      # a check in the very second it is over counts
    assert check_second(107, 100) == 112
    assert check_second(90, 100) == 100       # never before the broker's first check
    assert CHECK_EVERY_S == 6


@pytest.mark.parametrize(("keepalive", "sent", "gone"), MEASURED)
def test_every_measured_disconnect_is_the_predicted_check(keepalive: int, sent: float, gone: float) -> None:
    # the fault at the client's last packet: last heard at 0
    p = broker_keepalive(keepalive, last_heard_s=0.0, clock=BrokerClock(sent, START))
    assert p.reclaim_s is not None and p.mechanism == "heartbeat"
    assert math.floor(sent + p.reclaim_s) == math.floor(gone)
    assert abs(p.reclaim_s - (gone - sent)) <= LOOP_WAKE_S / 2 + 1e-9
    assert p.slack_s == LOOP_WAKE_S / 2


def test_the_prediction_counts_from_the_fault_not_the_last_packet() -> None:
    # heard 0.55 s before a fault at 1000.6 (second 1000): over at 1002, checked at 1002
    p = broker_keepalive(1, last_heard_s=-0.55, clock=BrokerClock(1000.6, 996))
    assert p.reclaim_s == pytest.approx(1002 - 1000.6 + LOOP_WAKE_S / 2)
    assert "checked at second 1002" in p.formula and "1.5 × keepalive" in p.formula


def test_far_from_1_5_times_keepalive() -> None:
    # heard at 1000.5, keepalive 1: MQTT says 1.5 s; over at 1002, which the check at 1001
    # just missed: the next is at 1007
    p = broker_keepalive(1, last_heard_s=0.0, clock=BrokerClock(1000.5, 1001))
    assert p.reclaim_s == pytest.approx(6.55)


def test_keepalive_zero_is_never() -> None:
    p = broker_keepalive(0, last_heard_s=-1.0, clock=BrokerClock(5.0, 0))
    assert p.reclaim_s is None and p.mechanism == "none"
    assert "never" in p.formula and "SO_KEEPALIVE" in p.formula


def test_without_the_clock_the_bounds_of_the_phase() -> None:
    p = broker_keepalive(2, last_heard_s=-1.0, clock=None)
    # over 3 to 4 s after the hearing, checked 0 to 5 s later, up to 0.1 s into the second
    assert p.reclaim_s == pytest.approx((2.0 + 8.1) / 2)
    assert p.slack_s == pytest.approx((8.1 - 2.0) / 2)
    assert "between 2 s and 8.1 s" in p.formula
    for keepalive, sent, gone in MEASURED:
        low = limit_s(keepalive)
        assert low < gone - sent <= low + CHECK_EVERY_S + LOOP_WAKE_S
