"""What the Linux kernel will do to a server socket whose peer died.

Pure arithmetic over the rules in Linux's ``net/ipv4/tcp_timer.c``: the keepalive timer
(``tcp_keepalive_timer``), the retransmission timer (``tcp_retransmit_timer``,
``retransmits_timed_out``, ``tcp_model_timeout``, ``tcp_clamp_rto_to_user_timeout``) and the
timer wheel that runs them (``kernel/time/timer.c``). Nothing here reads the machine: the
kernel's sysctls arrive as a :class:`KernelDefaults` and the target's socket options as
:class:`SocketSettings`.

All times are float seconds. Results are counted from the fault (negative = before it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from harness.core.loss import LossBound

Activity = Literal["idle", "in-flight"]
"""What the server socket is doing at the fault: nothing, or waiting for an ACK of its data."""

Peer = Literal["silent", "reset"]
"""How the dead peer behaves: packets vanish (``silent``) or it answers with RST (``reset``)."""

Mechanism = Literal["keepalive", "retransmission", "user-timeout", "reset", "closed", "heartbeat", "none"]
"""What reclaims the socket: a kernel timer, a reset, an orderly close (FIN); ``none`` when
nothing ever will."""

ProxyEffect = Literal["holds", "closes", "resets"]
"""What a proxy fault does to the server's own TCP connection (which ends at the proxy)."""

ACTIVITIES: tuple[Activity, ...] = ("idle", "in-flight")
PEERS: tuple[Peer, ...] = ("silent", "reset")

# Float sums of timer delays pick up noise in the last bits; comparisons against kernel
# thresholds use this margin so that 0.2 + 0.4 + ... == 924.6 counts as reaching it.
_EPS = 1e-9


def format_seconds(value: float) -> str:
    """Render seconds for human text: at most 3 decimals, no trailing zeros (``4.02``, ``7875``)."""
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    # -0.0004 rounds to "-0.000", which strips to "-0"
    return "0" if text in ("-0", "") else text


@dataclass(frozen=True)
class KernelDefaults:
    """The server namespace's TCP sysctls and timer constants (read elsewhere, passed in)."""

    keepalive_time_s: float = 7200.0  # net.ipv4.tcp_keepalive_time
    keepalive_intvl_s: float = 75.0  # net.ipv4.tcp_keepalive_intvl
    keepalive_probes: int = 9  # net.ipv4.tcp_keepalive_probes
    tcp_retries2: int = 15  # net.ipv4.tcp_retries2
    rto_min_s: float = 0.2  # TCP_RTO_MIN
    rto_max_s: float = 120.0  # TCP_RTO_MAX
    hz: int = 250  # CONFIG_HZ: the timer wheel's tick


@dataclass(frozen=True)
class SocketSettings:
    """What the server sets on its accepted socket; ``None`` = not set (kernel default applies)."""

    keepalive: bool
    idle_s: float | None = None  # TCP_KEEPIDLE
    interval_s: float | None = None  # TCP_KEEPINTVL
    count: int | None = None  # TCP_KEEPCNT
    user_timeout_s: float | None = None  # TCP_USER_TIMEOUT; None or 0 = off


@dataclass(frozen=True)
class Effective:
    """The values that will actually govern the socket, after kernel defaults fill the gaps."""

    keepalive: bool
    idle_s: float
    interval_s: float
    count: int
    user_timeout_s: float  # 0 = off
    retries2: int
    rto_min_s: float
    rto_max_s: float
    hz: int
    defaults_used: tuple[str, ...] = ()
    """Names among ``idle``, ``interval``, ``count`` whose value came from the OS."""


