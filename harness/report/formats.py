"""Every report file of a run folder, rendered from the results alone.

``connchaos run`` and ``connchaos report`` both call ``write_all``, so a re-render from an
old results.json gives exactly the files the run gave. A format is a file name and a
``render(run) -> str``; add one by adding a row.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from harness.core.records import RunRecord
from harness.report import html, junit, markdown

Render = Callable[[RunRecord], str]

FORMATS: list[tuple[str, Render]] = [
    ("junit.xml", junit.render),
    ("summary.md", markdown.render),
    ("report.html", html.render),
]


def write_all(run: RunRecord, folder: str) -> list[str]:
    """Write results.json and every format into ``folder``; returns the paths written."""
    from harness.report import results as results_file

    os.makedirs(folder, exist_ok=True)
    paths = [results_file.write(run, folder)]
    for name, render in FORMATS:
        paths.append(_write_text(os.path.join(folder, name), render(run)))
    return paths


def _write_text(path: str, text: str) -> str:
    """Atomically, like results.json: a CI step never reads half a report."""
    tmp = path + ".part"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def write_junit(run: RunRecord, path: str) -> str:
    """``--junit PATH``: the JUnit file at a path of the user's choosing."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    return _write_text(path, junit.render(run))


def append_step_summary(run: RunRecord, env: dict[str, str] | None = None) -> str | None:
    """Append the Markdown summary to ``$GITHUB_STEP_SUMMARY`` when set (GitHub Actions)."""
    target = (env if env is not None else dict(os.environ)).get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    with open(target, "a", encoding="utf-8") as f:
        f.write(markdown.render(run) + "\n")
    return target
