"""The maths of random loss: exchange loss, the keepalive distribution, the floor with data in
flight and the binomial range the verdict allows."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.core.loss import (
    LossBound,
    binomial_range,
    exchange_loss,
    in_flight_bound,
    keepalive_distribution,
)
from harness.core.prediction import KernelDefaults, SocketSettings, effective, predict


def eff(idle: float = 1, interval: float = 1, count: int = 2, user_timeout: float | None = None,
        keepalive: bool = True):  # type: ignore[no-untyped-def]
    return effective(SocketSettings(keepalive, idle, interval, count, user_timeout), KernelDefaults())


def test_an_exchange_fails_when_either_packet_is_lost() -> None:
    assert exchange_loss(0.5) == 0.75
    assert exchange_loss(0) == 0
    assert exchange_loss(1) == 1
    with pytest.raises(ValueError):
        exchange_loss(1.5)


def test_the_earliest_reclaim_is_the_silent_peers() -> None:
    e = eff(idle=2, interval=1, count=3)
    bound = keepalive_distribution(e, 0.3, last_activity_s=-1.0)
    silent = predict(e, activity="idle", peer="silent", last_activity_s=-1.0)
    assert bound.earliest_s == silent.reclaim_s == 4.0
    # its chance: every one of the first 3 probes (or its ACK) lost
    assert bound.atoms[0] == (4.0, pytest.approx(exchange_loss(0.3) ** 3))


def test_hand_computed_distribution() -> None:
    # idle 1, interval 1, count 2, last heard at 0; r = 0.75 a probe.
    # probes at 1, 2: both lost -> killed at 3 (r^2). Probe 1 answered (at 1): next probes at 2, 3,
    # killed at 4 (q r^2). Probe 1 lost, probe 2 answered (at 2): probes 3, 4, killed at 5 (r q r^2)...
    r, q = 0.75, 0.25
    b = keepalive_distribution(eff(), 0.5, 0.0)
    assert b.p_by(3.0) == pytest.approx(r * r)
    assert b.p_by(4.0) == pytest.approx(r * r + q * r * r)
    assert b.p_by(5.0) == pytest.approx(r * r + q * r * r + (q * q + r * q) * r * r)
    assert b.p_by(2.9) == 0


def test_an_answered_probe_waits_the_idle_time_again() -> None:
    # idle 3, interval 1, count 1: the first probe at 3 answered -> the next at 6, killed at 7
    b = keepalive_distribution(eff(idle=3, interval=1, count=1), 0.5, 0.0)
    times = [t for t, _ in b.atoms[:3]]
    assert times == [4.0, 7.0, 10.0]


def test_user_timeout_kills_on_silence_with_a_probe_out() -> None:
    # idle 1, interval 1, user timeout 2.5, count ignored: a lost probe at 1 and 2, firing at 3
    # has silence 3 >= 2.5 with probes out -> killed at 3
    b = keepalive_distribution(eff(idle=1, interval=1, count=9, user_timeout=2.5), 0.5, 0.0)
    assert b.earliest_s == 3.0
    silent = predict(eff(idle=1, interval=1, count=9, user_timeout=2.5), activity="idle", peer="silent")
    assert silent.reclaim_s == 3.0


def test_keepalive_off_never() -> None:
    assert keepalive_distribution(eff(keepalive=False), 0.5, 0.0).earliest_s is None


def simulate(idle: float, interval: float, count: int, r: float, horizon: float, rng: random.Random) -> float:
    """The kernel's keepalive firings, one random run (heard last at 0)."""
    t, heard, out = idle, 0.0, 0
    while t <= horizon:
        if out >= count:
            return t
        if t - heard < idle - 1e-9:
            t = heard + idle
            continue
        if rng.random() < r:
            out += 1
        else:
            heard, out = t, 0
        t += interval
    return math.inf


@settings(max_examples=25, deadline=None)
@given(idle=st.integers(1, 4), interval=st.integers(1, 3), count=st.integers(1, 4),
       loss=st.sampled_from([0.1, 0.3, 0.5, 0.8]))
def test_the_distribution_is_a_distribution_and_matches_a_simulation(idle: int, interval: int, count: int,
                                                                       loss: float) -> None:
    b = keepalive_distribution(eff(idle, interval, count), loss, 0.0, horizon_s=60)
    probs = [p for _, p in b.atoms]
    assert all(0 <= p <= 1 for p in probs) and sum(probs) <= 1 + 1e-9
    assert b.earliest_s == idle + count * interval
    times = [t for t, _ in b.atoms]
    assert times == sorted(times)
    # the chance by a time never falls as the time grows
    cdf = [b.p_by(t) or 0 for t in range(0, 61, 5)]
    assert cdf == sorted(cdf)
    rng = random.Random(f"{idle}/{interval}/{count}/{loss}")
    runs, at = 3000, 20.0
    hits = sum(simulate(idle, interval, count, exchange_loss(loss), 60, rng) <= at for _ in range(runs))
    p = b.p_by(at) or 0
    assert abs(hits / runs - p) <= 4 * math.sqrt(p * (1 - p) / runs) + 0.01


def test_in_flight_data_acknowledged_at_once_may_die_sooner_by_keepalive() -> None:
    # measured: user timeout 2 s, keepalive idle 1 s / interval 1 s, 50 % loss: two sessions
    # reclaimed at 2.04 and 2.07 s, before the retransmission path's 2.2 s
    b = in_flight_bound(2.2, transmissions=5, loss=0.5, idle_after_s=2.0)
    assert b.earliest_s == 2.0 and b.atoms == ((2.2, pytest.approx(0.75 ** 5)),)


def test_in_flight_is_a_floor() -> None:
    b = in_flight_bound(3.2, transmissions=4, loss=0.5)
    assert b.kind == "lower-bound"
    assert b.p_by(3.2) == pytest.approx(0.75 ** 4)
    assert b.p_by(3.1) == 0
    assert "P >=" in b.describe(5.0)


def test_describe_says_it_is_a_bound() -> None:
    b = keepalive_distribution(eff(), 0.5, -1.0)
    text = b.describe(6.0)
    assert "a bound, not a point" in text and "P 0.947" in text
    assert "not modelled" in LossBound("earliest-only", 0.5, 3.0).describe(6.0)


@given(n=st.integers(0, 40), p=st.floats(0, 1))
def test_binomial_range_holds_all_but_alpha(n: int, p: float) -> None:
    lo, hi = binomial_range(n, p)
    assert 0 <= lo <= hi <= n
    pmf = [math.comb(n, k) * p ** k * (1 - p) ** (n - k) for k in range(n + 1)]
    assert sum(pmf[lo:hi + 1]) >= 1 - 0.001 - 1e-9


def test_binomial_range_examples() -> None:
    assert binomial_range(6, 0.947) == (3, 6)
    assert binomial_range(4, 0.0) == (0, 0)
    assert binomial_range(4, 1.0) == (4, 4)
    assert binomial_range(100, 0.5)[0] > 30


@settings(max_examples=50, deadline=2000)
@given(last=st.floats(-5, 0), idle=st.integers(1, 3), interval=st.integers(1, 2),
       ut=st.sampled_from([None, 2.5, 4.0]))
def test_any_last_activity_finishes(last: float, idle: int, interval: int, ut: float | None) -> None:
    # times as measured (not whole seconds) once made a state come back as itself forever
    b = keepalive_distribution(eff(idle, interval, 2, ut), 0.5, last, horizon_s=120)
    assert b.earliest_s is not None and b.earliest_s >= last + idle
