"""sshd's ClientAlive arithmetic and its settings, with plain values (figures measured in the lab
with Debian's OpenSSH 9.2p1; see harness/core/sshd.py)."""

from __future__ import annotations

import pytest

from harness.core.prediction import (
    KernelDefaults,
    SocketSettings,
    combine,
    effective,
    predict,
)
from harness.core.sshd import (
    ClientAlive,
    client_alive,
    first_check_s,
    sshd_flag,
    sshd_seconds,
    tcp_keepalive,
)

# --- settings as sshd reads them ------------------------------------------------------------


@pytest.mark.parametrize(("value", "seconds"), [
    (15, 15), ("15", 15), ("90s", 90), ("1m30s", 90), ("2h", 7200), ("1W", 604800),
    ("1h1m1s", 3661), (0, 0),
])
def test_time_values_follow_sshd_config_time_formats(value: object, seconds: int) -> None:
    assert sshd_seconds(value) == seconds  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["", "abc", "5x", "1.5", "-1", -1, True, 2.5, 3.0, "m"])
def test_time_values_sshd_refuses_are_errors(value: object) -> None:
    with pytest.raises(ValueError, match="invalid time value"):
        sshd_seconds(value)  # type: ignore[arg-type]


def test_flags_are_yes_or_no_and_yaml_booleans() -> None:
    assert sshd_flag(True) is True and sshd_flag("yes") is True and sshd_flag("No") is False
    with pytest.raises(ValueError, match="yes or no"):
        sshd_flag("maybe")


def test_tcp_keepalive_defaults_to_yes_and_names_are_case_insensitive() -> None:
    assert tcp_keepalive({}) is True
    assert tcp_keepalive({"tcpkeepalive": False}) is False
    assert tcp_keepalive({"TCPKeepAlive": "yes"}) is True


def test_client_alive_settings_default_to_off_with_count_3() -> None:
    assert ClientAlive.from_settings({}) == ClientAlive(interval_s=0, count_max=3)
    assert ClientAlive.from_settings({"clientaliveinterval": "1m", "ClientAliveCountMax": "2"}) \
        == ClientAlive(interval_s=60, count_max=2)
    with pytest.raises(ValueError, match="whole number"):
        ClientAlive.from_settings({"ClientAliveCountMax": "x"})
    with pytest.raises(ValueError):
        ClientAlive(interval_s=-1)


# --- the prediction ----------------------------------------------------------------------------


def test_off_gives_no_heartbeat_prediction() -> None:
    assert client_alive(ClientAlive(0, 3), last_heard_s=-1.0) == (None, None)


@pytest.mark.parametrize(("interval", "count", "first", "reclaim"), [
    # the lab's measurements: last activity -1.01 s, idle
    (2, 2, 2.99, 10.99),
    (1, 3, 0.99, 6.99),
    (3, 1, 4.99, 10.99),
    (1, 1, 0.99, 2.99),
])
def test_idle_checks_come_every_second_interval_and_disconnect_after_count_keepalives(
        interval: int, count: int, first: float, reclaim: float) -> None:
    pred, first_send = client_alive(ClientAlive(interval, count), last_heard_s=-1.01)
    assert pred is not None
    assert first_send == pytest.approx(first)
    assert pred.reclaim_s == pytest.approx(reclaim)
    assert pred.mechanism == "heartbeat"
    assert f"man page's Interval × CountMax says {interval * count} s" in pred.formula


@pytest.mark.parametrize(("interval", "count", "first", "reclaim"), [
    (2, 2, 2.0, 10.0),
    (3, 1, 3.0, 9.0),
])
def test_data_sent_at_the_fault_restarts_the_wait_and_the_first_check_is_due_at_once(
        interval: int, count: int, first: float, reclaim: float) -> None:
    pred, first_send = client_alive(ClientAlive(interval, count), last_heard_s=-1.01, last_wake_s=0.0)
    assert pred is not None
    assert (first_send, pred.reclaim_s) == (pytest.approx(first), pytest.approx(reclaim))
    assert pred.formula.startswith("data sent 0 s + ClientAliveInterval")


def test_a_wake_up_within_half_a_second_of_the_last_hearing_counts_as_the_same_second() -> None:
    alive = ClientAlive(2, 1)
    assert first_check_s(alive, last_heard_s=-0.2, last_wake_s=0.0) == pytest.approx(4.0)
    assert first_check_s(alive, last_heard_s=-0.6, last_wake_s=0.0) == pytest.approx(2.0)
    # a "wake-up" before the last hearing is no wake-up
    assert first_check_s(alive, last_heard_s=-1.0, last_wake_s=-3.0) == pytest.approx(3.0)


def test_count_max_0_sends_keepalives_but_never_disconnects() -> None:
    pred, first_send = client_alive(ClientAlive(5, 0), last_heard_s=-1.0)
    assert pred is not None and pred.reclaim_s is None and pred.mechanism == "none"
    assert first_send == pytest.approx(9.0)
    assert "never disconnects" in pred.formula


def test_the_first_keepalive_blinds_tcp_keepalive_at_os_defaults() -> None:
    tcp = predict(effective(SocketSettings(keepalive=True), KernelDefaults()),
                  activity="idle", peer="silent", last_activity_s=-1.0)
    app, first = client_alive(ClientAlive(2, 2), last_heard_s=-1.0)
    assert combine(tcp, app, app_first_send_s=first) is app


def test_tcp_keepalive_off_leaves_only_the_heartbeat() -> None:
    tcp = predict(effective(SocketSettings(keepalive=False), KernelDefaults()),
                  activity="idle", peer="silent", last_activity_s=-1.0)
    assert tcp.reclaim_s is None
    app, first = client_alive(ClientAlive(1, 1), last_heard_s=-1.0)
    assert combine(tcp, app, app_first_send_s=first) is app
