"""The exceptions of connchaos, one root with structured fields.

Three families, after who broke it:

- ``ScenarioError``: the scenario file is wrong (exit code 2). Nothing has been started.
- ``MachineError``: this machine cannot do it (exit code 3), naming what is missing.
- ``LabError``: building or driving the lab failed at run time (the environment broke it);
  reported as the scenario's ``error`` verdict.

A target that misbehaves (never reclaims a dead session) is a measured result, not an exception.
Each exception builds its message from its fields, so callers never format text themselves.
"""

from __future__ import annotations

from dataclasses import dataclass


class ConnchaosError(Exception):
    """Root of every error connchaos raises on purpose."""

    exit_code = 1

    def __str__(self) -> str:  # pragma: no cover - overridden
        return super().__str__()


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a scenario file: where it is and what was expected there."""

    path: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        field = f" {self.field}:" if self.field else ""
        return _one_line(f"{where}:{field} {self.message}")


def _one_line(text: str) -> str:
    """``text`` with each character a terminal would not print as itself escaped (``\\n``,
    ``\\x1b``): a key, file name or server message from the file can neither break a problem
    over lines (forging one) nor drive the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class ScenarioError(ConnchaosError):
    """One or more problems in scenario files (exit code 2)."""

    exit_code = 2

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class MachineError(ConnchaosError):
    """This machine lacks something the run needs (exit code 3)."""

    exit_code = 3

    def __init__(self, missing: str, hint: str = "") -> None:
        self.missing = missing
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"this machine cannot run it: {self.missing}"
        return f"{text} ({self.hint})" if self.hint else text


class LabError(ConnchaosError):
    """Building, driving or observing the lab failed: the environment broke it."""

    exit_code = 3

    def __init__(self, step: str, detail: str) -> None:
        self.step = step
        self.detail = detail
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.step}: {self.detail}"
