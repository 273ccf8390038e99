"""The benchmarks stay out of the library: nothing under ``harness/`` imports ``benchmarks``
but the CLI's ``bench`` command, lazily, and every ``connchaos bench`` choice has its module."""

from __future__ import annotations

import argparse
import ast
import importlib
from pathlib import Path

import pytest

import harness
from harness.cli import _parser

HARNESS = Path(harness.__file__).parent


def imports_of_benchmarks(path: Path) -> list[tuple[int, bool]]:
    """(line, at module level) of every import of ``benchmarks`` in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        if any(n == "benchmarks" or n.startswith("benchmarks.") for n in names):
            found.append((node.lineno, id(node) in top))
    return found


def test_only_the_cli_imports_the_benchmarks_and_only_lazily() -> None:
    offenders = {}
    for path in sorted(HARNESS.rglob("*.py")):
        found = imports_of_benchmarks(path)
        if path == HARNESS / "cli.py":
            found = [(line, top) for line, top in found if top]
        if found:
            offenders[str(path.relative_to(HARNESS))] = [line for line, _ in found]
    assert offenders == {}


def bench_choices() -> list[str]:
    """The choices of ``connchaos bench``."""
    commands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    what = next(a for a in commands.choices["bench"]._actions if a.dest == "what")
    return [str(choice) for choice in what.choices or ()]


@pytest.mark.parametrize("name", bench_choices())
def test_every_bench_choice_has_a_module_with_main(name: str) -> None:
    module = importlib.import_module(f"benchmarks.{name.replace('-', '_')}")   # fuzz-proxy, fuzz-loader
    assert callable(module.main)
