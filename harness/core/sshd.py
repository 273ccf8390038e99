"""When OpenSSH's sshd gives up on a silent client: the ClientAlive arithmetic, as measured.

Pure: sshd's settings arrive as values (the scenario's, as sshd reads them) and times as
float seconds counted from the fault; nothing here reads the machine.

sshd_config(5) says ClientAliveCountMax keepalives are sent ClientAliveInterval apart and the
client is disconnected when they go unanswered: "ClientAliveInterval 15 and the default
ClientAliveCountMax [3] ... disconnected after approximately 45 seconds" (Interval × CountMax).
Debian's OpenSSH 9.2p1 does not do that. Its session loop (serverloop.c,
``wait_until_can_do_something``) checks only when ``ppoll`` has waited a whole interval with
nothing happening, and then only if ``now > last_client_time + interval`` in *whole seconds*
(``monotime()``, CLOCK_BOOTTIME), where ``last_client_time`` is when it last read from the
client or sent a keepalive. So:

- a check comes 2 intervals after the previous one, not 1: one interval after a check is
  exactly ``interval`` whole seconds later, not more, so that timeout is "not yet due";
- the first check of an idle session likewise comes 2 intervals after its last activity
  (1 interval only when the last read and the loop's last wake-up, a few ms apart, fall in
  different whole seconds of that clock: a few times in a thousand);
- the checks send CountMax keepalives and the next check disconnects ("Timeout, client not
  responding"), so the disconnect is (CountMax + 1) checks after the start;
- anything that wakes the loop restarts its wait: data the server sends (``activity:
  in-flight``) is not client activity, so the first check comes one interval after it;
- the keepalives are themselves data the dead client never acknowledges: from the first one
  on, TCP keepalive cannot fire (see ``harness.core.prediction.combine``).

Measured in the lab with Debian's OpenSSH 9.2p1 (blackhole; the disconnect is the
per-connection sshd process exiting, "last" is when the server last read from the client,
"sent" is when it sent the data still in flight), against the man page's Interval × CountMax:

====================  ========================  ==================  ==============
Interval, CountMax    keepalives sent at         disconnect          man page says
====================  ========================  ==================  ==============
1 s, 1 (idle)         last + 2.0 s               last + 4.0 s        1 s
1 s, 3 (idle)         last + 2.0, 4.0, 6.0 s     last + 8.0 s        3 s
2 s, 2 (idle)         last + 4.0, 8.0 s          last + 12.0 s       4 s
3 s, 1 (idle)         last + 6.0 s               last + 12.0 s       3 s
5 s, 1 (idle)         last + 10.0 s              last + 20.0 s       5 s
2 s, 2 (in flight)    sent + 2.0, 6.0 s          sent + 10.0 s       4 s
3 s, 1 (in flight)    sent + 3.0 s               sent + 9.0 s        3 s
====================  ========================  ==================  ==============

Each check ran 1-5 ms after its whole interval. Through the runner (5 sessions, Interval 2 s,
CountMax 2, client-vanish) the sshd processes exited 10.97-11.00 s after the fault against
predictions of 11.01-11.03 s: the runner's "last activity" is the client's last ACK, which a
delayed ACK puts up to 40 ms after the data sshd read, so the prediction is that much late.
A proxy stall is no different (the proxy's kernel acknowledges the keepalives, but no answer
comes back): Interval 1 s, CountMax 2 gave last + 5.96-5.97 s. ClientAliveCountMax 0 sends
the keepalives but never disconnects.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from harness.core.prediction import Prediction, format_seconds

Scalar = str | int | float | bool

DEFAULT_COUNT_MAX = 3
"""sshd's ClientAliveCountMax when not set."""

# sshd_config(5), TIME FORMATS: a sequence of time[qualifier]; no qualifier means seconds.
_TIME_PART = re.compile(r"(\d+)([sSmMhHdDwW]?)")
_TIME_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def sshd_seconds(value: Scalar) -> int:
    """An sshd time value (``15``, ``90s``, ``1m30s``) in whole seconds, as sshd reads it.

    Raises ValueError for what sshd refuses ("invalid time value").
    """
    # sshd reads text: YAML's 3.0 arrives as "3.0", which it refuses like any other fraction
    if isinstance(value, (bool, float)) or (isinstance(value, int) and value < 0):
        raise ValueError(f"invalid time value {value!r}")
    if isinstance(value, int):
        return value
    text = value.strip()
    if not text:
        raise ValueError("invalid time value ''")
    total, pos = 0, 0
    while pos < len(text):
        m = _TIME_PART.match(text, pos)
        if not m:
            raise ValueError(f"invalid time value {value!r}")
        total += int(m.group(1)) * _TIME_UNITS[m.group(2).lower()]
        pos = m.end()
    return total


