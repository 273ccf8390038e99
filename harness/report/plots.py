"""The HTML report's two plots per scenario, drawn with matplotlib and returned as inline SVG.

- ``distribution``: when the faulted sessions were reclaimed (an empirical CDF with a rug of
  every session), the prediction and the gate drawn in, the never-reclaimed at the deadline.
- ``timeline``: one lane per session (capped) with its events, so the mechanism shows: probes
  then a reclaim is keepalive, retransmissions then a reclaim is a retransmission timeout.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot: no global state, no GUI
backend) and written as SVG with text kept as text, so the page is searchable and crisp.
Large runs stay cheap: a fixed number of lanes, one scatter call per event kind, and point
clouds above ``RASTER_ABOVE`` points rasterized inside the SVG.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # never a GUI backend, whatever the environment says

from matplotlib.figure import Figure  # noqa: E402

from harness.core.records import ScenarioRecord, SessionRecord  # noqa: E402

MAX_LANES = 40
RASTER_ABOVE = 2000

PREDICTED = "#1f5fbf"
GATE = "#c0392b"
HELD = "#d98c00"

# event kind -> (legend label, marker, colour, size); kinds not listed are drawn as "other"
EVENT_STYLE: dict[str, tuple[str, str, str, float]] = {
    "opened": ("opened", "|", "#444444", 90),
    "last-activity": ("last activity", "o", "#888888", 22),
    "data-sent": ("data sent (unacked)", "^", "#8e44ad", 30),
    "probe": ("keepalive probe", "o", "#2e86c1", 14),
    "retransmit": ("retransmission", "o", "#e67e22", 14),
    "state": ("TCP state change", "+", "#555555", 30),
    "server-error": ("server logged the end", "X", "#c0392b", 40),
    "process-exit": ("session process exited", "s", "#16a085", 26),
    "socket-gone": ("socket gone", "D", "#27ae60", 26),
    "socket-released": ("socket released (orphan)", "d", "#27ae60", 30),
    "alive-check": ("survivor check", "*", "#1e8449", 60),
    "middlebox-expired": ("middlebox entry expired", "v", "#b03a2e", 40),
    "zero-window": ("window full (persist timer)", ">", "#d35400", 34),
    "zero-window-probe": ("first zero-window probe", "<", "#d35400", 34),
}
OTHER = ("other event", ".", "#999999", 10)
UPSTREAM_STYLE: dict[str, tuple[str, str, str, float]] = {
    "upstream-pooled": ("upstream leg pooled", "v", "#7d3c98", 30),
    "upstream-linked": ("upstream leg linked", "^", "#7d3c98", 22),
    "upstream-tier-dropped": ("upstream leg dropped by the tier", "x", "#7d3c98", 30),
    "upstream-socket-gone": ("upstream socket gone", "D", "#7d3c98", 24),
    "upstream-socket-released": ("upstream socket released", "d", "#7d3c98", 26),
    "upstream-process-exit": ("backend process exited", "s", "#7d3c98", 24),
}
"""A tier's upstream leg, drawn on a thin lane under its session's (other upstream events:
"other upstream event")."""
UPSTREAM_OTHER = ("other upstream event", ".", "#7d3c98", 10)
LEG_OFFSET = 0.36


def _svg(fig: Figure, label: str) -> str:
    """The figure as an ``<svg>`` element for inline use (no XML prolog, scalable)."""
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": label}):
        fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    # keep the viewBox, let CSS size it
    text = re.sub(r'<svg([^>]*?) width="[^"]*" height="[^"]*"', r'<svg\1', text, count=1)
    return text.replace("<svg", f'<svg role="img" aria-label="{label}" class="plot"', 1)


def _seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") or "0"


def _reclaimed_at(s: SessionRecord) -> float | None:
    """When the session was reclaimed, None when it was not (or no time was taken)."""
    return float(s.reclaim_s) if s.reclaimed and s.reclaim_s is not None else None


def distribution(sc: ScenarioRecord, *, gate_s: float | None, held_s: float | None,
                 predicted_s: float | None, predicted_never: bool) -> str:
    """The faulted sessions' reclaim times as an empirical CDF, as SVG."""
    faulted = sc.faulted
    deadline = float(sc.deadline_s or sc.observed_s or 1.0)
    times = sorted(t for t in map(_reclaimed_at, faulted) if t is not None)
    never = len(faulted) - len(times)
    n = max(1, len(faulted))
    right = max([deadline, gate_s or 0.0, held_s or 0.0, *(times[-1:] or [0.0])]) * 1.06
    fig = Figure(figsize=(7.5, 2.6))
    ax = fig.subplots()
    if times:
        xs = [0.0, *times, right]
        ys = [0.0, *(i / n for i in range(1, len(times) + 1)), len(times) / n]
        ax.step(xs, ys, where="post", color="#2c3e50", lw=1.6, label="reclaimed (cumulative)")
        ax.scatter(times, [-0.06] * len(times), marker="|", s=120, color="#2c3e50",
                   rasterized=len(times) > RASTER_ABOVE, clip_on=False)
    if never:
        ax.scatter([deadline], [-0.06], marker="x", s=70, color=GATE, clip_on=False, zorder=5,
                   label=f"{never} not reclaimed by the deadline ({_seconds(deadline)} s)")
    if predicted_s is not None and predicted_s <= right:
        ax.axvline(predicted_s, color=PREDICTED, ls="--", lw=1.4,
                   label=f"predicted {_seconds(predicted_s)} s")
    elif predicted_s is not None:
        ax.plot([], [], color=PREDICTED, ls="--",
                label=f"predicted {_seconds(predicted_s)} s (off the chart)")
    elif predicted_never:
        ax.plot([], [], color=PREDICTED, ls="--", label="predicted: never")
    if gate_s is not None:
        ax.axvline(gate_s, color=GATE, lw=1.6, label=f"reclaimed_within {_seconds(gate_s)} s")
    if held_s is not None:
        ax.axvline(held_s, color=HELD, lw=1.6, ls=":", label=f"still_held_after {_seconds(held_s)} s")
    ax.set_xlim(0, right)
    ax.set_ylim(-0.12, 1.05)
    ax.set_xlabel("seconds after the fault")
    ax.set_ylabel("share of faulted\nsessions reclaimed")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    ax.set_title(f"{len(times)} of {len(faulted)} faulted sessions reclaimed", fontsize=10, loc="left")
    return _svg(fig, f"reclaim-time distribution of {sc.name}")


