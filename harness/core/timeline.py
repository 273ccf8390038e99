"""One session's timeline: the observer's events in, the session's outcome out.

The observer (sock_diag, process watching, the service's own views) turns what it sees into
:class:`Event` values stamped in seconds from the fault; :func:`outcome` decides from them
alone whether and when the server reclaimed the session, and what did it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

EVENT_KINDS: tuple[str, ...] = (
    "opened",  # the session was established
    "last-activity",  # the server last heard from the client
    "fault",  # the fault hit this session
    "data-sent",  # the server sent data the client will never acknowledge
    "probe",  # a keepalive probe went out; detail: its number ("1", "2", ...)
    "retransmit",  # a retransmission went out; detail: its number
    "state",  # the server socket changed TCP state; detail: the state name
    "socket-gone",  # the server socket left the kernel's table
    "socket-released",  # no process holds the socket any more (an orphan the kernel still
    # retransmits for, or TIME_WAIT): the server has given it back; detail: the TCP state
    "process-exit",  # the process serving the session exited
    "server-error",  # the service reported an error; detail: "timeout", "reset", "heartbeat" or its text
    "alive-check",  # a query at the end; detail: "ok" or "failed: ..."
    "middlebox-expired",  # the middlebox's conntrack entry of the session's flow expired
    "zero-window",  # the server's persist timer armed: the client's window closed with data waiting
    "zero-window-probe",  # its first zero-window probe (backoff 0 -> 1): TCP_USER_TIMEOUT's clock starts
    "reconnect-started",  # syn-blackhole: the client connects again
    "reconnect-ended",  # ... and the attempt ended; detail: timed-out | connected | failed, and why
)

LEG_KINDS: tuple[str, ...] = (
    "probe", "retransmit", "state", "socket-gone", "socket-released", "process-exit", "data-sent",
    "linked",  # the tier serves a client with this upstream connection
    "pooled",  # the tier keeps the upstream connection idle in its pool
    "tier-dropped",  # the tier no longer lists the upstream connection
)
"""What is seen of a tier's upstream leg (the backend's socket, its process, the tier's own
view); in a session's timeline each is prefixed ``upstream-``."""

UPSTREAM = "upstream-"
EVENT_KINDS = EVENT_KINDS + tuple(UPSTREAM + kind for kind in LEG_KINDS)


@dataclass(frozen=True)
class Event:
    """Something the observer saw about one session, ``t`` seconds from the fault."""

    t: float
    what: str
    detail: str = ""

    def __post_init__(self) -> None:
        # A misspelt kind would silently drop out of outcome(); refuse it where it is made.
        if self.what not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {self.what!r}; expected one of {EVENT_KINDS}")


@dataclass(frozen=True)
class Outcome:
    """Whether and when the server reclaimed a session, and the mechanism its events show."""

    reclaimed: bool
    reclaim_s: float | None
    # reset | user-timeout | retransmission | keepalive | closed; None while still held
    mechanism: str | None


def sort_events(events: Iterable[Event]) -> list[Event]:
    """Events in time order; events at the same ``t`` keep the order they were seen in."""
    return sorted(events, key=lambda event: event.t)


def _first(events: Sequence[Event], what: str) -> float | None:
    return next((event.t for event in events if event.what == what), None)


def outcome(
    events: Sequence[Event], *, needs_process: bool, user_timeout_set: bool = False,
    zero_window: bool = False,
) -> Outcome:
    """Decide a session's outcome from its events.

    Reclaim is the first moment the server holds neither the socket (gone from the table, or
    held by no process any more: ``socket-released``) nor, when
    ``needs_process`` (a backend or child process per session), the session's process:
    the later of the first ``socket-gone`` and the first ``process-exit``. A process that
    exited while its socket stays in the table is not a reclaim.

    The mechanism comes from evidence at or after the fault only: probes and
    retransmissions before it were answered by a live peer and explain nothing. Under
    ``zero_window`` (slow-reader) the probes are the persist timer's, not keepalive's, and a
    timeout the service reports is TCP_USER_TIMEOUT's.
    """
    ordered = sort_events(events)
    gone_at = [t for t in (_first(ordered, "socket-gone"), _first(ordered, "socket-released"))
               if t is not None]
    socket_gone = min(gone_at) if gone_at else None
    if socket_gone is None:
        return Outcome(reclaimed=False, reclaim_s=None, mechanism=None)
    reclaim = socket_gone
    if needs_process:
        process_exit = _first(ordered, "process-exit")
        if process_exit is None:
            return Outcome(reclaimed=False, reclaim_s=None, mechanism=None)
        reclaim = max(socket_gone, process_exit)

    after = [event for event in ordered if event.t >= 0]
    errors = {event.detail.strip().lower() for event in after if event.what == "server-error"}
    retransmits = any(event.what == "retransmit" for event in after)
    probes = any(event.what == "probe" for event in after)
    mechanism: str
    if "reset" in errors:
        mechanism = "reset"
    elif "heartbeat" in errors:
        # The service's own heartbeat (ssh ClientAlive, WebSocket ping) gave up; its
        # unanswered heartbeats show up as retransmissions, which did not decide it.
        mechanism = "heartbeat"
    elif retransmits:
        mechanism = "user-timeout" if user_timeout_set else "retransmission"
    elif zero_window and (probes or "timeout" in errors):
        mechanism = "user-timeout" if user_timeout_set else "zero-window"
    elif probes:
        mechanism = "keepalive"
    else:
        # Gone with no timer evidence: the service or the client closed it.
        mechanism = "closed"
    return Outcome(reclaimed=True, reclaim_s=reclaim, mechanism=mechanism)
