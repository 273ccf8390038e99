"""Targets: the services under test. One module per service, named in ``TARGETS``.

The table names each target's class by module path and is imported on first use, so a
scenario for one service does not load the others' client libraries.
"""

from __future__ import annotations

import importlib
from typing import Any

from harness.targets.base import Session, Target

TARGETS: dict[str, str] = {
    "postgres": "harness.targets.postgres:PostgresTarget",
    "ssh": "harness.targets.ssh:SshTarget",
    "websocket": "harness.targets.websocket:WebSocketTarget",
    "tcp": "harness.targets.tcp:TcpTarget",
}


def target_class(service: str) -> Any:
    """The class serving ``service``; ImportError if its module is not there."""
    module, _, name = TARGETS[service].partition(":")
    return getattr(importlib.import_module(module), name)


def available() -> list[str]:
    """The services this installation can run."""
    found = []
    for service in TARGETS:
        try:
            target_class(service)
        except (ImportError, AttributeError):
            continue
        found.append(service)
    return found


__all__ = ["TARGETS", "Session", "Target", "available", "target_class"]
