"""A tier's legs (LEGS.md): until the lead's ``harness/targets/base.py`` carries these, they
are defined here with exactly the names and fields the runners will use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harness.observe.sockdiag import Key


@dataclass(frozen=True)
class Upstream:
    """A session's upstream leg: the tier's connection to its backend."""

    key: Key          # as the BACKEND's socket sees it: (backend addr, backend port, tier addr, tier port)
    pid: int | None   # the backend's process serving it (a PostgreSQL backend), if there is one


@dataclass(frozen=True)
class UpstreamPrediction:
    """What the tier does with a faulted session's upstream leg."""

    outcome: Literal["closed", "pooled", "held"]
    at_s: float | None   # closed / pooled: when, in seconds from the fault; held: None
    mechanism: str       # e.g. "tier-closed" (closed with the client leg), "server_idle_timeout", "pool"
    formula: str         # one line naming the settings that decided it
    slack_s: float = 0.0 # timer granularity