def effective(settings: SocketSettings, kernel: KernelDefaults) -> Effective:
    """Merge a socket's own options with the kernel's defaults.

    A keepalive value of 0 counts as not set: the kernel rejects 0 for TCP_KEEPIDLE,
    TCP_KEEPINTVL and TCP_KEEPCNT (EINVAL), and services such as PostgreSQL document 0 as
    "use the OS default", so a 0 can never be what governs the socket.
    Raises ValueError for negative values.
    """
    used: list[str] = []

    def pick(name: str, own: float | None, default: float) -> float:
        if own is not None and own < 0:
            raise ValueError(f"{name} must not be negative, got {own}")
        if own is None or own == 0:
            used.append(name)
            return default
        return own

    idle = pick("idle", settings.idle_s, kernel.keepalive_time_s)
    interval = pick("interval", settings.interval_s, kernel.keepalive_intvl_s)
    count = int(pick("count", settings.count, kernel.keepalive_probes))
    user_timeout = settings.user_timeout_s or 0.0
    if user_timeout < 0:
        raise ValueError(f"user_timeout must not be negative, got {user_timeout}")
    if kernel.hz <= 0 or kernel.rto_min_s <= 0 or kernel.rto_max_s < kernel.rto_min_s:
        raise ValueError(f"implausible kernel timer constants: {kernel}")
    return Effective(
        keepalive=settings.keepalive,
        idle_s=float(idle),
        interval_s=float(interval),
        count=count,
        user_timeout_s=float(user_timeout),
        retries2=kernel.tcp_retries2,
        rto_min_s=kernel.rto_min_s,
        rto_max_s=kernel.rto_max_s,
        hz=kernel.hz,
        defaults_used=tuple(used),
    )


@dataclass(frozen=True)
class Prediction:
    """When the kernel will reclaim the socket, by what, and the arithmetic behind it."""

    reclaim_s: float | None  # from the fault; None = never (nothing will ever fire)
    mechanism: Mechanism
    formula: str  # human text with the numbers
    slack_s: float = 0.0  # how late the kernel timers on the predicted path may fire, in total
    # random loss (packet-loss): reclaim_s is then the earliest possible time, and this the rest
    bound: LossBound | None = None


