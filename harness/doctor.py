"""``connchaos doctor``: what this machine can do, each item with what to install when missing.

It prints harness.machine's list of requirements (the one a run raises from), trying the
namespace and nftables items for real.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness import machine

# what "local backend: ready" means: a local run of the default service
LOCAL = ("local", "postgres on local")


@dataclass(frozen=True)
class Check:
    """One capability: found or not, what was seen, and the fix."""

    name: str
    ok: bool
    detail: str
    needs: tuple[str, ...]     # what needs it (machine.Requirement.needed_for)
    fix: str = ""

    @property
    def needed_for(self) -> str:
        return ", ".join(self.needs)


def _look(req: machine.Requirement) -> Check:
    reason = req.check()
    if reason is None and req.trial is not None:
        reason = req.trial()
    return Check(req.name, reason is None, req.seen() if reason is None else reason,
                 req.needed_for, req.fix)


def checks() -> list[Check]:
    """Everything doctor looks at, in order."""
    return [_look(req) for req in machine.REQUIREMENTS]


def not_ready(found: list[Check], needs: tuple[str, ...] = LOCAL) -> list[str]:
    """The names of the missing items that ``needs`` (by default the local backend's) depend on."""
    return [c.name for c in found if not c.ok and set(needs).intersection(c.needs)]
