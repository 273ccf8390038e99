"""When a reconnect against a SYN blackhole fails: the kernel's budget and its timer expiries,
with the figures measured on this machine (Linux 6.18, tcp_syn_linear_timeouts 4)."""

from __future__ import annotations

import pytest

from harness.core.reconnect import predict_reconnect, syn_expiries, syn_give_up_s

# (TCP_SYNCNT, tcp_syn_linear_timeouts) -> measured connect() failure, seconds
MEASURED = {(1, 4): 3.08, (2, 4): 7.13, (3, 4): 19.36, (4, 4): 35.53, (5, 4): 69.63,
            (2, 0): 7.28, (3, 0): 15.43}


def test_expiries_linear_then_doubling() -> None:
    assert syn_expiries(4, count=9) == [1, 2, 3, 4, 5, 7, 11, 19, 35]
    assert syn_expiries(0, count=5) == [1, 3, 7, 15, 31]


@pytest.mark.parametrize(("retries", "linear"), sorted(MEASURED))
def test_give_up_matches_what_was_measured(retries: int, linear: int) -> None:
    predicted = predict_reconnect(retries, linear, None)
    assert predicted.at_s == syn_give_up_s(retries, linear)
    measured = MEASURED[(retries, linear)]
    # timers fire late, never early, by at most the wheel's granularity each (the slack)
    assert predicted.at_s <= measured <= predicted.at_s + predicted.slack_s + 0.05


def test_textbook_formula_only_without_linear_timeouts() -> None:
    for n in range(1, 7):
        assert syn_give_up_s(n, 0) == 2 ** (n + 1) - 1
    assert syn_give_up_s(3, 4) == 19 != 2 ** 4 - 1


def test_client_connect_timeout_first() -> None:
    p = predict_reconnect(6, 4, 2.5)
    assert (p.outcome, p.at_s, p.mechanism) == ("timed-out", 2.5, "connect-timeout")
    q = predict_reconnect(2, 4, 30.0)
    assert (q.at_s, q.mechanism) == (7.0, "syn-retries")
    assert "1, 2, 3, 4, 5, 7" in q.formula and 0 < q.slack_s < 0.3


def test_bad_retries() -> None:
    with pytest.raises(ValueError):
        syn_give_up_s(0)
