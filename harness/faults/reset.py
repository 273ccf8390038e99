"""``reset``: the proxy resets the connections (Toxiproxy's ``reset_peer`` toxic; its
``timeout`` attribute, in milliseconds, delays the reset)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.core.prediction import ProxyEffect
from harness.faults.proxy_base import ProxyFault


def reset_peer_effect(stream: str, attributes: dict[str, Any], activity: str) -> tuple[ProxyEffect, float]:
    """Toxiproxy's reset_peer waits for the first data on its stream, then ``timeout`` ms:
    an idle session is never reset; in-flight data from the server (sent at the fault)
    travels downstream."""
    if activity == "in-flight" and stream == "downstream":
        return "resets", float(attributes.get("timeout", 0)) / 1000
    return "holds", 0.0


@dataclass
class Reset(ProxyFault):
    """Reset every faulted connection, after ``attributes.timeout`` ms."""

    def toxics(self) -> list[dict[str, Any]]:
        return [self.toxic("reset_peer", self.stream or "downstream",
                           {"timeout": int(self.attributes.get("timeout", 0))})]

    def effect(self, activity: str) -> tuple[ProxyEffect, float]:
        return reset_peer_effect(self.stream or "downstream", self.attributes, activity)

    def describe(self) -> str:
        return f"proxy resets connections after {int(self.attributes.get('timeout', 0))} ms"
