"""The self-contained HTML report: one file, no network, opens from a CI artifact.

The run's summary table, then per scenario its verdict, what it is about, its settings, the
prediction beside the measurement, the distribution of reclaim times and every session's
timeline (plots from ``harness.report.plots``, inline SVG). Everything the page needs is in
the file: styles inline, no scripts, no fonts, no images fetched.

``python -m harness.report.html RESULTS.json [OUT.html]`` renders one from a results file.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from html import escape

from harness.core.records import Json, RunRecord, ScenarioRecord
from harness.report import plots
from harness.report.messages import bound_line, predicted_text, reconnect_lines, upstream_lines
from harness.scenario.durations import parse_duration

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1100px;
 padding:1.2em;color:#222}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.2em;margin:0;display:inline}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .55em;text-align:left;
 vertical-align:top}th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:.1em .6em;border-radius:.8em;color:#fff;font-weight:600;font-size:.85em;
 margin-left:.5em;vertical-align:middle}.pass{background:#1e8449}.fail{background:#c0392b}.error{background:#b9770e}
section{border-top:2px solid #ddd;margin-top:1.6em;padding-top:.8em}.meta{color:#666}.reason{margin:.4em 0}
.cols{display:flex;gap:1.5em;flex-wrap:wrap}.formula{font-family:ui-monospace,monospace;font-size:.85em;
 max-width:60em}figure{margin:.6em 0}figcaption{color:#555;font-size:.9em}svg.plot{max-width:100%;height:auto}
"""


def _s(value: float | None) -> str:
    """Seconds for a table cell: ``4.117 s``, ``-`` when missing."""
    if value is None:
        return "-"
    return f"{float(value):.3f}".rstrip("0").rstrip(".") + " s"


def _or(value: object, missing: str = "-") -> str:
    """A field as text, ``missing`` when the file did not have it."""
    return missing if value is None else str(value)


def _duration(value: Json) -> float | None:
    """An ``expect`` value from results.json: ``"8s"`` as written, or seconds."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str):
        return None
    try:
        return parse_duration(value)
    except ValueError:
        return None


def _badge(verdict: str) -> str:
    v = escape(verdict)
    return f'<span class="badge {v}">{v}</span>'


def _rows(pairs: Sequence[tuple[str, object]]) -> str:
    return "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in pairs)


def _predicted(sc: ScenarioRecord) -> str:
    return escape(predicted_text(sc.prediction))


def _mechanisms(sc: ScenarioRecord) -> str:
    return ", ".join(sc.mechanisms) or "-"


def _summary(run: RunRecord) -> str:
    head = ("scenario", "verdict", "layer", "fault", "faulted", "reclaimed", "p50", "max",
            "predicted", "mechanism")
    rows = []
    for sc in run.scenarios:
        summ = sc.summary
        name = escape(sc.name)
        rows.append(
            f'<tr><td><a href="#sc-{name}">{name}</a></td><td>{_badge(sc.verdict)}</td>'
            f"<td>{escape(_or(sc.layer))}</td><td>{escape(_or(sc.fault))}</td>"
            f'<td class="n">{summ.faulted}</td><td class="n">{summ.reclaimed}</td>'
            f'<td class="n">{_s(summ.p50_s)}</td><td class="n">{_s(summ.max_s)}</td>'
            f'<td class="n">{_predicted(sc)}</td><td>{escape(_mechanisms(sc))}</td></tr>')
    header = "".join(f"<th>{h}</th>" for h in head)
    return f'<table class="summary"><tr>{header}</tr>{"".join(rows)}</table>'


def _settings(sc: ScenarioRecord) -> str:
    settings = {} if sc.target is None else sc.target.settings
    pairs: list[tuple[str, object]] = [("service", _or(sc.service))]
    pairs += [(f"  {k}", v) for k, v in settings.items()]
    pairs += [("backend", _or(sc.backend)), ("layer", _or(sc.layer)),
              ("fault", sc.fault_detail or sc.fault),
              ("activity", _or(sc.activity)),
              ("sessions", sc.summary.sessions),
              ("deadline", _s(sc.deadline_s))]
    pairs += [(f"expect {k}", v) for k, v in sc.expect.items()]
    return f'<table class="settings">{_rows(pairs)}</table>'


def _versus(sc: ScenarioRecord) -> str:
    pred = sc.prediction
    summ = sc.summary
    measured = (f"{summ.reclaimed} of {summ.faulted} faulted sessions reclaimed"
                f" in {_s(sc.observed_s)} observed")
    return (
        '<table class="versus"><tr><th></th><th>predicted</th><th>measured</th></tr>'
        f'<tr><th>reclaim</th><td class="n">{_predicted(sc)}</td>'
        f'<td class="n">p50 {_s(summ.p50_s)} · p95 {_s(summ.p95_s)} · max {_s(summ.max_s)}</td></tr>'
        f"<tr><th>mechanism</th><td>{escape('-' if pred is None else pred.mechanism)}</td>"
        f"<td>{escape(_mechanisms(sc))}</td></tr>"
        f"<tr><th>sessions</th><td></td><td>{escape(measured)};"
        f" {summ.survivors_killed} survivor(s) killed</td></tr>{_upstream_row(sc)}"
        f"{_reconnect_row(sc)}</table>"
        + (f'<p class="formula"><b>Random loss:</b> {escape(bound_line(sc))}</p>'
           if bound_line(sc) else "")
        + (f'<p class="formula">{escape(pred.formula)}</p>' if pred is not None and pred.formula else ""))


def _reconnect_row(sc: ScenarioRecord) -> str:
    """syn-blackhole: the clients' reconnect attempts, predicted and measured."""
    predicted, measured = reconnect_lines(sc)
    if not predicted and not measured:
        return ""
    return f"<tr><th>reconnect</th><td>{escape(predicted)}</td><td>{escape(measured)}</td></tr>"


