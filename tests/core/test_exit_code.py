"""The run's exit code from verdicts and regressions (DESIGN.md's table)."""

from __future__ import annotations

import pytest

from harness.core.verdict import exit_code


@pytest.mark.parametrize(("verdicts", "regressions", "code"), [
    ([], 0, 0),
    (["pass", "pass"], 0, 0),
    (["pass", "fail"], 0, 1),
    (["pass"], 2, 1),                  # the verdicts passed; the baseline did not
    (["fail", "error"], 0, 3),
    (["pass", "error"], 1, 3),         # a scenario that could not run outranks a regression
])
def test_error_outranks_fail_and_regression_which_outrank_pass(verdicts: list[str], regressions: int,
                                                               code: int) -> None:
    assert exit_code(verdicts, regressions=regressions) == code


def test_an_interrupted_run_is_130_whatever_finished() -> None:
    assert exit_code(["pass"], interrupted=True) == 130
    assert exit_code((), interrupted=True) == 130
