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
from typing import Any

from harness.report import plots
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


def _s(value: Any) -> str:
    """Seconds for a table cell: ``4.117 s``, ``-`` when missing."""
    if value is None:
        return "-"
    return f"{float(value):.3f}".rstrip("0").rstrip(".") + " s"


def _duration(value: Any) -> float | None:
    """An ``expect`` value from results.json: ``"8s"`` as written, or seconds."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return parse_duration(value)
    except ValueError:
        return None


def _badge(verdict: str) -> str:
    v = escape(verdict)
    return f'<span class="badge {v}">{v}</span>'


def _rows(pairs: Sequence[tuple[str, Any]]) -> str:
    return "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in pairs)


def _predicted(entry: dict[str, Any]) -> str:
    pred = entry.get("prediction")
    if not pred:
        return "-"
    return "never" if pred.get("reclaim_s") is None else _s(pred["reclaim_s"])


def _mechanisms(entry: dict[str, Any]) -> str:
    found = sorted({s["mechanism"] for s in entry.get("sessions", [])
                    if s.get("faulted") and s.get("mechanism")})
    return ", ".join(found) or "-"


def _summary(results: dict[str, Any]) -> str:
    head = ("scenario", "verdict", "layer", "fault", "faulted", "reclaimed", "p50", "max",
            "predicted", "mechanism")
    rows = []
    for sc in results.get("scenarios", []):
        summ = sc.get("summary") or {}
        name = escape(sc["name"])
        rows.append(
            f'<tr><td><a href="#sc-{name}">{name}</a></td><td>{_badge(sc["verdict"])}</td>'
            f'<td>{escape(str(sc.get("layer", "-")))}</td><td>{escape(str(sc.get("fault", "-")))}</td>'
            f'<td class="n">{summ.get("faulted", "-")}</td><td class="n">{summ.get("reclaimed", "-")}</td>'
            f'<td class="n">{_s(summ.get("p50_s"))}</td><td class="n">{_s(summ.get("max_s"))}</td>'
            f'<td class="n">{_predicted(sc)}</td><td>{escape(_mechanisms(sc))}</td></tr>')
    header = "".join(f"<th>{h}</th>" for h in head)
    return f'<table class="summary"><tr>{header}</tr>{"".join(rows)}</table>'


def _settings(entry: dict[str, Any]) -> str:
    target = entry.get("target") or {}
    expect = entry.get("expect") or {}
    pairs: list[tuple[str, Any]] = [("service", target.get("service", "-"))]
    pairs += [(f"  {k}", v) for k, v in (target.get("settings") or {}).items()]
    pairs += [("backend", entry.get("backend", "-")), ("layer", entry.get("layer", "-")),
              ("fault", entry.get("fault_detail") or entry.get("fault", "-")),
              ("activity", entry.get("activity", "-")),
              ("sessions", (entry.get("summary") or {}).get("sessions", "-")),
              ("deadline", _s(entry.get("deadline_s")))]
    pairs += [(f"expect {k}", v) for k, v in expect.items()]
    return f'<table class="settings">{_rows(pairs)}</table>'


def _versus(entry: dict[str, Any]) -> str:
    pred = entry.get("prediction") or {}
    summ = entry.get("summary") or {}
    measured = (f"{summ.get('reclaimed', 0)} of {summ.get('faulted', 0)} faulted sessions reclaimed"
                f" in {_s(entry.get('observed_s'))} observed")
    return (
        '<table class="versus"><tr><th></th><th>predicted</th><th>measured</th></tr>'
        f'<tr><th>reclaim</th><td class="n">{_predicted(entry)}</td>'
        f'<td class="n">p50 {_s(summ.get("p50_s"))} · p95 {_s(summ.get("p95_s"))} · max {_s(summ.get("max_s"))}</td></tr>'
        f'<tr><th>mechanism</th><td>{escape(str(pred.get("mechanism", "-")))}</td>'
        f'<td>{escape(_mechanisms(entry))}</td></tr>'
        f'<tr><th>sessions</th><td></td><td>{escape(measured)};'
        f' {summ.get("survivors_killed", 0)} survivor(s) killed</td></tr></table>'
        + (f'<p class="formula">{escape(str(pred["formula"]))}</p>' if pred.get("formula") else ""))


def _scenario(entry: dict[str, Any]) -> str:
    name = escape(entry["name"])
    expect = entry.get("expect") or {}
    pred: dict[str, Any] = entry.get("prediction") or {}
    parts = [f'<section id="sc-{name}"><h2>{name}</h2>{_badge(entry["verdict"])}',
             f'<p class="reason"><b>{escape(entry["verdict"])}:</b> {escape(str(entry.get("reason", "")))}</p>']
    if entry.get("about"):
        parts.append(f'<p class="about">{escape(entry["about"])}</p>')
    parts.append(f'<div class="cols"><div>{_settings(entry)}</div><div>{_versus(entry)}</div></div>')
    if entry.get("sessions"):
        dist = plots.distribution(
            entry, gate_s=_duration(expect.get("reclaimed_within")), held_s=_duration(expect.get("still_held_after")),
            predicted_s=pred.get("reclaim_s"), predicted_never=bool(pred) and pred.get("reclaim_s") is None)
        parts.append(f'<figure class="distribution">{dist}<figcaption>When the faulted sessions were'
                     ' reclaimed, counted from the fault; the dashed line is the prediction, the solid'
                     ' one the gate.</figcaption></figure>')
        shown, omitted = plots.lanes(entry["sessions"])
        note = f" {omitted} session(s) not shown." if omitted else ""
        parts.append(f'<figure class="timeline">{plots.timeline(entry)}<figcaption>Each session from'
                     f' opened to reclaimed, with what the observer saw.{note}</figcaption></figure>')
    parts.append("</section>")
    return "\n".join(parts)


def render(results: dict[str, Any]) -> str:
    """The whole report for a results.json document, as one HTML page."""
    scenarios = results.get("scenarios", [])
    counts = {v: sum(1 for s in scenarios if s["verdict"] == v) for v in ("pass", "fail", "error")}
    tally = ", ".join(f"{n} {v}" for v, n in counts.items() if n) or "no scenarios"
    run_id = escape(str(results.get("run_id", "")))
    meta = " · ".join(escape(str(x)) for x in (
        f"started {results.get('started_at', '-')}", f"finished {results.get('finished_at', '-')}",
        f"host {results.get('host', '-')}", f"kernel {results.get('kernel', '-')}",
        f"connchaos {results.get('connchaos', '-')}"))
    interrupted = '<p class="reason"><b>The run was interrupted.</b></p>' if results.get("interrupted") else ""
    body = "\n".join(_scenario(s) for s in scenarios)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>connchaos run {run_id}</title><style>{CSS}</style></head><body>"
            f'<h1>connchaos run {run_id}</h1><p class="meta">{meta}</p>'
            f'<p class="tally"><b>{len(scenarios)} scenario(s): {escape(tally)}</b></p>{interrupted}'
            f"{_summary(results)}\n{body}\n</body></html>\n")


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
