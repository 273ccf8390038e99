"""What a grpcio server does to a stream whose client went silent, in numbers.

Pure arithmetic over grpc-core's chttp2 keepalive (grpcio 1.85: ``chttp2_transport.cc``
``init_keepalive_ping_locked`` / ``finish_keepalive_ping_locked``, ``writing.cc``
``grpc_chttp2_end_write``, ``ping_rate_policy.cc``, and the posix socket options'
``SetSocketTcpUserTimeout``) and, where the kernel takes over, over
:mod:`harness.core.prediction`. Times are float seconds from the fault; nothing here reads
the machine or the clock.

What the source says, and what the measurements (the reference server's own trace of every
ping it sends and every ack it gets, GRPC_TRACE=http_keepalive, and sock_diag every 10 ms
in the lab) confirmed:

- **The ping clock is the last byte read.** The keepalive timer is armed for
  ``grpc.keepalive_time_ms`` when the transport starts, re-armed by every read while it
  waits, and after a ping's ack. On a stream where the client sends nothing the only reads
  are the acks, so ping k+1 goes out ``keepalive_time`` after ping k's ack: measured 1.0015-
  1.003 s after the ack for 1 s (``PERIOD_LATENESS_S``). The first ping after the fault is
  therefore ``last read + keepalive_time`` (the socket's last data received), whatever the
  open time. An open stream is a call, so ``grpc.keepalive_permit_without_calls`` does not
  matter here; and the server ignores ``grpc.http2.max_pings_without_data`` (the rate
  policy takes it for clients only: measured, 2 set on the server, its pings never stopped
  on an idle stream, its debug line says ``max_pings_without_data: 0``).
- **``keepalive_timeout_ms`` is not the ack timer.** grpc-core 1.85 waits for a ping's ack
  for ``grpc.http2.ping_timeout_ms`` (60 s by default); the separate keepalive timer in
  ``grpc_chttp2_end_write`` is guarded by ``keepalive_ping_timeout_handle != kInvalid``,
  which never holds, so it is never armed. Measured with a client stopped by SIGSTOP (its
  kernel ACKs, its gRPC never does): keepalive 1 s / timeout 1 s kept the connection 8 s
  without a close; with ``ping_timeout_ms`` 1500 the server sent GOAWAY "ping_timeout" and
  closed 1.502 s after the ping.
- **It becomes TCP_USER_TIMEOUT instead.** The server sets TCP_USER_TIMEOUT on every
  accepted socket (enabled by default on servers, 20 s; ``keepalive_time_ms`` INT_MAX turns it
  off; ``keepalive_timeout_ms`` above 0 is its value). Against a *vanished* client the
  unanswered ping is data in flight: the kernel first re-sends it as a tail loss probe (not
  counted), the counted retransmissions start one RTO later, and TCP_USER_TIMEOUT ends the
  connection that long after the first of them (``harness.core.prediction``): grpc reads the
  error and closes. So against a blackhole, keepalive_timeout_ms does end the stream, in the
  kernel, about 0.42 s + keepalive_timeout after the ping; against a client whose kernel
  still answers, only ping_timeout does.
- **Which comes first decides the reclaim**: ``min(ping + ping_timeout, first
  retransmission + TCP_USER_TIMEOUT)``. A ping-timeout close leaves the socket with its GOAWAY
  unacknowledged: the kernel keeps it as an orphan (inode 0) that the observer counts as
  released at the close.
- **Keepalive left at its default** (2 h) sends nothing on an idle stream for 2 hours: a
  blackholed client is held that long, then about 20 s more (the ping, then TCP_USER_TIMEOUT
  20 s). Data in flight at the fault is ended by TCP_USER_TIMEOUT (20 s by default) from its
  first retransmission.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.core.prediction import (
    KernelDefaults,
    Prediction,
    SocketSettings,
    effective,
    format_seconds,
    predict,
)

GRPC_DEFAULT_SERVER_KEEPALIVE_TIME_S = 7200.0
GRPC_DEFAULT_KEEPALIVE_TIMEOUT_S = 20.0
GRPC_DEFAULT_PING_TIMEOUT_S = 60.0
GRPC_DEFAULT_SERVER_USER_TIMEOUT_S = 20.0
INT_MAX_MS = 2**31 - 1
"""``grpc.keepalive_time_ms`` INT_MAX is grpc's "infinite": no pings, no TCP_USER_TIMEOUT."""

