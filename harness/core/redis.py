"""What Redis does to a client that went silent: its TCP keepalive and its idle ``timeout``.

Pure: Redis's settings arrive as values (the scenario's, as redis.conf reads them) and times
as float seconds from the fault; nothing here reads the machine. Both mechanisms are
predicted and the earlier wins.

**tcp-keepalive N** (default 300; 0 = off). ``anetKeepAlive`` (src/anet.c), called for every
accepted client, sets SO_KEEPALIVE, TCP_KEEPIDLE N, TCP_KEEPINTVL N/3 (integer division, at
least 1) and TCP_KEEPCNT 3: a silent client is dead to the kernel at
``last activity + N + 3 × max(1, N // 3)``, about 2 N. The kernel then drops the socket and
Redis reads the error ("Reading from client: Connection timed out").

**timeout T** (default 0 = off). ``clientsCronHandleTimeout`` (src/timeout.c) closes a client
when ``now_ms / 1000 - c->lastinteraction > T``, both in *whole seconds* of the wall clock
(``lastinteraction`` is ``server.unixtime`` when Redis last read from the client; Pub/Sub,
blocked and replica clients are exempt). So the close is due at the start of the wall-clock
second ``floor(last) + T + 1``: between T and T + 1 s after the last activity, depending on
where in its second that fell. The check runs in ``clientsCron`` (src/server.c), called by
``serverCron`` ``hz`` times a second (default 10), which visits at most
``max(5, clients / hz)`` clients a call (all of them below 5), rotating through the list: a
client is looked at once every ``ceil(clients / visited) / hz`` seconds, so the close comes
up to that much after it is due. Redis closes the socket at once; the dead client never
acknowledges the FIN, so the kernel keeps it as an orphan (FIN_WAIT1, no descriptor): the
server has let go, which the observer counts as the reclaim.

Measured on this machine (Debian's redis-server 7.0.15, Linux, lab namespaces, blackhole;
reclaim counted from the last activity; ``frac`` is where in its wall-clock second the last
activity fell):

======================  ===================================  =========================
settings                predicted                            measured
======================  ===================================  =========================
tcp-keepalive 2         2 + 3 × 1 = 5 s (socket gone)        5.06-5.07 s (runs, local
                                                             and docker)
tcp-keepalive 3         3 + 3 × 1 = 6 s                      6.142 s (a 3 s timer sits
                                                             in the wheel's 256 ms level)
timeout 2 (frac 0.30)   2 + 0.70 + cron 0-0.1 = 2.70-2.80 s  2.769 s (loopback)
timeout 2 (runs)        the cron tick after the due second   within 0.02 s of it, local
                                                             and docker
timeout 1 (frac 0.34)   1 + 0.66 + cron = 1.66-1.76 s        1.679 s
======================  ===================================  =========================

The socket options were read back from the server's own accepted socket (tests/targets/
test_redis.py): tcp-keepalive 3 gives TCP_KEEPIDLE 3, TCP_KEEPINTVL 1, TCP_KEEPCNT 3;
tcp-keepalive 10 gives 10, 3, 3.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from harness.core.prediction import Prediction, SocketSettings, format_seconds

Scalar = str | int | float | bool

DEFAULT_TCP_KEEPALIVE_S = 300
"""Redis's ``tcp-keepalive`` when not set (since 3.2.1)."""
DEFAULT_HZ = 10
KEEPALIVE_COUNT = 3
"""anetKeepAlive's TCP_KEEPCNT."""
CRON_MIN_ITERATIONS = 5
"""CLIENTS_CRON_MIN_ITERATIONS: clientsCron visits at least this many clients a call."""
MAX_CLIENTS_PER_CLOCK_TICK = 200
CONFIG_MAX_HZ = 500
CONFIG_MIN_HZ = 1


def _int(name: str, value: Scalar | None, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, (bool, float)):
        raise ValueError(f"{name}: expected a whole number; got {value!r}")
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"{name}: expected a whole number; got {value!r}") from None