def sshd_flag(value: Scalar) -> bool:
    """An sshd yes/no value (YAML's yes/no/true/false arrive as booleans)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text == "yes":
        return True
    if text == "no":
        return False
    raise ValueError(f"expected yes or no; got {value!r}")


def setting(settings: Mapping[str, Scalar], name: str) -> Scalar | None:
    """A setting by sshd's case-insensitive option name, or None when not set."""
    wanted = name.lower()
    return next((v for k, v in settings.items() if k.lower() == wanted), None)


def tcp_keepalive(settings: Mapping[str, Scalar]) -> bool:
    """``TCPKeepAlive`` (default yes): whether sshd sets SO_KEEPALIVE on the connection."""
    value = setting(settings, "TCPKeepAlive")
    return True if value is None else sshd_flag(value)


@dataclass(frozen=True)
class ClientAlive:
    """sshd's own heartbeat: ``ClientAliveInterval`` (0 = off) and ``ClientAliveCountMax``
    (0 = keepalives are sent but never disconnect)."""

    interval_s: int = 0
    count_max: int = DEFAULT_COUNT_MAX

    def __post_init__(self) -> None:
        if self.interval_s < 0 or self.count_max < 0:
            raise ValueError(f"ClientAlive values must not be negative: {self}")

    @classmethod
    def from_settings(cls, settings: Mapping[str, Scalar]) -> ClientAlive:
        interval = setting(settings, "ClientAliveInterval")
        count = setting(settings, "ClientAliveCountMax")
        if isinstance(count, bool) or (count is not None and not str(count).strip().isdigit()):
            raise ValueError(f"ClientAliveCountMax: expected a whole number; got {count!r}")
        return cls(interval_s=0 if interval is None else sshd_seconds(interval),
                   count_max=DEFAULT_COUNT_MAX if count is None else int(str(count)))


def first_check_s(alive: ClientAlive, *, last_heard_s: float, last_wake_s: float | None = None) -> float:
    """When the first ClientAlive check runs (from the fault).

    ``last_heard_s``: when sshd last read from the client. ``last_wake_s``: the last thing
    that woke its loop since (data it sent); left out for an idle session. The timeout one
    interval after the wake-up is due only if the wake-up fell in a later whole second than
    the last hearing; which second is not known here, so a gap of half a second or more
    counts as later (certain from 1 s on, as with a hold of 1 s before in-flight data).
    """
    wake, due_at_once = _wake(last_heard_s, last_wake_s)
    return wake + (1 if due_at_once else 2) * alive.interval_s


def _wake(last_heard_s: float, last_wake_s: float | None) -> tuple[float, bool]:
    wake = last_heard_s if last_wake_s is None else max(last_wake_s, last_heard_s)
    return wake, wake - last_heard_s >= 0.5


def client_alive(alive: ClientAlive, *, last_heard_s: float,
                 last_wake_s: float | None = None) -> tuple[Prediction | None, float | None]:
    """ClientAlive's reclaim of a session whose client went silent, and when its first
    keepalive goes out (seconds from the fault); ``(None, None)`` when it is off."""
    if alive.interval_s <= 0:
        return None, None
    interval = alive.interval_s
    first = first_check_s(alive, last_heard_s=last_heard_s, last_wake_s=last_wake_s)
    every = 2 * interval
    if alive.count_max == 0:
        return (Prediction(reclaim_s=None, mechanism="none",
                           formula=(f"never by ClientAlive: ClientAliveCountMax 0 sends a keepalive"
                                    f" every {format_seconds(every)} s from {format_seconds(first)} s"
                                    " but never disconnects")),
                first)
    reclaim = first + alive.count_max * every
    wake, due_at_once = _wake(last_heard_s, last_wake_s)
    start = (f"data sent {format_seconds(wake)} s + ClientAliveInterval {interval} s" if due_at_once
             else f"last activity {format_seconds(wake)} s + 2 × ClientAliveInterval {interval} s")
    formula = (f"{start} (first check) + ClientAliveCountMax {alive.count_max} × 2 × {interval} s"
               f" = {format_seconds(reclaim)} s: sshd checks only after a quiet interval that is"
               f" due in whole seconds, so every 2nd interval; {alive.count_max} keepalive(s), then"
               f" disconnect (the man page's Interval × CountMax says"
               f" {format_seconds(interval * alive.count_max)} s)")
    return Prediction(reclaim_s=round(reclaim, 6), mechanism="heartbeat", formula=formula), first
