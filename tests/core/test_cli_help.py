"""Every command's ``--help`` prints and exits 0 (a stray ``%`` in a help text once made
``connchaos bench --help`` a traceback)."""

from __future__ import annotations

import argparse

import pytest

from harness.cli import _parser, main


def commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
             ) -> list[tuple[str, ...]]:
    """Every command path of the parser: (), ("run",), ("images", "build"), ..."""
    found = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += commands(sub, prefix + (name,))
    return found


COMMANDS = commands(_parser())


def test_every_command_is_listed() -> None:
    names = {path[0] for path in COMMANDS if path}
    assert {"run", "check", "explain", "up", "proxy", "bench", "report", "images",
            "doctor", "clean"} <= names
    assert ("images", "build") in COMMANDS


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "connchaos")
def test_help_prints_and_exits_0(path: tuple[str, ...],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ended:
        main([*path, "--help"])
    assert ended.value.code == 0
    assert "usage: connchaos" in capsys.readouterr().out
