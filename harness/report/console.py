"""The console summary: one table row per scenario, and the reasons of those that failed."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.core.prediction import format_seconds

STYLE = {"pass": "green", "fail": "red", "error": "yellow"}


def _s(value: float | None) -> str:
    return "-" if value is None else f"{format_seconds(value)} s"


def render(results: dict[str, Any], console: Console) -> None:
    """Print the run's table and, below it, each scenario's reason."""
    table = Table(title=f"connchaos run {results['run_id']}", title_justify="left")
    for col, just in (("scenario", "left"), ("verdict", "left"), ("layer", "left"),
                      ("fault", "left"), ("faulted", "right"), ("reclaimed", "right"),
                      ("p50", "right"), ("max", "right"), ("predicted", "right"),
                      ("mechanism", "left"), ("survivors killed", "right")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for sc in results["scenarios"]:
        summ = sc.get("summary") or {}
        pred = sc.get("prediction") or {}
        mechs = sorted({s["mechanism"] for s in sc.get("sessions", []) if s["faulted"] and s["mechanism"]})
        predicted = pred.get("reclaim_s")
        table.add_row(
            sc["name"], f"[{STYLE[sc['verdict']]}]{sc['verdict']}[/]", sc.get("layer", "-"),
            sc.get("fault", "-"), str(summ.get("faulted", "-")), str(summ.get("reclaimed", "-")),
            _s(summ.get("p50_s")), _s(summ.get("max_s")),
            "never" if pred and predicted is None else _s(predicted),
            ", ".join(mechs) or "-", str(summ.get("survivors_killed", "-")))
    console.print(table)
    for sc in results["scenarios"]:
        console.print(f"[{STYLE[sc['verdict']]}]{sc['verdict']:5}[/] {sc['name']}: {sc['reason']}",
                      highlight=False, soft_wrap=True)


def render_baseline(results: dict[str, Any], console: Console) -> None:
    """The baseline comparison, when there was one: each regression, then the notes."""
    base = results.get("baseline")
    if not base:
        return
    regressions = base.get("regressions") or []
    head = escape(f"baseline {base.get('file')} (run {base.get('run_id')}, p95 tolerance"
                  f" {base.get('p95_tolerance')}): ")
    if regressions:
        console.print(f"[red]{head}{len(regressions)} regression(s)[/]", highlight=False, soft_wrap=True)
        for r in regressions:
            console.print(f"[red]regression[/] {escape(r['text'])}", highlight=False, soft_wrap=True)
    else:
        console.print(f"[green]{head}no regression[/]", highlight=False, soft_wrap=True)
    for note in base.get("notes") or []:
        console.print(f"[dim]note[/] {escape(note)}", highlight=False, soft_wrap=True)
