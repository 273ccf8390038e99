"""The console summary: one table row per scenario, and the reasons of those that failed."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.core.prediction import format_seconds
from harness.core.records import RunRecord
from harness.report.messages import predicted_text

STYLE = {"pass": "green", "fail": "red", "error": "yellow"}


def _s(value: float | None) -> str:
    return "-" if value is None else f"{format_seconds(value)} s"


def render(run: RunRecord, console: Console) -> None:
    """Print the run's table and, below it, each scenario's reason."""
    table = Table(title=f"connchaos run {run.run_id}", title_justify="left")
    for col, just in (("scenario", "left"), ("verdict", "left"), ("layer", "left"),
                      ("fault", "left"), ("faulted", "right"), ("reclaimed", "right"),
                      ("p50", "right"), ("max", "right"), ("predicted", "right"),
                      ("mechanism", "left"), ("survivors killed", "right")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for sc in run.scenarios:
        summ = sc.summary
        pred = sc.prediction
        table.add_row(
            sc.name, f"[{STYLE[sc.verdict]}]{sc.verdict}[/]", sc.layer, sc.fault,
            str(summ.faulted), str(summ.reclaimed), _s(summ.p50_s), _s(summ.max_s),
            predicted_text(pred),
            ", ".join(sc.mechanisms) or "-", str(summ.survivors_killed))
    console.print(table)
    for sc in run.scenarios:
        console.print(f"[{STYLE[sc.verdict]}]{sc.verdict:5}[/] {sc.name}: {sc.reason}",
                      highlight=False, soft_wrap=True)


def render_baseline(run: RunRecord, console: Console) -> None:
    """The baseline comparison, when there was one: each regression, then the notes."""
    base = run.baseline
    if base is None:
        return
    head = escape(f"baseline {base.file} (run {base.run_id}, p95 tolerance {base.p95_tolerance}): ")
    if base.regressions:
        console.print(f"[red]{head}{len(base.regressions)} regression(s)[/]", highlight=False,
                      soft_wrap=True)
        for r in base.regressions:
            console.print(f"[red]regression[/] {escape(r.text)}", highlight=False, soft_wrap=True)
    else:
        console.print(f"[green]{head}no regression[/]", highlight=False, soft_wrap=True)
    for note in base.notes:
        console.print(f"[dim]note[/] {escape(note)}", highlight=False, soft_wrap=True)