PERIOD_LATENESS_S = 0.0
"""How much later than ``keepalive_time`` after the last read a ping goes out, counted from
the socket's own last receive as sock_diag gives it: measured -2.5 to +1.2 ms (mean -0.7 ms;
the socket's stamp is in jiffies, 4 ms at HZ 250). grpc's own trace puts the ping 1.5-3 ms
after the ack it read."""
PERIOD_SPREAD_S = 0.004
CLOSE_LATENESS_S = 0.002
"""The close after a ping timeout, past the timer: measured 1.500-1.502 s after the ping for
1.5 s."""
ERROR_LATENESS_S = 0.02
"""The socket leaving the table after TCP_USER_TIMEOUT, past the kernel's deadline (its timer
at HZ 250, then grpc reading the error and closing): measured 10-30 ms."""
LONE_SEGMENT_PROBE_S = 0.22
"""A ping alone in flight is first re-sent as a tail loss probe about 200 ms later, which
the kernel does not count as a retransmission (see ``harness.core.websocket``); the first
counted one came 0.424-0.428 s after the ping in the lab (RTO 0.2 s): 0.22 s + one RTO."""


@dataclass(frozen=True)
class KeepaliveSettings:
    """A grpcio server's keepalive, in seconds; ``time_s`` None = keepalive off (INT_MAX)."""

    time_s: float | None = GRPC_DEFAULT_SERVER_KEEPALIVE_TIME_S
    timeout_s: float = GRPC_DEFAULT_KEEPALIVE_TIMEOUT_S
    ping_timeout_s: float = GRPC_DEFAULT_PING_TIMEOUT_S
    time_set: bool = False
    """Whether ``grpc.keepalive_time_ms`` was given (only then does it decide TCP_USER_TIMEOUT)."""

    def __post_init__(self) -> None:
        if self.time_s is not None and self.time_s <= 0:
            raise ValueError(f"time_s must be positive or None (off), got {self.time_s}")
        if self.timeout_s < 0 or self.ping_timeout_s < 0:
            raise ValueError("timeouts must not be negative")

    @property
    def user_timeout_s(self) -> float | None:
        """The TCP_USER_TIMEOUT grpc sets on the server's accepted sockets; None = not set."""
        if self.time_set and self.time_s is None:
            return None
        return self.timeout_s if self.timeout_s > 0 else GRPC_DEFAULT_SERVER_USER_TIMEOUT_S

    @classmethod
    def from_args(cls, args: dict[str, int]) -> KeepaliveSettings:
        """From the channel arguments (milliseconds), grpc-core's defaults for the rest."""
        time_ms = args.get("grpc.keepalive_time_ms")
        timeout_ms = args.get("grpc.keepalive_timeout_ms")
        ping_ms = args.get("grpc.http2.ping_timeout_ms")
        return cls(time_s=GRPC_DEFAULT_SERVER_KEEPALIVE_TIME_S if time_ms is None
                   else None if time_ms >= INT_MAX_MS else time_ms / 1000,
                   timeout_s=GRPC_DEFAULT_KEEPALIVE_TIMEOUT_S if timeout_ms is None else timeout_ms / 1000,
                   ping_timeout_s=GRPC_DEFAULT_PING_TIMEOUT_S if ping_ms is None else ping_ms / 1000,
                   time_set=time_ms is not None)

    def socket_settings(self) -> SocketSettings:
        """What grpc sets on the accepted sockets: no TCP keepalive, its TCP_USER_TIMEOUT."""
        return SocketSettings(keepalive=False, user_timeout_s=self.user_timeout_s)


def first_ping_after(last_read_s: float, time_s: float) -> tuple[int, float]:
    """The first keepalive ping at or after the fault: (its number k counted from the last
    read, its time). Ping k goes out ``k × (keepalive_time + PERIOD_LATENESS_S)`` after it."""
    if time_s <= 0:
        raise ValueError(f"keepalive time must be positive, got {time_s}")
    period = time_s + PERIOD_LATENESS_S
    k = max(1, math.floor(-last_read_s / period) + 1) if last_read_s < 0 else 1
    return k, last_read_s + k * period


