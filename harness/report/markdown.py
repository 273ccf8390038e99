"""The Markdown summary: one table and the failures, sized for a CI job summary page.

GitHub renders ``$GITHUB_STEP_SUMMARY`` as GitHub-flavoured Markdown (tables, ``<details>``),
GitLab and others show the file as an artifact; so: plain GFM, no HTML beyond ``<details>``,
and every cell escaped, since a reason can hold a ``|``.
"""

from __future__ import annotations

from typing import Any

from harness.core.prediction import format_seconds
from harness.report.messages import failure_message, headline

MARK = {"pass": "✅ pass", "fail": "❌ fail", "error": "⚠️ error"}


def _cell(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _s(value: Any) -> str:
    return "–" if value is None else f"{format_seconds(float(value))} s"


def _row(sc: dict[str, Any]) -> str:
    summ = sc.get("summary") or {}
    pred = sc.get("prediction")
    predicted = "–" if not pred else ("never" if pred["reclaim_s"] is None else _s(pred["reclaim_s"]))
    mechs = sorted({s["mechanism"] for s in sc.get("sessions", []) if s["faulted"] and s.get("mechanism")})
    cells = [f"`{sc['name']}`", MARK.get(sc["verdict"], sc["verdict"]), sc["layer"], sc["fault"],
             f"{summ.get('reclaimed', 0)}/{summ.get('faulted', 0)}", _s(summ.get("p50_s")),
             _s(summ.get("p95_s")), _s(summ.get("max_s")),
             f"{predicted} ({pred['mechanism']})" if pred else predicted,
             ", ".join(mechs) or "–", summ.get("survivors_killed", 0)]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def render(results: dict[str, Any]) -> str:
    """The run as GitHub-flavoured Markdown."""
    scenarios = results["scenarios"]
    counts = {v: sum(1 for s in scenarios if s["verdict"] == v) for v in ("pass", "fail", "error")}
    base = results.get("baseline") or {}
    regressions = base.get("regressions") or []
    ok = not counts["fail"] and not counts["error"] and not regressions
    status = "✅ passed" if ok else "❌ failed"
    parts = [f"## connchaos run `{results['run_id']}`: {status}", ""]
    line = f"{counts['pass']} passed, {counts['fail']} failed, {counts['error']} could not run"
    if base:
        line += f"; {len(regressions)} regression(s) against the baseline run `{base.get('run_id')}`"
    if results.get("interrupted"):
        line += "; **interrupted**: the scenarios after the last one listed did not run"
    parts += [line + f" (started {results['started_at']}, connchaos {results.get('connchaos', '?')},"
                     f" kernel {results.get('kernel', '?')}).", ""]
    parts += ["| scenario | verdict | layer | fault | reclaimed | p50 | p95 | max | predicted"
              " | mechanism | survivors killed |",
              "|---|---|---|---|--:|--:|--:|--:|--:|---|--:|"]
    parts += [_row(sc) for sc in scenarios]
    failed = [sc for sc in scenarios if sc["verdict"] != "pass"]
    if failed:
        parts += ["", "### Failures", ""]
        for sc in failed:
            parts += [f"<details><summary><b>{_html(sc['name'])}</b>: {_html(headline(sc))}</summary>", "",
                      "```text", failure_message(sc), "```", "", "</details>", ""]
    if regressions:
        parts += ["", f"### Regressions against the baseline (p95 tolerance {base.get('p95_tolerance')})", ""]
        parts += [f"- {_cell(r['text'])}" for r in regressions]
    notes = base.get("notes") or []
    if notes:
        parts += ["", "Baseline notes:", ""] + [f"- {_cell(n)}" for n in notes]
    return "\n".join(parts).rstrip("\n") + "\n"


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
