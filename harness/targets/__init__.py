"""Targets: the services under test. One module per service, registered in ``TARGETS``."""

from __future__ import annotations

from harness.targets.base import Session, Target
from harness.targets.postgres import PostgresTarget

TARGETS: dict[str, type[PostgresTarget]] = {
    "postgres": PostgresTarget,
}

__all__ = ["TARGETS", "PostgresTarget", "Session", "Target"]