def _s(value: float) -> str:
    return f"{format_seconds(value)} s"


def predict_heartbeat(settings: KeepaliveSettings, *, last_read_s: float,
                      in_flight_since_s: float | None = None, kernel: KernelDefaults | None = None,
                      rto_s: float | None = None,
                      peer_kernel_answers: bool = False) -> tuple[Prediction | None, float | None]:
    """When the server lets go of a stream whose client went silent at 0, and when its first
    unanswered ping goes out; ``(None, None)`` with keepalive off (a socket with data in
    flight is then the kernel's alone: ``socket_settings`` carries its TCP_USER_TIMEOUT).

    ``peer_kernel_answers``: something still acknowledges the server's segments (a proxy that
    stalled, a client process that stopped): no retransmission, so TCP_USER_TIMEOUT never
    fires and only the ping timeout ends the stream."""
    if settings.time_s is None:
        return None, None
    kernel = kernel or KernelDefaults()
    k, ping = first_ping_after(last_read_s, settings.time_s)
    steps = (f"first keepalive ping after the fault: last read {_s(last_read_s)} + {k} × "
             f"keepalive_time {_s(settings.time_s)} = {_s(ping)}")
    app = ping + settings.ping_timeout_s + CLOSE_LATENESS_S
    app_text = (f"no ack: + ping_timeout {_s(settings.ping_timeout_s)} (grpc.http2.ping_timeout_ms;"
                f" keepalive_timeout_ms is not the ack timer in grpc-core 1.85) = {_s(app)}: GOAWAY"
                f" \"ping_timeout\" and close")
    ut = settings.user_timeout_s
    slack = PERIOD_SPREAD_S + k * 0.001 + CLOSE_LATENESS_S
    if ut is None or peer_kernel_answers:
        why = ("" if ut is None else "; the peer's kernel (or a proxy's) acknowledges the ping, so"
               f" TCP_USER_TIMEOUT {_s(ut)} never fires")
        return Prediction(reclaim_s=round(app, 6), mechanism="heartbeat",
                          formula=f"{steps}{why}; {app_text}", slack_s=round(slack, 6)), ping
    sent, why = ping + LONE_SEGMENT_PROBE_S, (f"the ping's tail loss probe {_s(LONE_SEGMENT_PROBE_S)}"
                                               f" after it")
    if in_flight_since_s is not None and in_flight_since_s < ping:
        sent, why = in_flight_since_s, f"the data sent at {_s(in_flight_since_s)}"
    held = predict(effective(SocketSettings(keepalive=False, user_timeout_s=ut), kernel),
                   activity="in-flight", peer="silent", data_sent_s=sent, rto_s=rto_s)
    assert held.reclaim_s is not None
    gone = held.reclaim_s + ERROR_LATENESS_S
    rto = kernel.rto_min_s if rto_s is None else rto_s
    kernel_text = (f"TCP_USER_TIMEOUT {_s(ut)} (grpc sets keepalive_timeout_ms, default 20 s, on"
                   f" its sockets) after the first retransmission at {_s(sent + rto)} ({why},"
                   f" then one RTO {_s(rto)}) = {_s(held.reclaim_s)}, + {_s(ERROR_LATENESS_S)} for grpc"
                   f" to read the error and close = {_s(gone)}")
    if gone <= app:
        return Prediction(
            reclaim_s=round(gone, 6), mechanism="user-timeout",
            formula=f"{steps}; the kernel ends it first: {kernel_text}; grpc reads the error and"
                    f" closes (its own ping timeout {_s(settings.ping_timeout_s)}, at {_s(app)},"
                    f" would come later)",
            slack_s=round(PERIOD_SPREAD_S + k * 0.001 + held.slack_s + ERROR_LATENESS_S, 6)), ping
    return Prediction(
        reclaim_s=round(app, 6), mechanism="heartbeat",
        formula=f"{steps}; {app_text}, before the kernel would ({kernel_text})",
        slack_s=round(slack, 6)), ping
