"""The Markdown summary: one table and the failures, sized for a CI job summary page.

GitHub renders ``$GITHUB_STEP_SUMMARY`` as GitHub-flavoured Markdown (tables, ``<details>``),
GitLab and others show the file as an artifact; so: plain GFM, no HTML beyond ``<details>``,
and every cell escaped, since a reason can hold a ``|``.
"""

from __future__ import annotations

from harness.core.prediction import format_seconds
from harness.core.records import RunRecord, ScenarioRecord
from harness.report.messages import failure_message, headline, predicted_text, reconnect_lines, upstream_lines

MARK = {"pass": "✅ pass", "fail": "❌ fail", "error": "⚠️ error"}


def _cell(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _s(value: float | None) -> str:
    return "–" if value is None else f"{format_seconds(float(value))} s"


def _upstream(sc: ScenarioRecord) -> str:
    _, legs = upstream_lines(sc)
    return f" ({legs})" if legs else ""


def _reconnect(sc: ScenarioRecord) -> str:
    predicted, measured = reconnect_lines(sc)
    return f"; reconnect: {measured} (predicted {predicted})" if measured else ""


def _row(sc: ScenarioRecord) -> str:
    summ = sc.summary
    pred = sc.prediction
    predicted = "–" if pred is None else predicted_text(pred)
    cells = [f"`{sc.name}`", MARK.get(sc.verdict, sc.verdict), sc.layer, sc.fault,
             f"{summ.reclaimed}/{summ.faulted}", _s(summ.p50_s),
             _s(summ.p95_s), _s(summ.max_s),
             f"{predicted} ({pred.mechanism})" if pred is not None else predicted,
             (", ".join(sc.mechanisms) or "–") + _upstream(sc) + _reconnect(sc), summ.survivors_killed]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def render(run: RunRecord) -> str:
    """The run as GitHub-flavoured Markdown."""
    scenarios = run.scenarios
    counts = {v: sum(1 for s in scenarios if s.verdict == v) for v in ("pass", "fail", "error")}
    base = run.baseline
    regressions = () if base is None else base.regressions
    ok = not counts["fail"] and not counts["error"] and not regressions
    status = "✅ passed" if ok else "❌ failed"
    parts = [f"## connchaos run `{run.run_id}`: {status}", ""]
    line = f"{counts['pass']} passed, {counts['fail']} failed, {counts['error']} could not run"
    if base is not None:
        line += f"; {len(regressions)} regression(s) against the baseline run `{base.run_id}`"
    if run.interrupted:
        line += "; **interrupted**: the scenarios after the last one listed did not run"
    connchaos = "?" if run.connchaos is None else run.connchaos
    kernel = "?" if run.kernel is None else run.kernel
    parts += [line + f" (started {run.started_at}, connchaos {connchaos}, kernel {kernel}).", ""]
    parts += ["| scenario | verdict | layer | fault | reclaimed | p50 | p95 | max | predicted"
              " | mechanism | survivors killed |",
              "|---|---|---|---|--:|--:|--:|--:|--:|---|--:|"]
    parts += [_row(sc) for sc in scenarios]
    failed = [sc for sc in scenarios if sc.verdict != "pass"]
    if failed:
        parts += ["", "### Failures", ""]
        for sc in failed:
            parts += [f"<details><summary><b>{_html(sc.name)}</b>: {_html(headline(sc))}</summary>", "",
                      "```text", failure_message(sc), "```", "", "</details>", ""]
    if base is not None and regressions:
        parts += ["", f"### Regressions against the baseline (p95 tolerance {base.p95_tolerance})", ""]
        parts += [f"- {_cell(r.text)}" for r in regressions]
    if base is not None and base.notes:
        parts += ["", "Baseline notes:", ""] + [f"- {_cell(n)}" for n in base.notes]
    return "\n".join(parts).rstrip("\n") + "\n"


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
