"""``reset``: the proxy resets the connections (Toxiproxy's ``reset_peer`` toxic; its
``timeout`` attribute, in milliseconds, delays the reset)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.core.prediction import ProxyEffect
from harness.faults.proxy_base import ProxyFault


@dataclass
class Reset(ProxyFault):
    """Reset every faulted connection, after ``attributes.timeout`` ms."""

    def toxics(self) -> list[dict[str, Any]]:
        return [self.toxic("reset_peer", self.stream or "downstream",
                           {"timeout": int(self.attributes.get("timeout", 0))})]

    def effect(self) -> tuple[ProxyEffect, float]:
        return "resets", float(self.attributes.get("timeout", 0)) / 1000

    def describe(self) -> str:
        return f"proxy resets connections after {int(self.attributes.get('timeout', 0))} ms"
