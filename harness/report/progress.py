"""What ``connchaos run`` shows on stderr while it runs.

On a terminal the long wait of each scenario is a live bar (rich): faulted sessions reclaimed
so far, and the time elapsed against the deadline, redrawn as the observer samples. Anywhere
else (a CI log, a pipe) the same run prints plain timestamped lines, because a redrawn bar
there is only noise. ``quiet`` prints nothing; ``verbose`` adds each session's events as the
observer sees them and, when a scenario ends, how each faulted session ended.
"""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from harness.core.records import ScenarioRecord


def _sec(value: float) -> str:
    return f"{value:.1f} s"


class RunProgress:
    """Progress of a run: pass its methods to ``harness.runner.run`` as callbacks."""

    def __init__(self, console: Console, *, quiet: bool = False, verbose: bool = False,
                 live: bool | None = None) -> None:
        self.console = console
        self.quiet = quiet
        self.verbose = verbose and not quiet
        self.live = (console.is_terminal if live is None else live) and not quiet
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._scenario = ""

    # -- lifetime -------------------------------------------------------------------------------
    def __enter__(self) -> RunProgress:
        if self.live:
            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(),
                TextColumn("reclaimed {task.fields[reclaimed]}/{task.fields[faulted]}"),
                TextColumn("{task.fields[elapsed]} / {task.fields[deadline]}"),
                console=self.console, transient=True, refresh_per_second=8)
            self._bar.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    # -- callbacks ------------------------------------------------------------------------------
    def _print(self, text: str) -> None:
        # rich prints above a live display, so lines and the bar never tear each other
        self.console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {escape(text)}", highlight=False,
                           soft_wrap=True)

    def line(self, text: str) -> None:
        """A progress line from the runner (``name: what happens``)."""
        if self.quiet:
            return
        name = text.split(":", 1)[0]
        if name != self._scenario:
            self._scenario = name
            self._new_task()
        self._print(text)

    def _new_task(self) -> None:
        if self._bar is None:
            return
        if self._task is not None:
            self._bar.remove_task(self._task)
        self._task = self._bar.add_task(self._scenario, total=None, reclaimed=0, faulted="?",
                                        elapsed="-", deadline="-")

    def observe(self, reclaimed: int, faulted: int, elapsed_s: float, deadline_s: float) -> None:
        """After each observer sample: the live bar moves (nothing printed without a terminal)."""
        if self._bar is None or self._task is None:
            return
        self._bar.update(self._task, total=deadline_s, completed=min(elapsed_s, deadline_s),
                         reclaimed=reclaimed, faulted=faulted, elapsed=_sec(elapsed_s),
                         deadline=_sec(deadline_s))

    def event(self, session_id: int, t: float, what: str, detail: str) -> None:
        """An observed event of one session (printed in verbose mode)."""
        if self.verbose:
            more = f" ({detail})" if detail else ""
            self._print(f"{self._scenario}: session {session_id} {what}{more} at {t:.3f} s")

    def scenario_done(self, sc: ScenarioRecord) -> None:
        """A scenario finished: in verbose mode, how each faulted session ended."""
        if not self.verbose:
            return
        for s in sc.faulted:
            if s.reclaimed and s.reclaim_s is not None:
                note = f" (predicted {s.predicted_s:g} s)" if s.predicted_s is not None else ""
                self._print(f"{sc.name}: session {s.id} reclaimed at {s.reclaim_s:.3f} s"
                            f" by {s.mechanism or 'unknown'}{note}")
            else:
                self._print(f"{sc.name}: session {s.id} not reclaimed in {sc.observed_s or 0:.3f} s")