def _upstream_row(sc: ScenarioRecord) -> str:
    """A tier's upstream legs: what was predicted for them and what became of them."""
    predicted, measured = upstream_lines(sc)
    if not measured:
        return ""
    return (f"<tr><th>upstream leg</th><td>{escape(predicted)}</td>"
            f"<td>{escape(measured)}</td></tr>")


def _scenario(sc: ScenarioRecord) -> str:
    name = escape(sc.name)
    pred = sc.prediction
    parts = [f'<section id="sc-{name}"><h2>{name}</h2>{_badge(sc.verdict)}',
             f'<p class="reason"><b>{escape(sc.verdict)}:</b> {escape(sc.reason)}</p>']
    if sc.about:
        parts.append(f'<p class="about">{escape(sc.about)}</p>')
    parts.append(f'<div class="cols"><div>{_settings(sc)}</div><div>{_versus(sc)}</div></div>')
    if sc.sessions:
        dist = plots.distribution(
            sc, gate_s=_duration(sc.expect.get("reclaimed_within")),
            held_s=_duration(sc.expect.get("still_held_after")),
            predicted_s=None if pred is None else pred.reclaim_s,
            predicted_never=pred is not None and pred.reclaim_s is None)
        parts.append(f'<figure class="distribution">{dist}<figcaption>When the faulted sessions were'
                     ' reclaimed, counted from the fault; the dashed line is the prediction, the solid'
                     ' one the gate.</figcaption></figure>')
        shown, omitted = plots.lanes(sc.sessions)
        note = f" {omitted} session(s) not shown." if omitted else ""
        parts.append(f'<figure class="timeline">{plots.timeline(sc)}<figcaption>Each session from'
                     f" opened to reclaimed, with what the observer saw.{note}</figcaption></figure>")
    parts.append("</section>")
    return "\n".join(parts)


def render(run: RunRecord) -> str:
    """The whole report of a run, as one HTML page."""
    scenarios = run.scenarios
    counts = {v: sum(1 for s in scenarios if s.verdict == v) for v in ("pass", "fail", "error")}
    tally = ", ".join(f"{n} {v}" for v, n in counts.items() if n) or "no scenarios"
    run_id = escape(run.run_id)
    meta = " · ".join(escape(str(x)) for x in (
        f"started {run.started_at}", f"finished {_or(run.finished_at)}",
        f"host {_or(run.host)}", f"kernel {_or(run.kernel)}",
        f"connchaos {_or(run.connchaos)}"))
    interrupted = '<p class="reason"><b>The run was interrupted.</b></p>' if run.interrupted else ""
    body = "\n".join(_scenario(s) for s in scenarios)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>connchaos run {run_id}</title><style>{CSS}</style></head><body>"
            f'<h1>connchaos run {run_id}</h1><p class="meta">{meta}</p>'
            f'<p class="tally"><b>{len(scenarios)} scenario(s): {escape(tally)}</b></p>{interrupted}'
            f"{_summary(run)}\n{body}\n</body></html>\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Render RESULTS.json to OUT.html (or stdout)."""
    from harness.report.results import read

    args = list(sys.argv[1:] if argv is None else argv)
    if not 1 <= len(args) <= 2:
        sys.stderr.write("usage: python -m harness.report.html RESULTS.json [OUT.html]\n")
        return 2
    page = render(read(args[0]))
    if len(args) == 2:
        with open(args[1], "w", encoding="utf-8") as f:
            f.write(page)
    else:
        sys.stdout.write(page)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
