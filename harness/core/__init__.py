"""Pure logic with no I/O: prediction maths, per-session timelines, verdicts, statistics.

Adapters (lab, observe, targets) feed these with plain values; nothing here touches a
socket, a file, a process or the clock, so all of it is tested with plain values.
"""

from harness.core.prediction import (
    Activity,
    Effective,
    KernelDefaults,
    Mechanism,
    Peer,
    Prediction,
    SocketSettings,
    effective,
    format_seconds,
    predict,
    retransmission_timeout_s,
    timer_slack_s,
)
from harness.core.records import SessionRecord
from harness.core.stats import percentile, summarize
from harness.core.timeline import EVENT_KINDS, Event, Outcome, outcome, sort_events
from harness.core.verdict import Expectations, Verdict, judge

__all__ = [
    "EVENT_KINDS",
    "Activity",
    "Effective",
    "Event",
    "Expectations",
    "KernelDefaults",
    "Mechanism",
    "Outcome",
    "Peer",
    "Prediction",
    "SessionRecord",
    "SocketSettings",
    "Verdict",
    "effective",
    "format_seconds",
    "judge",
    "outcome",
    "percentile",
    "predict",
    "retransmission_timeout_s",
    "sort_events",
    "summarize",
    "timer_slack_s",
]
