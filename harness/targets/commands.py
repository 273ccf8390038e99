"""Where a target's server command is, and the machine error when it is not there."""

from __future__ import annotations

import os

from harness.errors import MachineError


def find_command(*candidates: str | None, env: str | None = None) -> str | None:
    """The first executable of ``candidates`` (None ones skipped), or only ``$env`` when that
    is set: absolute (sshd re-executes itself and refuses a relative path)."""
    chosen = os.environ.get(env) if env else None
    for candidate in ([chosen] if chosen else candidates):
        if candidate and os.access(candidate, os.X_OK):
            return os.path.abspath(candidate)
    return None


def require_command(found: str | None, what: str, fix: str) -> str:
    """``found``, or exit 3 naming ``what`` and how to get it."""
    if found is None:
        raise MachineError(what, fix)
    return found
