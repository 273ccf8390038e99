"""Sample results for the report tests: real runs, trimmed to three sessions per scenario.

``catalogue.json``: the whole shipped catalogue, every verdict pass (the summaries are those
of the full run). ``failing.json``: PostgreSQL at its defaults gated on an 8 s reclaim (fail,
3 of 6 sessions faulted) and postgres-client-vanishes (pass).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).resolve().parent / "data"
CATALOGUE = DATA / "catalogue.json"
FAILING = DATA / "failing.json"


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.fixture
def catalogue() -> dict[str, Any]:
    return load(CATALOGUE)


@pytest.fixture
def failing() -> dict[str, Any]:
    return load(FAILING)


@pytest.fixture
def catalogue_path() -> Path:
    return CATALOGUE


@pytest.fixture
def failing_path() -> Path:
    return FAILING


@pytest.fixture
def error_entry() -> dict[str, Any]:
    """What harness.run.error_record writes when a lab cannot be built."""
    return {"name": "postgres-broken", "file": "scenarios/postgres-broken.yaml", "about": "",
            "verdict": "error", "reason": "start postgres: initdb failed: no space left on device",
            "backend": "local", "layer": "packet", "fault": "blackhole", "prediction": None,
            "sessions": [], "summary": {"sessions": 0, "faulted": 0, "reclaimed": 0, "p50_s": None,
                                        "p95_s": None, "max_s": None, "survivors_killed": 0}}
