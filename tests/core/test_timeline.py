"""Outcome of one session from its events."""

from __future__ import annotations

import pytest

from harness.core.timeline import EVENT_KINDS, Event, outcome, sort_events


def keepalive_events() -> list[Event]:
    return [
        Event(-5.0, "opened"),
        Event(-1.0, "last-activity"),
        Event(0.0, "fault", "client-vanish"),
        Event(1.0, "probe", "1"),
        Event(2.0, "probe", "2"),
        Event(3.0, "probe", "3"),
        Event(4.01, "server-error", "timeout"),
        Event(4.02, "socket-gone"),
        Event(4.05, "process-exit"),
    ]


def test_keepalive_with_process_reclaims_when_the_process_exits() -> None:
    result = outcome(keepalive_events(), needs_process=True)
    assert result.reclaimed
    assert result.reclaim_s == 4.05
    assert result.mechanism == "keepalive"


def test_keepalive_without_process_reclaims_when_the_socket_goes() -> None:
    result = outcome(keepalive_events(), needs_process=False)
    assert result.reclaim_s == 4.02
    assert result.mechanism == "keepalive"


def test_process_gone_before_socket_reclaims_at_the_socket() -> None:
    events = [Event(0.0, "fault"), Event(2.0, "process-exit"), Event(3.5, "socket-gone")]
    assert outcome(events, needs_process=True).reclaim_s == 3.5


def test_socket_gone_but_process_alive_is_not_reclaimed_when_process_needed() -> None:
    events = [Event(0.0, "fault"), Event(3.0, "probe", "1"), Event(4.0, "socket-gone")]
    result = outcome(events, needs_process=True)
    assert not result.reclaimed
    assert result.reclaim_s is None
    assert result.mechanism is None


def test_process_exit_alone_is_not_a_reclaim() -> None:
    events = [Event(0.0, "fault"), Event(4.0, "process-exit")]
    assert not outcome(events, needs_process=False).reclaimed
    assert not outcome(events, needs_process=True).reclaimed


def test_nothing_seen_is_not_reclaimed() -> None:
    events = [Event(-1.0, "opened"), Event(0.0, "fault"), Event(1.0, "probe", "1")]
    result = outcome(events, needs_process=False)
    assert (result.reclaimed, result.reclaim_s, result.mechanism) == (False, None, None)


def test_reset_error_means_reset_even_after_a_probe() -> None:
    events = [
        Event(0.0, "fault"),
        Event(2.0, "probe", "1"),
        Event(2.001, "server-error", "reset"),
        Event(2.002, "socket-gone"),
    ]
    result = outcome(events, needs_process=False)
    assert result.mechanism == "reset"
    assert result.reclaim_s == 2.002


def test_reset_error_logged_after_the_socket_went_still_counts() -> None:
    events = [Event(0.0, "fault"), Event(2.0, "socket-gone"), Event(2.01, "server-error", "reset")]
    assert outcome(events, needs_process=False).mechanism == "reset"


def test_retransmissions_then_timeout_is_retransmission() -> None:
    events = [Event(0.0, "fault"), Event(0.0, "data-sent")]
    events += [Event(0.2 * n, "retransmit", str(n)) for n in range(1, 6)]
    events += [Event(924.6, "server-error", "timeout"), Event(924.61, "socket-gone")]
    result = outcome(events, needs_process=False)
    assert result.mechanism == "retransmission"
    assert result.reclaim_s == 924.61


def test_retransmissions_with_user_timeout_set_is_user_timeout() -> None:
    events = [Event(0.0, "data-sent"), Event(0.2, "retransmit", "1"), Event(5.0, "socket-gone")]
    assert outcome(events, needs_process=False, user_timeout_set=True).mechanism == "user-timeout"
    plain = outcome(events, needs_process=False, user_timeout_set=False)
    assert plain.mechanism == "retransmission"


def test_socket_gone_without_evidence_is_closed() -> None:
    events = [Event(0.0, "fault"), Event(0.5, "state", "FIN_WAIT1"), Event(1.0, "socket-gone")]
    result = outcome(events, needs_process=False)
    assert result.reclaimed
    assert result.mechanism == "closed"


def test_probes_before_the_fault_are_not_evidence() -> None:
    # Probes answered by the live peer before the fault do not explain the reclaim.
    events = [Event(-3.0, "probe", "1"), Event(0.0, "fault"), Event(2.0, "socket-gone")]
    assert outcome(events, needs_process=False).mechanism == "closed"


def test_outcome_sorts_events_before_picking_the_first() -> None:
    events = [Event(9.0, "socket-gone"), Event(1.0, "probe", "1"), Event(4.0, "socket-gone")]
    result = outcome(events, needs_process=False)
    assert result.reclaim_s == 4.0
    assert result.mechanism == "keepalive"


def test_sort_events_is_stable_for_equal_times() -> None:
    a = Event(1.0, "probe", "a")
    b = Event(0.5, "fault")
    c = Event(1.0, "probe", "c")
    assert sort_events([a, b, c]) == [b, a, c]
    assert sort_events(iter([c, a])) == [c, a]


def test_event_refuses_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown event kind"):
        Event(0.0, "socket_gone")


def test_event_kinds_are_the_documented_set() -> None:
    assert (
        "opened", "last-activity", "fault", "data-sent", "probe", "retransmit", "state",
        "socket-gone", "socket-released", "process-exit", "server-error", "alive-check", "middlebox-expired",
        "zero-window", "zero-window-probe",
        "reconnect-started", "reconnect-ended",
        *(f"upstream-{k}" for k in ("probe", "retransmit", "state", "socket-gone", "socket-released",
                                     "process-exit", "data-sent", "linked", "pooled", "tier-dropped")),
    ) == EVENT_KINDS


def test_upstream_events_do_not_decide_the_client_legs_outcome() -> None:
    events = [Event(2.0, "upstream-socket-gone"), Event(2.1, "upstream-process-exit")]
    assert outcome(events, needs_process=False).reclaimed is False


def test_a_heartbeat_give_up_names_the_heartbeat_not_its_retransmissions() -> None:
    from harness.core.timeline import Event, outcome

    events = [Event(2.0, "retransmit", "1"), Event(6.0, "server-error", "heartbeat"),
              Event(6.01, "socket-gone"), Event(6.02, "process-exit")]
    assert outcome(events, needs_process=True).mechanism == "heartbeat"


def test_a_socket_no_process_holds_any_more_counts_as_given_back() -> None:
    # websockets aborts a dead connection; the kernel keeps the orphan for ~100 s more
    events = [Event(3.0, "server-error", "heartbeat"), Event(4.0, "socket-released", "FIN_WAIT1"),
              Event(105.0, "socket-gone")]
    out = outcome(events, needs_process=False)
    assert (out.reclaimed, out.reclaim_s, out.mechanism) == (True, 4.0, "heartbeat")
