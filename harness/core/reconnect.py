"""How long a client's connect() to a host that drops its SYNs takes to fail.

Linux (``tcp_write_timeout`` for SYN_SENT): the connection attempt gives up at the first
retransmission-timer expiry at or past the budget ``tcp_model_timeout`` gives for
``tcp_syn_retries`` (or the socket's TCP_SYNCNT) from the initial RTO of 1 s (TCP_TIMEOUT_INIT):
``(2**(N+1) - 1)`` s while N is at most 6. The *expiries* are a different matter on current
kernels: ``net.ipv4.tcp_syn_linear_timeouts`` (default 4, Linux 6.17+) keeps the RTO at 1 s for
the first that many retransmissions before doubling. Measured on this machine (6.18, linear 4):
TCP_SYNCNT 1 failed at 3.08 s, 2 at 7.13 s, 3 at 19.4 s (budget 15 s, expiries 1,2,3,4,5,7,11,19),
4 at 35.5 s (budget 31), 5 at 69.6 s (budget 63; expiry 67 plus the wheel's lateness).
So the textbook 2**(N+1) - 1 holds for N = 1 and 2 only. Pure arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.core.prediction import format_seconds, retransmission_timeout_s, timer_slack_s

TIMEOUT_INIT_S = 1.0   # TCP_TIMEOUT_INIT: the SYN's first RTO
_EPS = 1e-9


@dataclass(frozen=True)
class ReconnectPrediction:
    """When a client's reconnect attempt ends, and how."""

    outcome: str                  # "timed-out" (the kernel or the client's timer gave up) or "connected"
    at_s: float | None            # from the attempt's start
    mechanism: str                # "syn-retries" or "connect-timeout"
    formula: str
    slack_s: float = 0.0


def syn_expiries(linear_timeouts: int, rto_max_s: float = 120.0, count: int = 64) -> list[float]:
    """The SYN retransmission timer's expiries, from the first SYN: ``linear_timeouts`` + 1
    of them 1 s apart (the first SYN's RTO and the linear ones), then doubling to the cap."""
    if linear_timeouts < 0:
        raise ValueError(f"linear_timeouts must not be negative, got {linear_timeouts}")
    out, t, rto = [], 0.0, TIMEOUT_INIT_S
    for i in range(count):
        t += rto
        out.append(t)
        if i >= linear_timeouts:
            rto = min(rto * 2, rto_max_s)
    return out


def syn_give_up_s(syn_retries: int, linear_timeouts: int = 0, rto_max_s: float = 120.0) -> float:
    """When connect() fails with ETIMEDOUT against a host that drops every SYN, from the first
    SYN: the first expiry at or past the budget of ``syn_retries``."""
    if not 1 <= syn_retries <= 127:
        raise ValueError(f"syn_retries must be 1 to 127, got {syn_retries}")
    budget = retransmission_timeout_s(syn_retries, TIMEOUT_INIT_S, rto_max_s)
    count = 8
    while True:
        for t in syn_expiries(linear_timeouts, rto_max_s, count):
            if t >= budget - _EPS:
                return t
        count *= 2


def predict_reconnect(syn_retries: int, linear_timeouts: int, connect_timeout_s: float | None,
                      hz: int = 250) -> ReconnectPrediction:
    """A reconnect whose SYNs all vanish: the kernel's give-up, or the client's own connect
    timeout if that comes first."""
    kernel = syn_give_up_s(syn_retries, linear_timeouts)
    budget = retransmission_timeout_s(syn_retries, TIMEOUT_INIT_S, 120.0)
    expiries = [t for t in syn_expiries(linear_timeouts) if t <= kernel + _EPS]
    gaps = [b - a for a, b in zip([0.0, *expiries], expiries, strict=False)]
    slack = sum(timer_slack_s(g, hz) for g in gaps)
    linear = f", the first {linear_timeouts} retransmissions 1 s apart (tcp_syn_linear_timeouts)" \
        if linear_timeouts else ""
    formula = (f"tcp_syn_retries {syn_retries}: budget (2^{syn_retries + 1} - 1) x 1 s ="
               f" {format_seconds(budget)} s; SYN timer expiries"
               f" {', '.join(format_seconds(t) for t in expiries)} s{linear};"
               f" connect() fails at the first at or past the budget = {format_seconds(kernel)} s")
    if connect_timeout_s is not None and connect_timeout_s < kernel:
        return ReconnectPrediction(
            "timed-out", round(connect_timeout_s, 6), "connect-timeout",
            f"the client's connect timeout {format_seconds(connect_timeout_s)} s comes before"
            f" the kernel's give-up ({formula})")
    return ReconnectPrediction("timed-out", round(kernel, 6), "syn-retries", formula, round(slack, 6))
