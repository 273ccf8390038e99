"""Targets: the services under test. One module per service, named in
``harness.registry.SERVICE_TYPES`` by module path and imported on first use, so a scenario
for one service does not load the others' client libraries.
"""

from __future__ import annotations

from typing import Any

from harness.registry import SERVICE_TYPES
from harness.targets.base import Session, Target


def target_class(service: str) -> Any:
    """The class serving ``service``; ImportError if its module is not there."""
    return SERVICE_TYPES[service].load()


def available() -> list[str]:
    """The services this installation can run."""
    found = []
    for service in SERVICE_TYPES:
        try:
            target_class(service)
        except (ImportError, AttributeError):
            continue
        found.append(service)
    return found


__all__ = ["Session", "Target", "available", "target_class"]
