"""Failure messages (placeholder: branch ``reports`` owns the real expected / seen / why text;
the lead takes theirs when merging)."""

from __future__ import annotations

from typing import Any


def failure_message(scenario_entry: dict[str, Any]) -> str:
    """Why a scenario did not pass, as JUnit and the pytest plugin show it."""
    return str(scenario_entry["reason"])