def lanes(sessions: Sequence[SessionRecord], cap: int = MAX_LANES) -> tuple[list[SessionRecord], int]:
    """The sessions that get a lane (faulted first, then survivors, by id), and how many do not."""
    ordered = sorted(sessions, key=lambda s: (not s.faulted, s.id))
    return ordered[:cap], max(0, len(ordered) - cap)


def timeline(sc: ScenarioRecord, cap: int = MAX_LANES) -> str:
    """One lane per session: held from opened to reclaim (or the end), its events as markers."""
    shown, omitted = lanes(sc.sessions, cap)
    end = float(sc.observed_s or sc.deadline_s or 1.0)
    fig = Figure(figsize=(7.5, 1.3 + 0.24 * max(1, len(shown))))
    ax = fig.subplots()
    points: dict[str, tuple[list[float], list[float]]] = {}
    reclaim_x: list[float] = []
    reclaim_y: list[int] = []
    pred_x: list[float] = []
    pred_y: list[int] = []
    labels = []
    for lane, s in enumerate(shown):
        start = min((e.t for e in s.events), default=0.0)
        reclaimed = _reclaimed_at(s)
        stop = end if reclaimed is None else reclaimed
        ax.plot([start, stop], [lane, lane], color="#bbbbbb" if s.faulted else "#b7d9c0",
                lw=3, solid_capstyle="butt", zorder=1)
        for e in s.events:
            if e.what == "fault":
                continue
            if e.what.startswith("upstream-"):
                kind = e.what if e.what in UPSTREAM_STYLE else "upstream-"
                xs, ys = points.setdefault(kind, ([], []))
                xs.append(e.t)
                ys.append(lane + LEG_OFFSET)
                continue
            xs, ys = points.setdefault(e.what if e.what in EVENT_STYLE else "", ([], []))
            xs.append(e.t)
            ys.append(lane)
        leg = s.upstream
        if leg is not None:
            leg_stop = end if leg.closed_s is None else float(leg.closed_s)
            ax.plot([start, leg_stop], [lane + LEG_OFFSET, lane + LEG_OFFSET], color="#d2b4de", lw=1.5,
                    solid_capstyle="butt", zorder=1)
        if reclaimed is not None:
            reclaim_x.append(reclaimed)
            reclaim_y.append(lane)
        if s.predicted_s is not None and float(s.predicted_s) <= end * 1.5:
            pred_x.append(float(s.predicted_s))
            pred_y.append(lane)
        labels.append(f"#{s.id}" + ("" if s.faulted else " (spared)"))
    ax.axvline(0, color=GATE, lw=1.2, label="fault")
    total = sum(len(xs) for xs, _ in points.values())
    for kind, (xs, ys) in points.items():
        if kind.startswith("upstream-"):
            label, marker, colour, size = UPSTREAM_STYLE.get(kind, UPSTREAM_OTHER)
        else:
            label, marker, colour, size = EVENT_STYLE.get(kind, OTHER)
        ax.scatter(xs, ys, marker=marker, s=size, color=colour, label=label, zorder=3,
                   rasterized=total > RASTER_ABOVE, linewidths=1.2)
    if pred_x:
        ax.scatter(pred_x, pred_y, marker="D", s=46, facecolors="none", edgecolors=PREDICTED,
                   label="predicted reclaim", zorder=4, linewidths=1.2)
    if reclaim_x:
        ax.scatter(reclaim_x, reclaim_y, marker="*", s=110, color="#111111", label="reclaimed", zorder=5)
    ax.set_yticks(range(len(shown)), labels, fontsize=7)
    ax.set_ylim(len(shown) - 0.5 + (LEG_OFFSET if any(s.upstream for s in shown) else 0), -0.5)
    ax.set_xlabel("seconds after the fault")
    ax.grid(axis="x", alpha=0.3)
    title = f"{len(shown)} session(s)"
    if omitted:
        title += f"; {omitted} more not shown"
    ax.set_title(title, fontsize=10, loc="left")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return _svg(fig, f"session timeline of {sc.name}")