def _flag(name: str, value: Scalar | None, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("yes", "no"):
        return text == "yes"
    raise ValueError(f"{name}: expected yes or no; got {value!r}")


def setting(settings: Mapping[str, Scalar], name: str) -> Scalar | None:
    """A directive by Redis's case-insensitive name, or None when not set."""
    return next((v for k, v in settings.items() if k.lower() == name), None)


@dataclass(frozen=True)
class RedisSettings:
    """The directives that decide reclaim, as redis-server uses them."""

    tcp_keepalive_s: int = DEFAULT_TCP_KEEPALIVE_S   # 0: off
    timeout_s: int = 0                               # 0: off
    hz: int = DEFAULT_HZ
    dynamic_hz: bool = True

    @classmethod
    def of(cls, settings: Mapping[str, Scalar]) -> RedisSettings:
        """From the scenario's settings; ValueError for values Redis would refuse."""
        hz = _int("hz", setting(settings, "hz"), DEFAULT_HZ)
        return cls(tcp_keepalive_s=_int("tcp-keepalive", setting(settings, "tcp-keepalive"),
                                        DEFAULT_TCP_KEEPALIVE_S),
                   timeout_s=_int("timeout", setting(settings, "timeout"), 0),
                   hz=min(max(hz, CONFIG_MIN_HZ), CONFIG_MAX_HZ),   # Redis clamps hz too
                   dynamic_hz=_flag("dynamic-hz", setting(settings, "dynamic-hz"), True))


def keepalive_options(tcp_keepalive_s: int) -> tuple[int, int, int] | None:
    """(TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT) that anetKeepAlive sets; None when off."""
    if tcp_keepalive_s <= 0:
        return None
    return tcp_keepalive_s, max(1, tcp_keepalive_s // 3), KEEPALIVE_COUNT


def socket_settings(s: RedisSettings) -> SocketSettings:
    """What Redis sets on every accepted client socket."""
    options = keepalive_options(s.tcp_keepalive_s)
    if options is None:
        return SocketSettings(keepalive=False)
    idle, interval, count = options
    return SocketSettings(keepalive=True, idle_s=float(idle), interval_s=float(interval), count=count)


def effective_hz(s: RedisSettings, clients: int) -> int:
    """serverCron's rate: ``hz``, doubled (dynamic-hz) while clients / hz > 200."""
    hz = s.hz
    if s.dynamic_hz:
        while clients // hz > MAX_CLIENTS_PER_CLOCK_TICK:
            hz *= 2
            if hz > CONFIG_MAX_HZ:
                return CONFIG_MAX_HZ
    return hz


def visit_period_s(s: RedisSettings, clients: int) -> float:
    """How often clientsCron looks at one given client: it visits ``max(5, clients / hz)``
    clients a call (all of them when fewer than 5), rotating through the list."""
    clients = max(1, clients)
    hz = effective_hz(s, clients)
    visited = clients // hz
    if visited < CRON_MIN_ITERATIONS:
        visited = min(clients, CRON_MIN_ITERATIONS)
    return math.ceil(clients / visited) / hz


def idle_close(s: RedisSettings, *, last_activity_s: float, clients: int,
               fault_wall: float | None = None) -> Prediction | None:
    """Redis's ``timeout`` closing a client silent since ``last_activity_s`` (from the fault);
    None when it is off. ``fault_wall`` (time.time() of the fault) places the last activity
    in its wall-clock second; without it (``connchaos explain``) the prediction is the middle
    of the one-second window, with half a second of slack each way."""
    if s.timeout_s <= 0:
        return None
    period = visit_period_s(s, clients)
    cron = (f"+ up to {format_seconds(period)} s for clientsCron to visit it ({clients} clients,"
            f" hz {effective_hz(s, clients)}), half of it on average")
    if fault_wall is None:
        at = last_activity_s + s.timeout_s + 0.5 + period / 2
        formula = (f"last activity {format_seconds(last_activity_s)} s + timeout {s.timeout_s} s"
                   f" + 0-1 s to the next whole wall-clock second (Redis compares whole seconds:"
                   f" closed once now - lastinteraction > {s.timeout_s}), 0.5 s on average, {cron}"
                   f" = {format_seconds(at)} s ± {format_seconds(0.5 + period / 2)} s")
        return Prediction(reclaim_s=round(at, 6), mechanism="heartbeat", formula=formula,
                          slack_s=round(0.5 + period / 2, 6))
    last_wall = fault_wall + last_activity_s
    due = math.floor(last_wall) + s.timeout_s + 1 - fault_wall
    at = due + period / 2
    formula = (f"last activity {format_seconds(last_activity_s)} s ({format_seconds(last_wall % 1)} s"
               f" into its wall-clock second) + timeout {s.timeout_s} s + the rest of that second"
               f" {format_seconds(1 - last_wall % 1)} s = {format_seconds(due)} s (Redis compares"
               f" whole seconds: closed once now - lastinteraction > {s.timeout_s}), {cron}"
               f" = {format_seconds(at)} s")
    return Prediction(reclaim_s=round(at, 6), mechanism="heartbeat", formula=formula,
                      slack_s=round(period / 2, 6))