def retransmission_timeout_s(
    retries2: int, rto_min_s: float = 0.2, rto_max_s: float = 120.0
) -> float:
    """The time ``tcp_retries2`` allows before the kernel gives up on unacknowledged data.

    Linux's ``tcp_model_timeout``: the time ``retries2`` retransmissions would take starting
    at TCP_RTO_MIN and doubling up to TCP_RTO_MAX, whatever the socket's real RTO is.
    15 with 0.2/120 gives 924.6 s.
    """
    if retries2 < 0:
        raise ValueError(f"retries2 must not be negative, got {retries2}")
    # The kernel does this in integer jiffies; whole milliseconds keep it exact in Python
    # (120 // 0.2 is 599.0 in floats, which would make ilog2 wrong).
    rto_min_ms = round(rto_min_s * 1000)
    rto_max_ms = round(rto_max_s * 1000)
    if rto_min_ms <= 0 or rto_max_ms < rto_min_ms:
        raise ValueError(f"implausible RTO bounds: min {rto_min_s} s, max {rto_max_s} s")
    linear_backoff_thresh = (rto_max_ms // rto_min_ms).bit_length() - 1  # ilog2
    if retries2 <= linear_backoff_thresh:
        timeout_ms = ((2 << retries2) - 1) * rto_min_ms
    else:
        timeout_ms = ((2 << linear_backoff_thresh) - 1) * rto_min_ms + (
            retries2 - linear_backoff_thresh
        ) * rto_max_ms
    return timeout_ms / 1000


# The timer wheel (kernel/time/timer.c): 64 buckets a level, each level 8 times coarser.
_LVL_CLK_SHIFT = 3
_LVL_SIZE = 64


def timer_slack_s(delay_s: float, hz: int) -> float:
    """How late a kernel timer armed ``delay_s`` ahead may fire, in seconds.

    The wheel files a timer in the level whose range holds its delay (level 0 below 63
    jiffies, level n from 63 * 8**(n-1) up to 63 * 8**n) and rounds its expiry up to that
    level's granularity, 8**n jiffies, so that it never fires early. That granularity is
    the worst lateness. Very long delays are clamped to the last level (9 levels when
    HZ > 100, else 8), as the kernel does.
    """
    if hz <= 0:
        raise ValueError(f"hz must be positive, got {hz}")
    if delay_s < 0:
        raise ValueError(f"delay must not be negative, got {delay_s}")
    # msecs_to_jiffies rounds up; the margin keeps 2.0 s at HZ 250 from becoming 501 jiffies
    jiffies = math.ceil(delay_s * hz - _EPS)
    depth = 9 if hz > 100 else 8
    level = 0
    while level < depth - 1 and jiffies >= (_LVL_SIZE - 1) << (level * _LVL_CLK_SHIFT):
        level += 1
    return (1 << (level * _LVL_CLK_SHIFT)) / hz


def _clean(value: float) -> float:
    """Drop float noise from sums of timer delays (to the microsecond)."""
    return round(value, 6)


def _value(name: str, value: float, eff: Effective, unit: str = " s") -> str:
    """One named value for a formula, flagged when it came from the OS."""
    note = " (OS default)" if name in eff.defaults_used else ""
    return f"{format_seconds(value)}{unit}{note}"


def predict(
    eff: Effective,
    *,
    activity: Activity,
    peer: Peer,
    last_activity_s: float = 0.0,
    data_sent_s: float = 0.0,
    rto_s: float | None = None,
) -> Prediction:
    """Predict when the kernel reclaims a server socket whose peer died at the fault.

    ``last_activity_s`` is when the server last heard from the peer (idle sockets);
    ``data_sent_s`` is when the server sent the data that is still unacknowledged
    (in-flight sockets); ``rto_s`` is that socket's retransmission timeout at the time
    (defaults to TCP_RTO_MIN, the floor for a short-RTT lab link).
    """
    if activity not in ACTIVITIES:
        raise ValueError(f"activity must be one of {ACTIVITIES}, got {activity!r}")
    if peer not in PEERS:
        raise ValueError(f"peer must be one of {PEERS}, got {peer!r}")
    if activity == "idle":
        if peer == "reset":
            return _idle_reset(eff, last_activity_s)
        return _idle_silent(eff, last_activity_s)
    if peer == "reset":
        # No timer involved: the data segment itself reaches the rebooted host.
        return Prediction(
            reclaim_s=_clean(data_sent_s),
            mechanism="reset",
            formula=(
                f"data sent {format_seconds(data_sent_s)} s: the rebooted peer answers "
                f"that segment with RST = {format_seconds(data_sent_s)} s"
            ),
        )
    rto = eff.rto_min_s if rto_s is None else rto_s
    if rto <= 0:
        raise ValueError(f"rto must be positive, got {rto}")
    # The kernel never lets the RTO grow past TCP_RTO_MAX.
    rto = min(rto, eff.rto_max_s)
    if eff.user_timeout_s > 0:
        return _in_flight_user_timeout(eff, data_sent_s, rto)
    return _in_flight_retransmission(eff, data_sent_s, rto)


def _never_idle(why: str) -> Prediction:
    """Keepalive off on an idle socket: the server sends nothing, so nothing ever fires."""
    return Prediction(reclaim_s=None, mechanism="none",
                      formula=f"never: keepalive is off and the socket is idle, so {why}")


def _idle_reset(eff: Effective, last_activity_s: float) -> Prediction:
    if not eff.keepalive:
        return _never_idle("the server sends nothing for the rebooted peer to answer with RST")
    reclaim = last_activity_s + eff.idle_s
    return Prediction(
        reclaim_s=_clean(reclaim),
        mechanism="reset",
        formula=(
            f"last activity {format_seconds(last_activity_s)} s + idle "
            f"{_value('idle', eff.idle_s, eff)} = {format_seconds(reclaim)} s "
            "(the rebooted peer answers the first keepalive probe with RST)"
        ),
        slack_s=timer_slack_s(eff.idle_s, eff.hz),
    )


def _idle_silent(eff: Effective, last_activity_s: float) -> Prediction:
    if not eff.keepalive:
        return _never_idle("the server sends nothing and cannot learn that the peer is gone")
    head = (
        f"last activity {format_seconds(last_activity_s)} s + idle "
        f"{_value('idle', eff.idle_s, eff)}"
    )
    interval = _value("interval", eff.interval_s, eff)
    if eff.user_timeout_s > 0:
        # tcp_keepalive_timer: with TCP_USER_TIMEOUT the probe count no longer matters; the
        # socket dies at the first firing where the silence has lasted the user timeout and
        # at least one probe went out.
        probes = max(1, math.ceil((eff.user_timeout_s - eff.idle_s) / eff.interval_s - _EPS))
        reclaim = last_activity_s + eff.idle_s + probes * eff.interval_s
        formula = (
            f"{head} + {probes} × interval {interval} = {format_seconds(reclaim)} s "
            f"(TCP_USER_TIMEOUT {format_seconds(eff.user_timeout_s)} s reached at "
            f"probe {probes}; keepalive count ignored)"
        )
    else:
        probes = eff.count
        reclaim = last_activity_s + eff.idle_s + probes * eff.interval_s
        count = f"{probes}{' (OS default)' if 'count' in eff.defaults_used else ''}"
        formula = f"{head} + {count} × interval {interval} = {format_seconds(reclaim)} s"
    # One firing after idle, then one per probe interval up to the one that kills.
    slack = timer_slack_s(eff.idle_s, eff.hz) + probes * timer_slack_s(eff.interval_s, eff.hz)
    return Prediction(
        reclaim_s=_clean(reclaim),
        mechanism="keepalive",
        formula=formula,
        slack_s=_clean(slack),
    )


def _in_flight_user_timeout(eff: Effective, data_sent_s: float, rto: float) -> Prediction:
    # The clock of TCP_USER_TIMEOUT starts at the first retransmission, not at the original
    # send: tcp_retransmit_skb stamps retrans_stamp with the retransmitted skb's (new)
    # timestamp. Measured on Linux 6.18: user timeouts of 2, 3 and 5 s killed at
    # 0.24 s + 2, 3 and 5 s. Every later re-arm is clamped to what is left of the user
    # timeout (tcp_clamp_rto_to_user_timeout), so the kill lands on it exactly.
    ut = eff.user_timeout_s
    first = data_sent_s + rto
    delays = [rto]
    elapsed, current_rto = 0.0, rto
    while elapsed < ut - _EPS:
        current_rto = min(current_rto * 2, eff.rto_max_s)
        delay = min(current_rto, ut - elapsed)
        delays.append(delay)
        elapsed += delay
    reclaim = first + ut
    formula = (
        f"data sent {format_seconds(data_sent_s)} s + first retransmission after RTO "
        f"{format_seconds(rto)} s + TCP_USER_TIMEOUT {format_seconds(ut)} s = "
        f"{format_seconds(reclaim)} s (the user timeout counts from the first retransmission)"
    )
    return Prediction(
        reclaim_s=_clean(reclaim),
        mechanism="user-timeout",
        formula=formula,
        slack_s=_clean(sum(timer_slack_s(d, eff.hz) for d in delays)),
    )


def _in_flight_retransmission(eff: Effective, data_sent_s: float, rto: float) -> Prediction:
    # retransmits_timed_out measures from the first retransmission (retrans_stamp, see
    # above) against tcp_model_timeout's budget, and only when the retransmission timer
    # expires: the kill is the first expiry at or past the budget. tcp(7) calls 924.6 s
    # "a lower bound for the effective timeout" for this reason.
    budget = retransmission_timeout_s(eff.retries2, eff.rto_min_s, eff.rto_max_s)
    first = data_sent_s + rto
    delays = [rto]
    elapsed, current_rto, retransmits = 0.0, rto, 1
    late = 0.0
    # The kernel compares the *actual* elapsed time, and timers fire late by up to their
    # wheel granularity (2 s for a 120 s RTO at HZ 250). Count the mean lateness when
    # deciding which expiry is the first past the budget: at RTO 0.2 s the 15 doublings sum
    # to 924.4 s, a hair under 924.6 s, and in practice the 15th expiry already kills.
    while elapsed + late < budget - _EPS:
        current_rto = min(current_rto * 2, eff.rto_max_s)
        elapsed += current_rto
        late += timer_slack_s(current_rto, eff.hz) / 2
        delays.append(current_rto)
        retransmits += 1
    reclaim = first + elapsed
    formula = (
        f"data sent {format_seconds(data_sent_s)} s + first retransmission after RTO "
        f"{format_seconds(rto)} s + {format_seconds(elapsed)} s of doubling RTOs (up to "
        f"{format_seconds(eff.rto_max_s)} s) = {format_seconds(reclaim)} s: "
        f"{retransmits - 1} retransmissions, then the first timer expiry at or past the "
        f"{format_seconds(budget)} s that tcp_retries2 {eff.retries2} allows, counted from the "
        f"first retransmission"
    )
    return Prediction(
        reclaim_s=_clean(reclaim),
        mechanism="retransmission",
        formula=formula,
        slack_s=_clean(sum(timer_slack_s(d, eff.hz) for d in delays)),
    )


def predict_proxy(effect: ProxyEffect, *, what: str, delay_s: float = 0.0) -> Prediction:
    """The prediction for a proxy-layer fault.

    A userspace proxy terminates TCP on both sides: the server's peer is the proxy's healthy
    kernel. If the proxy merely stops passing data (``holds``), that kernel acknowledges every
    keepalive probe and every retransmission, so no TCP timer on the server ever fires; only
    the proxy closing (``closes``, a FIN) or resetting (``resets``) the connection ends it.
    """
    if effect == "holds":
        return Prediction(
            reclaim_s=None, mechanism="none",
            formula=(f"never by TCP: {what}, but the proxy's kernel acknowledges every keepalive "
                     "probe and retransmission from the server, so no TCP timer fires; only an "
                     "application heartbeat or an idle timeout could reclaim the session"))
    mechanism: Mechanism = "closed" if effect == "closes" else "reset"
    verb = "closes" if effect == "closes" else "resets"
    return Prediction(reclaim_s=_clean(delay_s), mechanism=mechanism,
                      formula=f"{what}: the proxy {verb} the server's connection "
                              f"{format_seconds(delay_s)} s after the fault")


def combine(tcp: Prediction, app: Prediction | None, *, app_first_send_s: float | None,
            tcp_in_flight: Prediction | None = None) -> Prediction:
    """The earlier of the kernel's reclaim and the service's own heartbeat.

    A heartbeat the dead peer never acknowledges is data in flight: from the moment the
    service sends its first one (``app_first_send_s``, from the fault), TCP keepalive can no
    longer fire. So a keepalive prediction only stands if it falls before that moment;
    otherwise the kernel's path is ``tcp_in_flight`` (the retransmission timeout from the first
    heartbeat) and the earlier of it and the heartbeat's own give-up decides. A heartbeat that
    is sent but never gives up (sshd's ClientAliveCountMax 0) still blinds keepalive.
    """
    if app is None:
        return tcp
    blinded = (tcp.mechanism == "keepalive" and app_first_send_s is not None
               and tcp.reclaim_s is not None and tcp.reclaim_s > app_first_send_s)
    if blinded:
        tcp = tcp_in_flight or Prediction(
            reclaim_s=None, mechanism="none",
            formula=f"keepalive cannot fire once the service's heartbeat is in flight at "
                    f"{format_seconds(app_first_send_s or 0.0)} s")
    if app.reclaim_s is None:
        return tcp
    if tcp.reclaim_s is None:
        return app
    return tcp if tcp.reclaim_s <= app.reclaim_s else app
